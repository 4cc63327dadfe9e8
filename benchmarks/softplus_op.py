"""The fused centred softplus before and after a change, in the same run (issue #17).

Not a test: prints same-run ratios. ``--baseline DIR`` holds another version's ``lcnn_audit/``
(e.g. ``git archive 52881fd lcnn_audit | tar -x -C DIR``), imported as ``lcnn_audit_baseline``;
its ``_CenteredSoftplusFn`` forward and backward are swapped into this checkout's op, so that
everything else (model, optimiser, penalties, allocator) is the same code. Timed, interleaved
(after, before, after, ...) for ``--reps`` rounds, median of the per-round ratios:

* the op alone on a 128×16×28×28 fp32 activation (x ~ N(0, 0.05²), β = 1000): forward, and
  forward plus first-order backward (∂/∂x and the learnable β's gradient);
* LCNN training steps (``benchmarks/training.py``'s ``lcnn`` and ``lcnn_gradreg`` variants)
  against the standard and GradReg steps, for the small CNN, the demo architecture and
  ResNet-18 3×32×32.

    python benchmarks/softplus_op.py --baseline DIR [--reps 7] [--models small_cnn,demo_arch,resnet18]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import training  # noqa: E402 - benchmarks/training.py
from pgd_step import import_version  # noqa: E402 - benchmarks/pgd_step.py

from lcnn_audit import allocator  # noqa: E402

cs = importlib.import_module("lcnn_audit.layers.centered_softplus")
FN = cs._CenteredSoftplusFn


@contextlib.contextmanager
def op_of(other):
    """This checkout's op with ``other``'s forward and backward (None: unchanged)."""
    saved = FN.__dict__["forward"], FN.__dict__["backward"]
    if other is not None:
        FN.forward, FN.backward = other.__dict__["forward"], other.__dict__["backward"]
    try:
        yield
    finally:
        FN.forward, FN.backward = saved


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def interleave(fns: dict, reps: int) -> dict[str, list[float]]:
    for fn in fns.values():
        fn()
    out = {k: [] for k in fns}
    for _ in range(reps):
        for k, fn in fns.items():
            out[k].append(timed(fn))
    return out


def ratio(t, a, b) -> float:
    return statistics.median(x / y for x, y in zip(t[a], t[b], strict=True))


def op_rows(old, reps: int) -> dict:
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(128, 16, 28, 28, generator=g) * 0.05).requires_grad_(True)
    beta = torch.tensor(1000.0, requires_grad=True)
    w = torch.randn(x.shape, generator=g)

    def fwd():
        with torch.no_grad():
            cs.centered_softplus(x, beta)

    def fwd_bwd():
        torch.autograd.grad(cs.centered_softplus(x, beta), (x, beta), grad_outputs=w)

    fns = {}
    for name, other in (("after", None), ("before", old)):
        fns[f"forward {name}"] = lambda other=other: _in(other, fwd)
        fns[f"forward+backward {name}"] = lambda other=other: _in(other, fwd_bwd)
    t = interleave(fns, reps)
    med = lambda key: {k: 1e3 * statistics.median(t[f"{key} {k}"]) for k in ("after", "before")}  # noqa: E731
    return {"forward_ms": med("forward"), "forward_after_over_before": ratio(t, "forward after", "forward before"),
            "forward_backward_ms": med("forward+backward"),
            "forward_backward_after_over_before": ratio(t, "forward+backward after", "forward+backward before")}


def _in(other, fn):
    with op_of(other):
        fn()


def step_rows(kind: str, old, reps: int) -> dict:
    batch = 32 if kind == "resnet18" else 128
    _, run = training.step_runner(kind, torch.device("cpu"), batch)

    def step(name, other=None):
        with op_of(other):
            run(name)

    fns = {"standard": lambda: step("standard"), "lcnn after": lambda: step("lcnn"),
           "lcnn before": lambda: step("lcnn", old), "gradreg": lambda: step("gradreg"),
           "lcnn_gradreg after": lambda: step("lcnn_gradreg"), "lcnn_gradreg before": lambda: step("lcnn_gradreg", old)}
    t = interleave(fns, reps)
    return {"batch": batch, "median_ms": {k: 1e3 * statistics.median(v) for k, v in t.items()},
            "lcnn/standard": {k: ratio(t, f"lcnn {k}", "standard") for k in ("after", "before")},
            "lcnn+gradreg/gradreg": {k: ratio(t, f"lcnn_gradreg {k}", "gradreg") for k in ("after", "before")},
            "lcnn step after/before": ratio(t, "lcnn after", "lcnn before"),
            "lcnn+gradreg step after/before": ratio(t, "lcnn_gradreg after", "lcnn_gradreg before")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--baseline", required=True, help="folder holding the other version's lcnn_audit/")
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--models", default="small_cnn,demo_arch,resnet18")
    ap.add_argument("--json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    state = allocator.tune_host_allocator()  # as every lcnn-audit command does (LCNN_AUDIT_MALLOC=system: off)
    old = importlib.import_module(f"{import_version(args.baseline)}.layers.centered_softplus")._CenteredSoftplusFn
    report = {"machine": {"platform": platform.platform(), "threads": torch.get_num_threads(),
                          "torch": torch.__version__, "allocator": state},
              "op": op_rows(old, args.reps)}
    report["steps"] = {kind: step_rows(kind, old, args.reps) for kind in args.models.split(",") if kind}
    op = report["op"]
    fb = op["forward_backward_ms"]
    print(f"op, forward: {op['forward_ms']['before']:.2f} → {op['forward_ms']['after']:.2f} ms "
          f"(**{op['forward_after_over_before']:.2f}×**); forward+backward: {fb['before']:.2f} → "
          f"{fb['after']:.2f} ms (**{op['forward_backward_after_over_before']:.2f}×**)")
    print("| model | batch | standard | LCNN before → after | LCNN / standard, before → after | GradReg | "
          "LCNN+GradReg / GradReg, before → after |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for kind, r in report["steps"].items():
        m = r["median_ms"]
        print(f"| {kind} | {r['batch']} | {m['standard']:.1f} ms | {m['lcnn before']:.1f} → {m['lcnn after']:.1f} ms "
              f"(**{r['lcnn step after/before']:.2f}×**) | {r['lcnn/standard']['before']:.2f}× → "
              f"**{r['lcnn/standard']['after']:.2f}×** | {m['gradreg']:.1f} ms | "
              f"{r['lcnn+gradreg/gradreg']['before']:.2f}× → **{r['lcnn+gradreg/gradreg']['after']:.2f}×** |")
    print(json.dumps(report["machine"]))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
