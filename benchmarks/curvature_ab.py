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
    the Hessian's;
(f) the floor under any stopping rule: on exact fp64 Hessians of the same trained model (784×784,
    one column per HVP), the Krylov dimension at which the top Ritz value is *truly* within 1e-3
    of ‖∇²f‖₂ (an oracle stop that knows the answer), for the default start vector and for a
    random one, next to the rigorous residual test's stop, and how flat the top of the spectrum is.

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

from lcnn_audit import allocator, rng
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


def exact_hessians(model, x: torch.Tensor, labels: torch.Tensor, rows: int = 1024) -> torch.Tensor:
    """(B, d, d) input Hessians of the loss, column by column: each sample is repeated ``chunk``
    times so that one batched HVP (``rows`` samples at most) returns ``chunk`` columns of each."""
    B, d = x.shape[0], x[0].numel()
    chunk = max(1, rows // B)
    H = torch.zeros(B, d, d, dtype=x.dtype)
    for j0 in range(0, d, chunk):
        cols = torch.arange(j0, min(j0 + chunk, d))
        k = len(cols)
        xr = x.repeat_interleave(k, 0)
        hvp = BatchedHVP(make_objective(model, labels.repeat_interleave(k)), xr)
        v = torch.zeros(B * k, d, dtype=x.dtype)
        v[torch.arange(B * k), cols.repeat(B)] = 1
        H[:, :, cols] = hvp(v.view_as(xr)).reshape(B, k, d).transpose(1, 2)
    return (H + H.transpose(1, 2)) / 2


def lanczos_trace(A: torch.Tensor, q: torch.Tensor, m: int = 40):
    """Steps (1-based) at which plain fp64 Lanczos on the matrix A first meets (the rigorous residual
    test, the same test on the refined Ritz vector's residual σ_min(T̄ₖ − θĨ), a true 1e-3 error of
    max |θ|); m + 1 where it does not within m steps."""
    d = A.shape[0]
    top = torch.linalg.eigvalsh(A).abs().max()
    Q = torch.zeros(m + 1, d, dtype=A.dtype)
    Q[0] = q / q.norm()
    al, be, rigorous, refined, true = [], [], None, None, None
    for j in range(m):
        w = A @ Q[j]
        a = w @ Q[j]
        w = w - a * Q[j] - (be[-1] * Q[j - 1] if j else 0)
        for _ in range(2):
            w = w - Q[: j + 1].T @ (Q[: j + 1] @ w)
        b = w.norm()
        al.append(a)
        be.append(b)
        Q[j + 1] = w / b
        T = torch.diag(torch.stack(al))
        if j:
            off = torch.stack(be[:-1])
            T = T + torch.diag(off, 1) + torch.diag(off, -1)
        th, S = torch.linalg.eigh(T)
        i = th.abs().argmax()
        if rigorous is None and b * S[-1, i].abs() <= 1e-3 * th[i].abs():
            rigorous = j + 1
        Tbar = torch.cat([T - th[i] * torch.eye(j + 1, dtype=A.dtype), torch.zeros(1, j + 1, dtype=A.dtype)])
        Tbar[j + 1, j] = b
        if refined is None and torch.linalg.svdvals(Tbar)[-1] <= 1e-3 * th[i].abs():
            refined = j + 1
        if true is None and (th[i].abs() - top).abs() <= 1e-3 * top:
            true = j + 1
        if rigorous is not None and refined is not None and true is not None:
            break
    return rigorous or m + 1, refined or m + 1, true or m + 1


def oracle_floor(n: int) -> dict:
    data = load_data("demo", n=n)
    b = data.get(torch.arange(len(data)))
    opts = CurvatureOptions(smooth_relu=1000.0, jacobian="off", fro_probes=0)
    with measurement_state(load_model("demo"), dtype="float64", smooth_relu_beta=1000.0) as prep:
        x = b.x.double()
        labels = prep.model(x).argmax(1)
        H = exact_hessians(prep.model, x, labels)
        g = BatchedHVP(make_objective(prep.model, labels), x).grad.detach()
    q0 = M._start_vectors(g, torch.arange(n), opts, M.STREAM_START).double()
    z = torch.randn(n, q0.shape[1], generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    out = {"n": n}
    for name, start in (("default start (unit gradient + random)", q0), ("random start", z)):
        steps = torch.tensor([lanczos_trace(H[i], start[i]) for i in range(n)], dtype=torch.float64)
        out[name] = {f"{what}_stop_{stat}": (float(col.mean()) if stat == "mean" else int(col.max()))
                     for what, col in zip(("rigorous", "refined_ritz", "oracle"), steps.T, strict=True)
                     for stat in ("mean", "max")}
    lam, V = torch.linalg.eigh(H)
    u1 = V[torch.arange(n), :, lam.abs().argmax(1)]
    mag = lam.abs().sort(1, descending=True).values
    out["spectrum"] = {"median |<u1, start>| (default start, unit)": float(
                           (u1 * q0 / q0.norm(dim=1, keepdim=True)).sum(1).abs().median()),
                       "median |λ2|/|λ1|": float((mag[:, 1] / mag[:, 0]).median()),
                       "median |λ5|/|λ1|": float((mag[:, 4] / mag[:, 0]).median()),
                       "mean #|λ| > 0.1·|λ1|": float((mag > 0.1 * mag[:, :1]).sum(1).double().mean())}
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    allocator.tune_host_allocator()  # as every lcnn-audit command does (LCNN_AUDIT_MALLOC=system: off)
    report = {"machine": {"platform": platform.platform(), "threads": torch.get_num_threads(),
                          "torch": torch.__version__}}
    report["b_batched_vs_loop"] = batched_vs_loop(1 if args.quick else args.reps)
    report["d_resnet18_softplus"] = resnet_throughput(1 if args.quick else args.reps, 16 if args.quick else 32,
                                                      16 if args.quick else 32)
    report["e_gn_warm_start"] = gn_warm_start(32 if args.quick else 256)
    report["f_oracle_floor"] = oracle_floor(8 if args.quick else 64)
    print(json.dumps(report, indent=2))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=2)


if __name__ == "__main__":
    main()
