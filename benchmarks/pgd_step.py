"""PGD per-step cost against one forward+backward pass at the same batch (issue #17, target 4).

Not a test: prints same-run ratios. The per-step cost of ``lcnn_audit.attacks.PGD`` (public
API only) is the slope between a run with ``--steps-hi`` and one with ``--steps-lo`` steps,
(t_hi − t_lo)/(hi − lo), which cancels the fixed costs (random start, the final evaluation,
bookkeeping). The reference is the pass every PGD step needs: the input gradient of the
per-sample cross-entropy (forward + backward to the input). Both step rules are timed: the
fixed step ``2.5·eps/steps`` and the default APGD rule (two projections and momentum per
step). Runs are interleaved (lo, hi, fb, lo, hi, fb, ...) for ``--reps`` rounds and the
ratio is the median over rounds, so load from other processes on a shared CPU hits both
sides alike. On a CPU the clock is process CPU time (with one thread: the work done, which
other jobs inflate far less than wall time); on a GPU, wall time between synchronisations.

The demo CNN runs on the bundled demo test images (real pixels at 0 make the L2 box+ball
projection do its work), ResNet-18 on uniform noise. ``linear`` (a 784→10 linear layer on the
demo images) makes the forward+backward nearly free, so its per-step time minus its
forward+backward is the step's own bookkeeping (projection, best-iterate tracking, APGD's
momentum), to be read against the demo CNN's forward+backward. ``--baseline DIR`` also times another
version of the package (``DIR/lcnn_audit``) in the same rounds, for a same-run before/after.

The page-fault column counts minor faults (``getrusage``) per step and per forward+backward.
With glibc's default malloc, the activations freed after each pass are handed back to the OS
and faulted in again by the next one; on a CPU that is a large and heap-layout-dependent part
of both timings. Running with glibc's tunables ``MALLOC_TRIM_THRESHOLD_=1000000000
MALLOC_MMAP_THRESHOLD_=1000000000 MALLOC_TOP_PAD_=100000000`` removes it, to read the
arithmetic alone (the JSON records which ``MALLOC_*`` variables were set).

    python benchmarks/pgd_step.py [--threads 1] [--device cpu] [--models demo,resnet18] [--rules fixed,apgd]
                                  [--demo-batch 128] [--baseline DIR] [--json out.json]
    python benchmarks/pgd_step.py --projection [--baseline DIR]   # the L2 projection alone, replayed
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import pathlib
import platform
import resource
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from lcnn_audit import allocator
from lcnn_audit.attacks import PGD
from lcnn_audit.data import load_data
from lcnn_audit.loading import load_model


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


FAULTS: list[int] = []  # minor page faults of each timed call, in order (the allocator's share, below)


def timed(fn, dev) -> float:
    clock = time.process_time if dev.type == "cpu" else time.perf_counter
    sync(dev)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t = clock()
    fn()
    sync(dev)
    elapsed = clock() - t
    FAULTS.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults)
    return elapsed


def model_and_batch(kind: str, dev, batch: int):
    g = torch.Generator().manual_seed(0)
    if kind in ("demo", "linear"):
        model = load_model("demo").to(dev).eval()
        if kind == "linear":  # a near-free model on the same images: what is left is the step's bookkeeping
            torch.manual_seed(0)
            model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10)).to(dev).eval()
        x, y = load_data("demo", n=batch, split="test").tensors()  # real images: pixels at 0 bind the box
        for p in model.parameters():
            p.requires_grad_(False)
        return model, x.to(dev), y.to(dev)
    else:
        import torchvision

        torch.manual_seed(0)
        model = torchvision.models.resnet18(num_classes=10).to(dev).eval()
        x = torch.rand(batch, 3, 32, 32, generator=g)
    for p in model.parameters():
        p.requires_grad_(False)
    y = torch.randint(0, 10, (batch,), generator=g)
    return model, x.to(dev), y.to(dev)


def bench(kind: str, norm: str, eps: float, dev, batch: int, lo: int, hi: int, reps: int, rule: str = "fixed",
          baseline=None) -> dict:
    """One row; ``baseline`` (another version's PGD class) is timed in the same rounds, for a before/after."""
    model, x, y = model_and_batch(kind, dev, batch)
    index = torch.arange(batch, device=dev)

    def fwd_bwd():
        xr = x.detach().requires_grad_(True)
        loss = F.cross_entropy(model(xr), y, reduction="none")
        torch.autograd.grad(loss.sum(), xr)

    # fixed rule: the same step size for both runs, so only the number of steps differs
    kw = {"step_size": 2.5 * eps / hi} if rule == "fixed" else {"step_rule": "apgd"}
    versions = {"new": PGD} if baseline is None else {"new": PGD, "baseline": baseline}
    runs = {(v, s): (lambda cls=cls, s=s: cls(norm, eps, steps=s, seed=0, **kw)(model, x, y, index))
            for v, cls in versions.items() for s in (lo, hi)}
    for f in (*runs.values(), fwd_bwd):  # warm-up
        f()
    times = {key: [] for key in (*runs, "fb")}
    faults = {key: [] for key in times}
    for _ in range(reps):  # one round: every version's lo and hi runs, then the reference pass
        for key, fn in (*runs.items(), ("fb", fwd_bwd)):
            times[key].append(timed(fn, dev))
            faults[key].append(FAULTS[-1])
    per_step = {v: [(h - low) / (hi - lo) for low, h in zip(times[v, lo], times[v, hi], strict=True)]
                for v in versions}
    ratios = [p / f for p, f in zip(per_step["new"], times["fb"], strict=True)]
    row = {"model": kind, "norm": norm, "rule": rule, "eps": eps, "batch": batch, "steps": [lo, hi],
           "per_step_s": statistics.median(per_step["new"]), "forward_backward_s": statistics.median(times["fb"]),
           "step_over_fb": statistics.median(ratios), "ratios": ratios,
           # page faults per step (slope, as for the time) and per forward+backward: on glibc's default
           # malloc, freed activations are trimmed and re-faulted, which moves both timings
           "faults_per_step": statistics.median((h - low) / (hi - lo)
                                                for low, h in zip(faults["new", lo], faults["new", hi], strict=True)),
           "faults_per_fb": statistics.median(faults["fb"])}
    if baseline is not None:
        base = [p / f for p, f in zip(per_step["baseline"], times["fb"], strict=True)]
        row.update(baseline_per_step_s=statistics.median(per_step["baseline"]),
                   baseline_step_over_fb=statistics.median(base),
                   new_over_baseline=statistics.median(n / b for n, b in zip(per_step["new"], per_step["baseline"],
                                                                              strict=True)))
    return row


def import_version(path: str) -> str:
    """Import the package under ``path/lcnn_audit`` (e.g. from ``git archive <commit> lcnn_audit |
    tar -x -C path``) as ``lcnn_audit_baseline``, beside this checkout's; returns that name."""
    root = pathlib.Path(path) / "lcnn_audit"
    spec = importlib.util.spec_from_file_location("lcnn_audit_baseline", root / "__init__.py",
                                                  submodule_search_locations=[str(root)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return spec.name


def load_baseline(path: str):
    """The PGD class of another version (see :func:`import_version`)."""
    return importlib.import_module(f"{import_version(path)}.attacks").PGD


def projection_replay(baseline_dir: str | None, reps: int, batch: int) -> dict:
    """The L2 projection alone, on the calls of real demo-CNN runs (eps 0.25/0.5/1, both rules):
    record every ``BoxBallProjection`` call of the step loops, replay them through it and (with
    ``--baseline``) through the other version's ``project``, in interleaved rounds."""
    import lcnn_audit.attacks.pgd as pgd_mod
    from lcnn_audit.attacks.base import BoxBallProjection, project

    calls = []

    class Recording(BoxBallProjection):
        def __call__(self, delta):
            calls.append((self.x, delta.clone(), self.eps))
            return super().__call__(delta)

        def __init__(self, x, norm, eps, branchless=False):
            super().__init__(x, norm, eps, branchless)
            self.x = x

    model, x, y = model_and_batch("demo", torch.device("cpu"), batch)
    pgd_mod.BoxBallProjection = Recording
    try:
        for eps in (0.25, 0.5, 1.0):
            for kw in ({}, {"step_size": 2.5 * eps / 10}):
                PGD("l2", eps, steps=10, **kw)(model, x, y)
    finally:
        pgd_mod.BoxBallProjection = BoxBallProjection
    projs = {}
    for xs, _, eps in calls:
        projs.setdefault((id(xs), eps), BoxBallProjection(xs, "l2", eps))
    runs = {"new": lambda: [projs[id(xs), eps](d) for xs, d, eps in calls]}
    out = {"calls": len(calls)}
    if baseline_dir is not None:
        old = importlib.import_module("lcnn_audit_baseline.attacks.base").project
        runs["baseline"] = lambda: [old(xs, d, "l2", eps) for xs, d, eps in calls]
        out["bit_identical"] = sum(torch.equal(projs[id(xs), eps](d), old(xs, d, "l2", eps)) for xs, d, eps in calls)
    out["equals_project"] = sum(torch.equal(projs[id(xs), eps](d), project(xs, d, "l2", eps)) for xs, d, eps in calls)
    times = {k: [] for k in runs}
    for _ in range(reps):
        for k, fn in runs.items():
            times[k].append(timed(fn, torch.device("cpu")) / len(calls))
    out.update({f"{k}_ms_per_call": statistics.median(v) * 1e3 for k, v in times.items()})
    out.update({f"{k}_ms_range": (min(v) * 1e3, max(v) * 1e3) for k, v in times.items()})
    if baseline_dir is not None:
        out["new_over_baseline"] = statistics.median(a / b for a, b in zip(times["new"], times["baseline"],
                                                                          strict=True))
    return out


def markdown(rows: list[dict]) -> str:
    has_base = "baseline_step_over_fb" in rows[0]
    head = ("| model | norm | step rule | batch | forward+backward | PGD per step | step / (forward+backward) "
            "| page faults per step / per forward+backward |")
    rule = "|---|---|---|---:|---:|---:|---:|---:|"
    if has_base:
        head += " baseline step / (forward+backward) | new / baseline |"
        rule += "---:|---:|"
    out = [head, rule]
    for r in rows:
        line = (f"| {r['model']} | {r['norm']} | {r['rule']} | {r['batch']} | "
                f"{r['forward_backward_s'] * 1e3:.1f} ms | {r['per_step_s'] * 1e3:.1f} ms | "
                f"**{r['step_over_fb']:.2f}** | {r['faults_per_step']:.0f} / {r['faults_per_fb']:.0f} |")
        if has_base:
            line += f" {r['baseline_step_over_fb']:.2f} | {r['new_over_baseline']:.3f} |"
        out.append(line)
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--models", default="demo,resnet18")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--steps-lo", type=int, default=2)
    ap.add_argument("--steps-hi", type=int, default=10)
    ap.add_argument("--rules", default="fixed,apgd")
    ap.add_argument("--demo-batch", type=int, default=128)
    ap.add_argument("--baseline", help="a directory holding another version's lcnn_audit/, timed in the same rounds")
    ap.add_argument("--json")
    ap.add_argument("--projection", action="store_true",
                    help="only the L2 projection, replayed on the calls of demo-CNN runs (CPU)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    allocator.tune_host_allocator()  # as every lcnn-audit command does (LCNN_AUDIT_MALLOC=system: off)
    dev = torch.device(args.device)
    baseline = load_baseline(args.baseline) if args.baseline else None
    if args.projection:
        print(json.dumps(projection_replay(args.baseline, args.reps, args.demo_batch), indent=2))
        return
    rows = []
    for kind in args.models.split(","):
        batch = args.demo_batch if kind in ("demo", "linear") else 32
        for norm, eps in (("l2", 0.5), ("linf", 8 / 255)):
            for rule in args.rules.split(","):
                rows.append(bench(kind, norm, eps, dev, batch, args.steps_lo, args.steps_hi, args.reps, rule,
                                  baseline))
    malloc = {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")}  # glibc tunables, if set
    report = {"machine": {"platform": platform.platform(), "threads": torch.get_num_threads(),
                          "torch": torch.__version__, "device": str(dev), "load_average": os.getloadavg(),
                          "malloc_env": malloc},
              "results": rows}
    print(json.dumps(report, indent=2))
    print(markdown(rows))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=2)


if __name__ == "__main__":
    main()
