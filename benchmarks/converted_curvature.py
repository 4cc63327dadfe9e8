"""Curvature of an LCNN-converted model: parametrised weights recomputed per forward vs cached
(issue #18). Not a test: prints the times of one run.

A converted model's conv/linear weights are ``torch.nn.utils.parametrize`` spectral norms, so
every access of ``layer.weight`` recomputes W/σ. VGG11-BN's first classifier layer alone is
25088×4096, and an HVP-based audit runs the forward ~30 times. ``measurement_state`` now holds
``parametrize.cached()``; this script times the default curvature computation both ways on
the same converted model and batch.

    python benchmarks/converted_curvature.py [--arch vgg11_bn] [--n 4] [--size 32] [--json out.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import time

import torch
import torchvision

from lcnn_audit import allocator
from lcnn_audit.convert import convert_model
from lcnn_audit.geometry import CurvatureOptions, compute_geometry
from lcnn_audit.geometry.differentiable import twice_differentiable
from lcnn_audit.geometry.state import measurement_state


@contextlib.contextmanager
def uncached_state(model):
    """measurement_state as it was before the cache: eval, no weight grads, no cache."""
    grads = {p: p.requires_grad for p in model.parameters()}
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        with twice_differentiable():
            yield model
    finally:
        for p, g in grads.items():
            p.requires_grad_(g)


def timed(state, net, x, y, opts):
    t, c = time.perf_counter(), time.process_time()
    with state(net) as m:
        fields, method = compute_geometry(getattr(m, "model", m), x, y, torch.arange(len(x)), opts)
    return time.perf_counter() - t, time.process_time() - c, fields, method


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="vgg11_bn")
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    allocator.tune_host_allocator()  # as every lcnn-audit command does (LCNN_AUDIT_MALLOC=system: off)
    torch.manual_seed(0)
    net = torchvision.models.get_model(args.arch, num_classes=10).eval()
    t = time.perf_counter()
    conv, _ = convert_model(net, input_shape=(3, args.size, args.size))
    t_convert = time.perf_counter() - t
    x, y = torch.rand(args.n, 3, args.size, args.size), torch.arange(args.n) % 10
    opts = CurvatureOptions()
    w0, c0, f0, m0 = timed(uncached_state, conv, x, y, opts)
    w1, c1, f1, m1 = timed(measurement_state, conv, x, y, opts)
    same = bool(torch.allclose(f0["hessian_norm"], f1["hessian_norm"], rtol=1e-6, atol=0))
    out = {"arch": args.arch, "n": args.n, "size": args.size, "method": m1, "convert_seconds": t_convert,
           "uncached": {"wall_s": w0, "cpu_s": c0}, "cached": {"wall_s": w1, "cpu_s": c1},
           "cpu_speedup": c0 / c1, "same_hessian_norm": same, "iterations": f1["iterations"].tolist(),
           "machine": platform.processor() or platform.machine(), "torch": torch.__version__,
           "threads": args.threads}
    print(json.dumps(out, indent=1))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=1)


if __name__ == "__main__":
    main()
