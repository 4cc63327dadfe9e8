"""Curvature-engine benchmark (issue #3). Not a test: prints ratios measured in one run.

(a) cost of one batched HVP over one forward+backward pass;
(b) speed-up of one batched call over a per-sample Python loop, batch 64;
(c) HVPs per sample until convergence and max relative error against exact fp64 Hessians
    at the default settings (random-init softplus CNNs, the hard case for power iteration);
(d) images/s on a CIFAR-shaped ResNet-18 (random weights) for the exact Gauss-Newton path
    (ReLU) and Lanczos on the softplus(β=1000) surrogate.

    python benchmarks/curvature.py [--device cuda] [--quick] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from lcnn_audit import allocator
from lcnn_audit.geometry import CurvatureOptions, compute_geometry
from lcnn_audit.geometry.hvp import BatchedHVP
from lcnn_audit.geometry.objective import make_objective
from lcnn_audit.geometry.state import measurement_state


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


def timeit(fn, dev, reps=5, warmup=1):
    for _ in range(warmup):
        fn()
    sync(dev)
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    sync(dev)
    return (time.perf_counter() - t) / reps


def softplus_cnn(side=28, beta=5.0, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.Softplus(beta), nn.Conv2d(8, 8, 3, padding=1, stride=2),
                         nn.Softplus(beta), nn.Flatten(), nn.Linear(8 * (side // 2) ** 2, 10)).eval()


def bench_hvp_ratio(model, x, y, dev):
    """(a): seconds of one batched HVP (graph reused) / one forward+backward."""
    with measurement_state(model) as prep:
        obj = make_objective(prep.model, y)

        def fwd_bwd():
            xr = x.detach().requires_grad_(True)
            f, _ = obj(xr)
            torch.autograd.grad(f.sum(), xr)

        hvp = BatchedHVP(obj, x)
        v = torch.randn_like(x)
        t_fb = timeit(fwd_bwd, dev)
        t_hvp = timeit(lambda: hvp(v), dev)
        t_graph = timeit(lambda: BatchedHVP(obj, x), dev)
    return {"forward_backward_s": t_fb, "hvp_s": t_hvp, "hvp_over_fb": t_hvp / t_fb,
            "graph_build_over_fb": t_graph / t_fb}


def bench_batched_vs_loop(model, x, y, dev, opts):
    """(b): one batched call on 64 samples vs 64 calls of one sample."""
    idx = torch.arange(len(x), device=dev)
    with measurement_state(model) as prep:
        t_batch = timeit(lambda: compute_geometry(prep.model, x, y, idx, opts), dev, reps=2)
        t_loop = timeit(lambda: [compute_geometry(prep.model, x[i:i + 1], y[i:i + 1], idx[i:i + 1], opts)
                                 for i in range(len(x))], dev, reps=1)
    return {"batched_s": t_batch, "loop_s": t_loop, "speedup": t_loop / t_batch}


def bench_accuracy(n=16):
    """(c): HVPs per sample and max relative error vs the exact fp64 Hessian, default settings."""
    out = []
    for side, beta, seed in ((8, 1.0, 0), (8, 10.0, 1), (28, 5.0, 2)):
        model = softplus_cnn(side, beta, seed)
        torch.manual_seed(seed)
        m = n if side == 8 else 4
        x, y = torch.rand(m, 1, side, side), torch.randint(0, 10, (m,))
        with measurement_state(model) as prep:
            fields, _ = compute_geometry(prep.model, x, y, torch.arange(m), CurvatureOptions(jacobian="off"))
            pw, _ = compute_geometry(prep.model, x, y, torch.arange(m),
                                     CurvatureOptions(method="power", iters=20, jacobian="off"))
        m64 = model.double()
        exact = []
        for i in range(m):
            H = torch.autograd.functional.hessian(
                lambda v, i=i, m64=m64, y=y: F.cross_entropy(m64(v.unsqueeze(0)), y[i:i + 1]), x[i].double(),
                vectorize=True)
            exact.append(torch.linalg.eigvalsh(H.reshape(side * side, -1)).abs().max())
        exact = torch.stack(exact)
        err = ((fields["hessian_norm"] - exact).abs() / exact)
        perr = ((pw["hessian_norm"] - exact).abs() / exact)
        out.append({"input": f"1x{side}x{side}", "beta": beta, "n": m,
                    "hvps_mean": float(fields["iterations"].double().mean()),
                    "hvps_max": int(fields["iterations"].max()), "max_rel_error": float(err.max()),
                    "power20_mean_rel_error": float(perr.mean()), "power20_max_rel_error": float(perr.max())})
    return out


def bench_resnet(dev, n, batch):
    """(d): images/s, CIFAR-shaped ResNet-18, random weights."""
    model = torchvision.models.resnet18(num_classes=10).to(dev).eval()
    x = torch.rand(n, 3, 32, 32, device=dev)
    y = torch.randint(0, 10, (n,), device=dev)
    res = {}
    for name, opts in (("gauss-newton (ReLU, exact)", CurvatureOptions()),
                       ("lanczos (softplus β=1000)", CurvatureOptions(smooth_relu=1000.0))):
        with measurement_state(model, smooth_relu_beta=opts.smooth_relu) as prep:
            run = lambda prep=prep, opts=opts: [  # noqa: E731
                compute_geometry(prep.model, x[i:i + batch], y[i:i + batch],
                                 torch.arange(i, min(i + batch, n), device=dev), opts) for i in range(0, n, batch)]
            t = timeit(run, dev, reps=1)
            fields, method = compute_geometry(prep.model, x[:batch], y[:batch], torch.arange(batch, device=dev), opts)
        res[name] = {"method": method, "images_per_s": n / t,
                     "hvps_mean": float(fields["iterations"].double().mean())}
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
        allocator.tune_host_allocator()  # as every lcnn-audit command does (LCNN_AUDIT_MALLOC=system: off)
    dev = torch.device(args.device)
    torch.manual_seed(0)
    model = softplus_cnn().to(dev)
    x, y = torch.rand(64, 1, 28, 28, device=dev), torch.randint(0, 10, (64,), device=dev)
    report = {"machine": {"platform": platform.platform(), "processor": platform.processor(),
                          "threads": torch.get_num_threads(), "torch": torch.__version__,
                          "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"}}
    report["a_hvp_cost_small_cnn"] = bench_hvp_ratio(model, x, y, dev)
    rn = torchvision.models.resnet18(num_classes=10).to(dev).eval()
    xr, yr = torch.rand(32, 3, 32, 32, device=dev), torch.randint(0, 10, (32,), device=dev)
    with measurement_state(rn, smooth_relu_beta=1000.0) as prep:
        report["a_hvp_cost_resnet18_softplus"] = bench_hvp_ratio(prep.model, xr, yr, dev)
    report["b_batched_vs_loop_b64"] = bench_batched_vs_loop(model, x, y, dev, CurvatureOptions(jacobian="off"))
    report["c_accuracy"] = bench_accuracy(8 if args.quick else 16)
    n = 64 if args.quick or dev.type == "cpu" else 2048
    report["d_resnet18_cifar"] = bench_resnet(dev, n, 64 if dev.type == "cpu" else 256)
    print(json.dumps(report, indent=2))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=2)


if __name__ == "__main__":
    main()
