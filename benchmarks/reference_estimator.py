"""Bias of the LCNN reference code's curvature estimator against exact fp64 Hessians (issue #15).

``--method reference`` ports kylematoba/lcnn's ``curvature_hessian_estimator``: random
normal start, K power steps u ← Hu/(‖Hu‖ + 1e-6), estimate |uᵀHu|. This script runs it at
K = 10 (the reference CLI default) and K = 20 (the function default), ``--method power``
(20 steps, estimate ‖Hu‖) and the default Lanczos on trained Fashion-MNIST CNNs, and
compares each per-sample ‖∇²f‖₂ with the exact largest |eigenvalue| of the full fp64 input
Hessian (torch.autograd.functional.hessian, 784×784 per sample).

Models: the epoch-60 snapshots of ``experiments/overfit.py`` (``--run runs/overfit``) if
present, else a standard and an LCNN model trained here for 20 epochs on 256 images.

    python benchmarks/reference_estimator.py [--run runs/overfit] [--n 32] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import torch
import torch.nn.functional as F

from lcnn_audit.data import load_data
from lcnn_audit.geometry import CurvatureOptions, compute_geometry
from lcnn_audit.geometry.state import measurement_state
from lcnn_audit.loading import load_model

METHODS = {"reference, 10 steps": CurvatureOptions(method="reference", iters=10, jacobian="off"),
           "reference, 20 steps": CurvatureOptions(method="reference", iters=20, jacobian="off"),
           "power, 20 steps (‖Hu‖)": CurvatureOptions(method="power", iters=20, jacobian="off"),
           "lanczos (default)": CurvatureOptions(jacobian="off")}


def models(run: Path | None):
    names = ("standard", "lcnn", "gradreg", "lcnn_gradreg")
    if run is not None and (run / "train" / "standard-s0" / "epoch060.safetensors").exists():
        return {n: load_model(run / "train" / f"{n}-s0" / "epoch060.safetensors") for n in names
                if (run / "train" / f"{n}-s0" / "epoch060.safetensors").exists()}
    from lcnn_audit.penalties import PenaltyConfig
    from lcnn_audit.training import TrainConfig, init_model, train

    data = load_data("demo", "train", n=256, seed=0)
    out = {}
    for name, convert, pen in (("standard", False, {}), ("lcnn", True, {"lambda_beta": 1e-4, "lambda_gamma": 1e-5})):
        m = init_model("small_cnn", {"width": 8, "act": "softplus", "beta": 1000.0}, normalize="fashion-mnist",
                       dataset="fashion-mnist", convert=convert, input_shape=data.input_shape)
        train(m, data, None, TrainConfig(epochs=20, batch_size=64, augment="none", curvature_n=0,
                                         penalties=PenaltyConfig(**pen)), from_scratch=True)
        out[name] = m.eval()
    return out


def exact_norms(model, x, y) -> torch.Tensor:
    m64 = model.double()
    out = []
    for i in range(len(x)):
        H = torch.autograd.functional.hessian(
            lambda v, i=i: F.cross_entropy(m64(v.unsqueeze(0)), y[i:i + 1]), x[i].double(), vectorize=True)
        out.append(torch.linalg.eigvalsh(H.reshape(x[0].numel(), -1)).abs().max())
    model.float()
    return torch.stack(out)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", type=Path, default=Path("runs/overfit"))
    p.add_argument("--n", type=int, default=32)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    torch.set_num_threads(1)
    data = load_data("demo", "test", n=args.n, seed=1)
    batch = data.get(torch.arange(len(data)))
    x, y = batch.x, batch.y
    rows = []
    for name, model in models(args.run).items():
        model.eval()
        exact = exact_norms(model, x, y)
        keep = exact > 1e-6  # samples with a numerically zero Hessian carry no relative error
        for label, opts in METHODS.items():
            with measurement_state(model) as prep:
                f, _ = compute_geometry(prep.model, x, y, batch.index, opts)
            est = f["hessian_norm"][keep]
            rel = (est - exact[keep]) / exact[keep]
            rows.append({"model": name, "method": label, "n": int(keep.sum()),
                         "mean_est_over_mean_exact": float(est.mean() / exact[keep].mean()),
                         "mean_rel_error": float(rel.mean()), "worst_low": float(rel.min()),
                         "worst_high": float(rel.max())})
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, 1 thread, n = {args.n}")
    print(f"{'model':<14}{'method':<26}{'mean est/exact':>15}{'mean rel err':>14}{'worst low':>11}{'worst high':>11}")
    for r in rows:
        print(f"{r['model']:<14}{r['method']:<26}{r['mean_est_over_mean_exact']:>15.4f}{r['mean_rel_error']:>14.4f}"
              f"{r['worst_low']:>11.4f}{r['worst_high']:>11.2e}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
