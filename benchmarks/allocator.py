"""Host-allocator tuning, after over before (issue #17). Not a test: prints same-run ratios.

``lcnn_audit.allocator`` raises glibc's mmap and trim thresholds for every command, so freed
activation buffers are reused instead of being unmapped and faulted in again. A process cannot
undo it, so this script runs child processes in alternation, ``LCNN_AUDIT_MALLOC=system`` (the
C library's defaults: before) and ``tuned`` (after), for ``--rounds`` rounds; each child times
every workload (median of ``--reps`` after a warm-up) and counts its minor page faults, and each
ratio is the median over rounds of tuned/system within a round. Workloads, one torch thread:

* training steps of ``benchmarks/training.py`` (standard, LCNN, GradReg, LCNN+GradReg) for the
  small CNN, the demo architecture (batch 128) and ResNet-18 3×32×32 (batch 32);
* curvature (``compute_geometry``, default fields) of the trained demo model with
  ``--smooth-relu 1000`` (128 samples) and of a softplus ResNet-18 (16 noise images).

    python benchmarks/allocator.py [--rounds 3] [--reps 3] [--quick] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

KINDS = ("small_cnn", "demo_arch", "resnet18")
STEPS = ("standard", "lcnn", "gradreg", "lcnn_gradreg")


def _faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _time(fn, reps: int) -> dict:
    fn()
    ts, f0 = [], _faults()
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return {"s": statistics.median(ts), "faults": (_faults() - f0) / reps}


def child(reps: int, quick: bool) -> dict:
    import torch

    from lcnn_audit import allocator

    state = allocator.tune_host_allocator()
    torch.set_num_threads(1)
    sys.path.insert(0, str(Path(__file__).parent))
    import training

    from lcnn_audit.data import load_data
    from lcnn_audit.geometry import CurvatureOptions, compute_geometry
    from lcnn_audit.geometry.state import measurement_state
    from lcnn_audit.loading import load_model

    out = {"allocator": state}
    for kind in KINDS[:1] if quick else KINDS:
        _, step = training.step_runner(kind, torch.device("cpu"), 32 if kind == "resnet18" else 128)
        for name in STEPS:
            out[f"{kind} {name} step"] = _time(lambda name=name, step=step: step(name), reps)
    data = load_data("demo", n=128)
    b = data.get(torch.arange(len(data)))
    with measurement_state(load_model("demo"), smooth_relu_beta=1000.0) as prep:
        opts = CurvatureOptions(smooth_relu=1000.0)
        out["curvature, demo model --smooth-relu 1000, 128 samples"] = _time(
            lambda: compute_geometry(prep.model, b.x, b.y, torch.arange(len(b.x)), opts), reps)
    if not quick:
        import torchvision

        torch.manual_seed(0)
        net = torchvision.models.resnet18(num_classes=10).eval()
        g = torch.Generator().manual_seed(0)
        x, y = torch.rand(16, 3, 32, 32, generator=g), torch.randint(0, 10, (16,), generator=g)
        with measurement_state(net, smooth_relu_beta=1000.0) as prep:
            opts = CurvatureOptions(smooth_relu=1000.0)
            out["curvature, softplus ResNet-18 3x32x32, 16 images"] = _time(
                lambda: compute_geometry(prep.model, x, y, torch.arange(16), opts), reps)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="small CNN and the demo curvature only, 1 round")
    ap.add_argument("--json")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.reps, args.quick)))
        return
    rounds = 1 if args.quick else args.rounds
    runs: dict[str, list[dict]] = {"system": [], "tuned": []}
    for _ in range(rounds):
        for mode in ("system", "tuned"):
            cmd = [sys.executable, __file__, "--child", "--reps", str(args.reps)] + (["--quick"] if args.quick else [])
            env = {**os.environ, "LCNN_AUDIT_MALLOC": mode, "OMP_NUM_THREADS": "1"}
            res = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
            runs[mode].append(json.loads(res.stdout.strip().splitlines()[-1]))
    rows = {}
    for key in runs["tuned"][0]:
        if key == "allocator":
            continue
        ratios = [t[key]["s"] / s[key]["s"] for s, t in zip(runs["system"], runs["tuned"], strict=True)]
        rows[key] = {"system_ms": 1e3 * statistics.median(r[key]["s"] for r in runs["system"]),
                     "tuned_ms": 1e3 * statistics.median(r[key]["s"] for r in runs["tuned"]),
                     "tuned_over_system": statistics.median(ratios),
                     "faults_system": statistics.median(r[key]["faults"] for r in runs["system"]),
                     "faults_tuned": statistics.median(r[key]["faults"] for r in runs["tuned"])}
    report = {"machine": {"platform": platform.platform(), "cpu": platform.processor() or platform.machine(),
                          "libc": " ".join(platform.libc_ver()), "threads": 1,
                          "allocator": {m: runs[m][0]["allocator"] for m in runs}},
              "rounds": rounds, "reps": args.reps, "rows": rows}
    print("| workload | system (ms) | tuned (ms) | tuned / system | page faults per run, system → tuned |")
    print("|---|---:|---:|---:|---:|")
    for key, r in rows.items():
        print(f"| {key} | {r['system_ms']:.1f} | {r['tuned_ms']:.1f} | **{r['tuned_over_system']:.2f}** | "
              f"{r['faults_system']:.0f} → {r['faults_tuned']:.0f} |")
    for kind in KINDS:
        for a, b in (("lcnn", "standard"), ("lcnn_gradreg", "gradreg")):
            num, den = rows.get(f"{kind} {a} step"), rows.get(f"{kind} {b} step")
            if num and den:
                print(f"{kind}: {a}/{b} of the medians {num['system_ms'] / den['system_ms']:.2f} (system) → "
                      f"{num['tuned_ms'] / den['tuned_ms']:.2f} (tuned)")
    print(json.dumps(report["machine"]))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
