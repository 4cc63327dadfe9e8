"""Same-run A/B of the curvature engine's issue-#17 changes. Not a test: prints ratios.

(b) batched vs looped (softplus CNN, batch 64) with the Lanczos working-set compaction on
    (current) and off (before), interleaved, and the per-sample cost gap between a batch-1 and a
    batch-64 HVP that bounds the speed-up;
(d) softplus(β=1000) ResNet-18 3×32×32 curvature throughput, compaction on and off,
    interleaved, with every pass counted per sample: Lanczos HVPs, Frobenius-probe HVPs and
    Jacobian VJPs;
(e) HVPs per sample on the trained demo model with ``--smooth-relu 1000`` for the current start
    vector (unit gradient + random) and for a Gauss-Newton warm start (the top eigenvector of
    JᵀAJ, which costs C = 10 VJPs more per sample), and how far the GN top eigenvalue is from
    the Hessian's.

    python benchmarks/curvature_ab.py [--threads 1] [--reps 3] [--quick] [--json out.json]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import platform
import statistics
import time

import torch
import torchvision

from lcnn_audit import rng
from lcnn_audit.data import load_data
from lcnn_audit.geometry import CurvatureOptions, compute_geometry
from lcnn_audit.geometry import measures as M
from lcnn_audit.geometry.gauss_newton import gauss_newton_spectrum
from lcnn_audit.geometry.hvp import BatchedHVP
from lcnn_audit.geometry.jacobian import logit_jacobian
from lcnn_audit.geometry.lanczos import lanczos
from lcnn_audit.geometry.objective import make_objective
from lcnn_audit.geometry.state import measurement_state
from lcnn_audit.loading import load_model


@contextlib.contextmanager
def compaction(on: bool):
    """``on``: the current Lanczos; off: no working-set compaction (the code before issue #17)."""
    M.lanczos = lanczos if on else functools.partial(lanczos, compact=False)
    try:
        yield
    finally:
        M.lanczos = lanczos


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def softplus_cnn(seed=0):
    from torch import nn

    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.Softplus(5.0), nn.Conv2d(8, 8, 3, padding=1, stride=2),
                         nn.Softplus(5.0), nn.Flatten(), nn.Linear(8 * 14 * 14, 10)).eval()


def batched_vs_loop(reps: int, n: int = 64) -> dict:
    model = softplus_cnn()
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)
    idx = torch.arange(n)
    opts = CurvatureOptions(jacobian="off")
    t = {"batched, compaction on": [], "batched, compaction off": [], "loop": []}
    with measurement_state(model) as prep:
        def batched():
            return compute_geometry(prep.model, x, y, idx, opts)

        def loop():
            for i in range(n):
                compute_geometry(prep.model, x[i:i + 1], y[i:i + 1], idx[i:i + 1], opts)

        batched()
        for _ in range(reps):
            with compaction(True):
                t["batched, compaction on"].append(timed(batched))
            with compaction(False):
                t["batched, compaction off"].append(timed(batched))
            t["loop"].append(timed(loop))
        # the bound: cost per sample of one HVP at batch 1 against batch n (graph reused)
        obj = make_objective(prep.model, y)
        h_all, h_one = BatchedHVP(obj, x), BatchedHVP(make_objective(prep.model, y[:1]), x[:1])
        v = torch.randn_like(x)
        per_n = statistics.median(timed(lambda: h_all(v)) for _ in range(5)) / n
        per_1 = statistics.median(timed(lambda: h_one(v[:1])) for _ in range(20))
    on = [lo / b for lo, b in zip(t["loop"], t["batched, compaction on"], strict=True)]
    off = [lo / b for lo, b in zip(t["loop"], t["batched, compaction off"], strict=True)]
    return {"n": n, "median_s": {k: statistics.median(v) for k, v in t.items()},
            "speedup_compaction_on": statistics.median(on), "speedup_compaction_off": statistics.median(off),
            "hvp_ms_per_sample_batch1": per_1 * 1e3, f"hvp_ms_per_sample_batch{n}": per_n * 1e3,
            "per_sample_gap": per_1 / per_n}


def resnet_throughput(reps: int, n: int, batch: int) -> dict:
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval()
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(n, 3, 32, 32, generator=g), torch.randint(0, 10, (n,), generator=g)
    opts = CurvatureOptions(smooth_relu=1000.0)
    iters = []
    with measurement_state(model, smooth_relu_beta=1000.0) as prep:
        def run():
            iters.clear()
            for i in range(0, n, batch):
                f, _ = compute_geometry(prep.model, x[i:i + batch], y[i:i + batch], torch.arange(i, i + batch), opts)
                iters.append(f["iterations"].double())

        t_on, t_off = [], []
        for _ in range(reps):
            with compaction(True):
                t_on.append(timed(run))
            with compaction(False):
                t_off.append(timed(run))
    ratio = statistics.median(a / b for a, b in zip(t_off, t_on, strict=True))
    return {"n": n, "batch": batch, "images_per_s_on": n / statistics.median(t_on),
            "images_per_s_off": n / statistics.median(t_off), "throughput_ratio_on_over_off": ratio,
            "per_sample_passes": {"lanczos_hvps_mean": float(torch.cat(iters).mean()),
                                  "frobenius_hvps": opts.fro_probes, "jacobian_vjps": 10}}


def gn_warm_start(n: int) -> dict:
    data = load_data("demo", n=n)
    b = data.get(torch.arange(len(data)))
    opts = CurvatureOptions(smooth_relu=1000.0, jacobian="off", fro_probes=0)
    current = M._start_vectors
    out = {}
    with measurement_state(load_model("demo"), smooth_relu_beta=1000.0) as prep:
        def gn_start(g, index, o, stream, x=None):
            xr = x.detach().requires_grad_(True)
            with torch.enable_grad():
                logits = prep.model(xr)
                J = logit_jacobian(xr, logits)
            u = gauss_newton_spectrum(J, logits.detach()).top_vector.flatten(1)
            return u + 0.01 * rng.per_sample_sphere(o.seed, stream, index, (u.shape[1],), dtype=u.dtype)

        ratios = []
        for name in ("current start (unit gradient + random)", "Gauss-Newton top eigenvector (+ C VJPs)"):
            its = []
            for i in range(0, len(b.x), 128):
                x, y, idx = b.x[i:i + 128], b.y[i:i + 128], torch.arange(i, min(i + 128, len(b.x)))
                M._start_vectors = current if name.startswith("current") else functools.partial(gn_start, x=x)
                try:
                    f, _ = compute_geometry(prep.model, x, y, idx, opts)
                finally:
                    M._start_vectors = current
                its.append(f["iterations"].double())
                if name.startswith("current"):
                    xr = x.clone().requires_grad_(True)
                    with torch.enable_grad():
                        logits = prep.model(xr)
                        J = logit_jacobian(xr, logits)
                    lam = gauss_newton_spectrum(J, logits.detach()).eigs[:, 0].abs()
                    ratios.append(f["hessian_norm"] / lam.clamp_min(1e-30))
            its = torch.cat(its)
            out[name] = {"hvps_mean": float(its.mean()), "hvps_max": int(its.max())}
        r = torch.cat(ratios)
    out["hessian_norm / gn_top"] = {"median": float(r.median()), "within_5pct": float(((r - 1).abs() <= 0.05)
                                                                                     .double().mean())}
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    report = {"machine": {"platform": platform.platform(), "threads": torch.get_num_threads(),
                          "torch": torch.__version__}}
    report["b_batched_vs_loop"] = batched_vs_loop(1 if args.quick else args.reps)
    report["d_resnet18_softplus"] = resnet_throughput(1 if args.quick else args.reps, 16 if args.quick else 32,
                                                      16 if args.quick else 32)
    report["e_gn_warm_start"] = gn_warm_start(32 if args.quick else 256)
    print(json.dumps(report, indent=2))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=2)


if __name__ == "__main__":
    main()
