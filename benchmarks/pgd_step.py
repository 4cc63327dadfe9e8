"""PGD per-step cost against one forward+backward pass at the same batch (issue #17, target 4).

Not a test: prints same-run ratios. The per-step cost of ``lcnn_audit.attacks.PGD`` (public
API only) is the slope between a run with ``--steps-hi`` and one with ``--steps-lo`` steps,
(t_hi − t_lo)/(hi − lo), which cancels the fixed costs (random start, the final evaluation,
bookkeeping). The reference is the pass every PGD step needs: the input gradient of the
per-sample cross-entropy (forward + backward to the input). Runs are interleaved (lo, hi,
fb, lo, hi, fb, ...) for ``--reps`` rounds and the ratio is the median over rounds, so load
from other processes on a shared CPU hits both sides alike.

    python benchmarks/pgd_step.py [--threads 1] [--device cpu] [--models demo,resnet18] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch
import torch.nn.functional as F

from lcnn_audit.attacks import PGD
from lcnn_audit.loading import load_model


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, dev) -> float:
    sync(dev)
    t = time.perf_counter()
    fn()
    sync(dev)
    return time.perf_counter() - t


def model_and_batch(kind: str, dev, batch: int):
    g = torch.Generator().manual_seed(0)
    if kind == "demo":
        model = load_model("demo").to(dev).eval()
        x = torch.rand(batch, 1, 28, 28, generator=g)
    else:
        import torchvision

        torch.manual_seed(0)
        model = torchvision.models.resnet18(num_classes=10).to(dev).eval()
        x = torch.rand(batch, 3, 32, 32, generator=g)
    for p in model.parameters():
        p.requires_grad_(False)
    y = torch.randint(0, 10, (batch,), generator=g)
    return model, x.to(dev), y.to(dev)


def bench(kind: str, norm: str, eps: float, dev, batch: int, lo: int, hi: int, reps: int) -> dict:
    model, x, y = model_and_batch(kind, dev, batch)
    index = torch.arange(batch, device=dev)

    def fwd_bwd():
        xr = x.detach().requires_grad_(True)
        loss = F.cross_entropy(model(xr), y, reduction="none")
        torch.autograd.grad(loss.sum(), xr)

    # the same step size for both runs, so only the number of steps differs
    step = 2.5 * eps / hi
    run = {s: (lambda s=s: PGD(norm, eps, steps=s, step_size=step, seed=0)(model, x, y, index)) for s in (lo, hi)}
    for f in (run[lo], run[hi], fwd_bwd):  # warm-up
        f()
    t_lo, t_hi, t_fb = [], [], []
    for _ in range(reps):
        t_lo.append(timed(run[lo], dev))
        t_hi.append(timed(run[hi], dev))
        t_fb.append(timed(fwd_bwd, dev))
    per_step = [(h - low) / (hi - lo) for low, h in zip(t_lo, t_hi, strict=True)]
    ratios = [p / f for p, f in zip(per_step, t_fb, strict=True)]
    return {"model": kind, "norm": norm, "eps": eps, "batch": batch, "steps": [lo, hi],
            "per_step_s": statistics.median(per_step), "forward_backward_s": statistics.median(t_fb),
            "step_over_fb": statistics.median(ratios), "ratios": ratios}


def markdown(rows: list[dict]) -> str:
    out = ["| model | norm | batch | forward+backward | PGD per step | step / (forward+backward) |",
           "|---|---|---:|---:|---:|---:|"]
    for r in rows:
        out.append(f"| {r['model']} | {r['norm']} | {r['batch']} | {r['forward_backward_s'] * 1e3:.1f} ms | "
                   f"{r['per_step_s'] * 1e3:.1f} ms | **{r['step_over_fb']:.2f}** |")
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--models", default="demo,resnet18")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--steps-lo", type=int, default=2)
    ap.add_argument("--steps-hi", type=int, default=10)
    ap.add_argument("--json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    rows = []
    for kind in args.models.split(","):
        batch = 128 if kind == "demo" else 32
        for norm, eps in (("l2", 0.5), ("linf", 8 / 255)):
            rows.append(bench(kind, norm, eps, dev, batch, args.steps_lo, args.steps_hi, args.reps))
    report = {"machine": {"platform": platform.platform(), "threads": torch.get_num_threads(),
                          "torch": torch.__version__, "device": str(dev)}, "results": rows}
    print(json.dumps(report, indent=2))
    print(markdown(rows))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=2)


if __name__ == "__main__":
    main()
