"""Hot paths before and after a restructuring, timed in the same run (issue #13).

Not a test: prints same-run ratios. Each workload goes through the public Python API of two
versions of the package: this checkout's ``lcnn_audit`` and ``--baseline DIR/lcnn_audit``
(e.g. ``git archive 0b6a4d2 lcnn_audit | tar -x -C DIR``), imported as
``lcnn_audit_baseline``. Workloads, all on the bundled demo model and data:

- ``load``: 50 calls of ``load_model("demo")`` (safetensors read, recipe check, wrapper);
- ``curvature``: ``curvature_audit`` on 256 test images (default Lanczos options);
- ``attack``: ``attack_audit`` PGD-L2 at eps 0.1, 5 steps, on 256 images (masking checks included);
- ``bound``: ``bound_audit`` (fx trace, per-layer bounds);
- ``train``: one epoch of ``train`` on 1000 training images, batch 64, no per-epoch curvature.

Runs are interleaved (new, baseline, new, baseline, ...) for ``--reps`` rounds; the ratio is
the median over rounds of new/baseline. The clock is process CPU time on a CPU (with one
thread, the work done, which other processes inflate far less than wall time).

    python benchmarks/hot_paths.py --baseline DIR [--reps 5] [--threads 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import pathlib
import platform
import statistics
import time
import warnings

import torch
from pgd_step import import_version  # benchmarks/pgd_step.py


def load_version(path: str | None) -> str:
    """``lcnn_audit`` (``path`` None) or the copy under ``path`` imported as ``lcnn_audit_baseline``."""
    return "lcnn_audit" if path is None else import_version(path)


def workloads(pkg: str) -> dict:
    """Zero-argument callables, one per hot path, built from package ``pkg``."""
    mod = lambda name: importlib.import_module(f"{pkg}.{name}")  # noqa: E731
    load_model, load_data = mod("loading").load_model, mod("data").load_data
    model = load_model("demo")
    test = load_data("demo", n=256, split="test")
    train_data = load_data("demo", n=1000, split="train")
    geometry, attacks, bound, training = mod("geometry"), mod("attacks"), mod("bound"), mod("training")
    attack_opts = attacks.AttackOptions(attacks=("pgd",), norms=("l2",), eps=(0.1,), steps=5)
    config = training.TrainConfig(epochs=1, batch_size=64, curvature_n=0, lr=0.01)

    def train_once():
        fresh = load_model("demo")
        training.train(fresh, train_data, None, config)

    return {
        "load": lambda: [load_model("demo") for _ in range(50)],
        "curvature": lambda: geometry.curvature_audit(model, test, geometry.CurvatureOptions(), batch_size=64),
        "attack": lambda: attacks.attack_audit(model, test, attack_opts, batch_size=64),
        "bound": lambda: bound.bound_audit(model, (1, 28, 28)),
        "train": train_once,
    }


def timed(fn) -> float:
    t = time.process_time()
    fn()
    return time.process_time() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--baseline", required=True, help="folder holding the other version's lcnn_audit/")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--only", default=None, help="comma-separated workload names")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    versions = {"new": workloads(load_version(None)), "baseline": workloads(load_version(args.baseline))}
    names = args.only.split(",") if args.only else list(versions["new"])
    for v in versions.values():  # warm-up
        for name in names:
            v[name]()
    times = {(v, n): [] for v in versions for n in names}
    for _ in range(args.reps):
        for name in names:
            for v, work in versions.items():
                times[v, name].append(timed(work[name]))
    rows = []
    for name in names:
        ratios = [a / b for a, b in zip(times["new", name], times["baseline", name], strict=True)]
        rows.append({"workload": name, "new_s": statistics.median(times["new", name]),
                     "baseline_s": statistics.median(times["baseline", name]),
                     "new_over_baseline": statistics.median(ratios), "ratios": ratios})
    machine = f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {args.threads} thread(s)"
    print(f"machine: {machine}; {args.reps} interleaved rounds, process CPU time, median of per-round ratios")
    print("| workload | new (s) | baseline (s) | new / baseline | per-round ratios |")
    print("|---|---:|---:|---:|---|")
    for r in rows:
        print(f"| {r['workload']} | {r['new_s']:.3f} | {r['baseline_s']:.3f} | {r['new_over_baseline']:.3f} | "
              f"{', '.join(f'{x:.2f}' for x in r['ratios'])} |")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps({"machine": machine, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
