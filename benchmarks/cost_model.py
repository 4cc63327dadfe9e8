"""Cost model for docs/scaling.md: seconds per 1000 samples, per device, for each audit.

Measured on a CIFAR-shaped ResNet-18 (random weights, 10 classes, 3x32x32) with the library
functions the CLI calls. Not a test.

    python benchmarks/cost_model.py [--device cuda] [--n 64] [--batch-size 64] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch
import torchvision

from lcnn_audit import allocator
from lcnn_audit.data import ImageData
from lcnn_audit.geometry import CurvatureOptions, curvature_audit
from lcnn_audit.geometry.robustness import GradRobustnessOptions, discrepancy, grad_robustness
from lcnn_audit.loading import AuditModel


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--json")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
        allocator.tune_host_allocator()  # as every lcnn-audit command does (LCNN_AUDIT_MALLOC=system: off)
    dev = torch.device(args.device)
    torch.manual_seed(0)
    model = AuditModel(torchvision.models.resnet18(num_classes=10)).to(dev).eval()
    x = (torch.rand(args.n, 3, 32, 32) * 255).to(torch.uint8)
    y = torch.randint(0, 10, (args.n,))
    data = ImageData("synthetic", "test", x, y, torch.arange(args.n), 10, "random")
    audits = {
        "curvature (ReLU, exact Gauss-Newton)": lambda: curvature_audit(model, data, CurvatureOptions(),
                                                                        batch_size=args.batch_size),
        "curvature (softplus β=1000, Lanczos)": lambda: curvature_audit(
            model, data, CurvatureOptions(smooth_relu=1000.0), batch_size=args.batch_size),
        "grad-robustness (9 radii x 4 draws)": lambda: grad_robustness(model, data, GradRobustnessOptions(),
                                                                       batch_size=args.batch_size),
        "discrepancy (train + test)": lambda: discrepancy(model, data, data, batch_size=args.batch_size),
    }
    try:
        from lcnn_audit.attacks import AttackOptions, attack_audit

        audits["attack (PGD-L2, 4 eps, 10 steps)"] = lambda: attack_audit(
            model, data, AttackOptions(attacks=("pgd",), norms=("l2",), eps=(0.05, 0.1, 0.15, 0.2), steps=10),
            batch_size=args.batch_size)
    except ImportError:
        pass
    rows = {}
    for name, run in audits.items():
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        run()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        rows[name] = (time.perf_counter() - t) / args.n * 1000
        print(f"{name:45s} {rows[name]:10.1f} s / 1000 samples")
    report = {"device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or "cpu",
              "threads": torch.get_num_threads(), "torch": torch.__version__, "n": args.n,
              "batch_size": args.batch_size, "seconds_per_1000": rows}
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=2)


if __name__ == "__main__":
    main()
