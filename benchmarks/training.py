"""LCNN training-step overhead (issue #17, target 1). Not a test: prints same-run ratios.

For the small CNN of the Fashion-MNIST reproduction (width 8, softplus β=1000, 1×28×28,
batch 128), the bundled demo model's architecture (the same CNN at width 16 with ReLU, batch
128) and a CIFAR-shaped ResNet-18 (3×32×32, ReLU, batch 32), one optimisation step
(``lcnn_audit.training.train_step``: forward, penalties, backward, SGD) of

* the standard model, with and without GradReg (λ = 1e-3, double backprop);
* its LCNN conversion (centred softplus, γ-Lipschitz BN, spectral norms with one power
  step per training forward) with the current layers (fused centred softplus, BN scale folded
  into the affine parameters), with the layers before issue #17 ("before": the composite
  softplus and the BN scale as a second pass), with the current layers but W/σ(W) of the
  convolutions left to autograd ("generic σ": before the fused ``_DivideBySigma`` node), and
  with the compiled softplus kernels (``finetune --compile``), with and without GradReg.

Variants are interleaved (A, B, C, ... then again) for ``--reps`` rounds after a warm-up,
and every ratio is the median over rounds of the ratio within a round, so a neighbour's load
on a shared CPU hits both sides of a ratio alike.

    python benchmarks/training.py [--threads 1] [--reps 7] [--quick] [--device cpu] [--json out.json]
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
from torch import nn

from lcnn_audit import allocator
from lcnn_audit.layers import CenteredSoftplus
from lcnn_audit.layers.centered_softplus import centered_softplus_composite
from lcnn_audit.layers.lipschitz_batchnorm import _LipschitzBN
from lcnn_audit.layers.softplus_kernels import compiled_kernels
from lcnn_audit.layers.spectral import ConvSpectralNorm
from lcnn_audit.training import TrainConfig, init_model, make_optimizer, train_step

GRADREG = {"gradreg": {"weight": 1e-3}}
LCNN = {"lcnn": {"lambda_beta": 1e-4, "lambda_gamma": 1e-5}}


@contextlib.contextmanager
def compiled_softplus(model, kernels):
    """The fused op on torch.compile'd kernels (``finetune --compile``)."""
    layers = [m for m in model.modules() if isinstance(m, CenteredSoftplus)]
    for m in layers:
        m.kernels = kernels
    try:
        yield
    finally:
        for m in layers:
            m.kernels = None


def _bn_scale_after(self, x):
    """γ-Lipschitz BN as before issue #17: nn.BatchNorm's forward, then a second pass for the scale."""
    y = nn.modules.batchnorm._BatchNorm.forward(self, x)
    norm = self.bn_norm().clamp_min(torch.finfo(x.dtype).tiny)
    return y * (torch.minimum(self.gamma.to(norm.dtype), norm) / norm)


@contextlib.contextmanager
def composite_softplus():
    """The layers before issue #17, for the "before" side: the composite centred softplus (~20
    torch ops) and the γ-Lipschitz BN scale as a separate pass over the activation."""
    fused, bn = CenteredSoftplus.forward, _LipschitzBN.forward
    CenteredSoftplus.forward = lambda self, x: centered_softplus_composite(x, self.beta)
    _LipschitzBN.forward = _bn_scale_after
    try:
        yield
    finally:
        CenteredSoftplus.forward, _LipschitzBN.forward = fused, bn


def _generic_sigma_forward(self, weight):
    """Conv spectral norm as before the fused W/σ node: autograd through ``weight / σ(weight)``."""
    if self.training and self.n_power_iterations > 0:
        self._power_method(weight.detach(), self.n_power_iterations)
    u = self._u.clone(memory_format=torch.contiguous_format)
    v = self._v.clone(memory_format=torch.contiguous_format)
    return weight / torch.sum(u * self.geometry.apply(v, weight))


@contextlib.contextmanager
def generic_sigma():
    """The current layers, except that W/σ(W) is left to autograd (the "before" of the σ node)."""
    fused = ConvSpectralNorm.forward
    ConvSpectralNorm.forward = _generic_sigma_forward
    try:
        yield
    finally:
        ConvSpectralNorm.forward = fused


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


def build(kind: str, dev, convert: bool):
    if kind == "small_cnn":  # the Fashion-MNIST reproduction's standard model
        arch, kw, shape = "small_cnn", {"width": 8, "act": "softplus", "beta": 1000.0}, (1, 28, 28)
        norm, ds = "fashion-mnist", "fashion-mnist"
    elif kind == "demo_arch":  # the bundled demo model's architecture (ReLU)
        arch, kw, shape = "small_cnn", {"width": 16, "act": "relu"}, (1, 28, 28)
        norm, ds = "fashion-mnist", "fashion-mnist"
    else:
        arch, kw, shape = "resnet18", {"num_classes": 10}, (3, 32, 32)
        norm, ds = "cifar10", "cifar10"
    model = init_model(arch, kw, normalize=norm, dataset=ds, seed=0, device=dev, convert=convert, input_shape=shape)
    return model, shape


def variants(kind: str, dev):
    """name -> (model, optimizer, penalties, context factory)."""
    cfg = TrainConfig(lr=0.1)
    std, shape = build(kind, dev, convert=False)
    lcnn, _ = build(kind, dev, convert=True)
    out = {}
    for name, model, pen, ctx in (
        ("standard", std, {}, contextlib.nullcontext),
        ("lcnn_composite", lcnn, LCNN, composite_softplus),
        ("lcnn", lcnn, LCNN, contextlib.nullcontext),
        ("lcnn_generic_sigma", lcnn, LCNN, generic_sigma),
        ("gradreg", std, GRADREG, contextlib.nullcontext),
        ("lcnn_gradreg_composite", lcnn, {**LCNN, **GRADREG}, composite_softplus),
        ("lcnn_gradreg", lcnn, {**LCNN, **GRADREG}, contextlib.nullcontext),
    ):
        out[name] = (model, make_optimizer(model, cfg), pen, ctx)
    kernels, reason = compiled_kernels(dev)
    if kernels is not None:
        ctx = functools.partial(compiled_softplus, lcnn, kernels)
        out["lcnn_compiled"] = (lcnn, out["lcnn"][1], LCNN, ctx)
        out["lcnn_gradreg_compiled"] = (lcnn, out["lcnn"][1], {**LCNN, **GRADREG}, ctx)
    return out, shape


def step_runner(kind: str, dev, batch: int):
    """``(variants, step)``: ``step(name)`` runs one ``train_step`` of that variant on a fixed seeded
    batch and returns its seconds (shared by ``benchmarks/allocator.py`` and ``softplus_op.py``)."""
    vs, shape = variants(kind, dev)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch, *shape, generator=g).to(dev)
    y = torch.randint(0, 10, (batch,), generator=g).to(dev)
    index = torch.arange(batch, device=dev)

    def step(name):
        model, opt, pen, ctx = vs[name]
        model.train()
        with ctx():
            sync(dev)
            t = time.perf_counter()
            train_step(model, opt, x, y, index, pen, track_input="gradreg" in pen)
            sync(dev)
            return time.perf_counter() - t

    return vs, step


def bench(kind: str, dev, batch: int, reps: int) -> dict:
    vs, step = step_runner(kind, dev, batch)

    for name in vs:  # warm-up
        step(name)
    times: dict[str, list[float]] = {name: [] for name in vs}
    for _ in range(reps):
        for name in vs:
            times[name].append(step(name))

    def ratio(a, b):
        return statistics.median(ta / tb for ta, tb in zip(times[a], times[b], strict=True))

    return {"batch": batch, "median_s": {k: statistics.median(v) for k, v in times.items()},
            "ratios": {"lcnn/standard (before: composite softplus)": ratio("lcnn_composite", "standard"),
                       "lcnn/standard (fused softplus)": ratio("lcnn", "standard"),
                       "lcnn+gradreg/gradreg (before)": ratio("lcnn_gradreg_composite", "gradreg"),
                       "lcnn+gradreg/gradreg (fused)": ratio("lcnn_gradreg", "gradreg"),
                       "fused speed-up, lcnn step": ratio("lcnn_composite", "lcnn"),
                       "lcnn/standard (autograd W/sigma, before the sigma node)": ratio("lcnn_generic_sigma",
                                                                                         "standard"),
                       "sigma node: lcnn step after / before": ratio("lcnn", "lcnn_generic_sigma"),
                       "fused speed-up, lcnn+gradreg step": ratio("lcnn_gradreg_composite", "lcnn_gradreg"),
                       **({"lcnn/standard (fused, compiled kernels)": ratio("lcnn_compiled", "standard"),
                           "lcnn+gradreg/gradreg (fused, compiled kernels)": ratio("lcnn_gradreg_compiled",
                                                                                   "gradreg")}
                          if "lcnn_compiled" in times else {})}}


def fashion_rows(dev, reps: int) -> dict:
    """Per-step cost of every recipe of docs/results/fashion-mnist.md, relative to the standard
    model's step, interleaved in one run (small CNN width 8, batch 128). PGD adversarial
    training adds its L2 PGD (eps 0.1, 3 steps, eval mode) to each step, as the training loop does;
    the convert → fine-tune recipe trains the LCNN model, so its step is the LCNN step."""
    from lcnn_audit.attacks import PGD

    cfg = TrainConfig(lr=0.1)
    std, shape = build("small_cnn", dev, convert=False)
    lcnn, _ = build("small_cnn", dev, convert=True)
    recipes = {"Standard (softplus β=1000)": (std, {}), "LCNN": (lcnn, LCNN), "GradReg": (std, GRADREG),
               "LCNN + GradReg": (lcnn, {**LCNN, **GRADREG}),
               "CURE": (std, {"cure": {"weight": 0.1, "h": 0.5}}), "PGD adversarial training": (std, "pgd")}
    opts = {id(m): make_optimizer(m, cfg) for m in (std, lcnn)}
    g = torch.Generator().manual_seed(0)
    x = torch.rand(128, *shape, generator=g).to(dev)
    y = torch.randint(0, 10, (128,), generator=g).to(dev)
    index = torch.arange(128, device=dev)
    attack = PGD("l2", 0.1, steps=3, seed=0)

    def step(name):
        model, pen = recipes[name]
        sync(dev)
        t = time.perf_counter()
        xs = x
        if pen == "pgd":
            model.eval()
            xs = attack(model, x, y, index=index).detach()
            pen = {}
        model.train()
        train_step(model, opts[id(model)], xs, y, index, pen, track_input=bool(set(pen) - {"lcnn"}))
        sync(dev)
        return time.perf_counter() - t

    for name in recipes:
        step(name)
    times = {name: [] for name in recipes}
    for _ in range(reps):
        for name in recipes:
            times[name].append(step(name))
    base = times["Standard (softplus β=1000)"]
    return {name: {"median_s": statistics.median(t),
                   "step_vs_standard": statistics.median(a / b for a, b in zip(t, base, strict=True))}
            for name, t in times.items()}


def markdown(report: dict) -> str:
    rows = ["| model | batch | standard | LCNN before → after | ratio before → after | GradReg | "
            "LCNN+GradReg before → after | ratio before → after | compiled kernels: LCNN, LCNN+GradReg ratio |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for kind, r in report["results"].items():
        m, q = r["median_s"], r["ratios"]
        comp = (f"{q['lcnn/standard (fused, compiled kernels)']:.2f}×, "
                f"{q['lcnn+gradreg/gradreg (fused, compiled kernels)']:.2f}×"
                if "lcnn/standard (fused, compiled kernels)" in q else "(compile unavailable)")
        rows.append(
            f"| {kind} | {r['batch']} | {m['standard'] * 1e3:.1f} ms | {m['lcnn_composite'] * 1e3:.1f} → "
            f"{m['lcnn'] * 1e3:.1f} ms | {q['lcnn/standard (before: composite softplus)']:.2f}× → "
            f"**{q['lcnn/standard (fused softplus)']:.2f}×** | {m['gradreg'] * 1e3:.1f} ms | "
            f"{m['lcnn_gradreg_composite'] * 1e3:.1f} → {m['lcnn_gradreg'] * 1e3:.1f} ms | "
            f"{q['lcnn+gradreg/gradreg (before)']:.2f}× → **{q['lcnn+gradreg/gradreg (fused)']:.2f}×** | {comp} |")
    return "\n".join(rows)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--quick", action="store_true", help="small CNN only, 3 rounds")
    ap.add_argument("--models", default="small_cnn,demo_arch,resnet18")
    ap.add_argument("--fashion", action="store_true",
                    help="also time one step of every recipe of docs/results/fashion-mnist.md")
    ap.add_argument("--json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    allocator.tune_host_allocator()  # as every lcnn-audit command does (LCNN_AUDIT_MALLOC=system: off)
    dev = torch.device(args.device)
    kinds = ["small_cnn"] if args.quick else [k for k in args.models.split(",") if k]
    reps = 3 if args.quick else args.reps
    report = {"machine": {"platform": platform.platform(), "processor": platform.processor(),
                          "threads": torch.get_num_threads(), "torch": torch.__version__, "device": str(dev)},
              "results": {}}
    for kind in kinds:
        report["results"][kind] = bench(kind, dev, 32 if kind == "resnet18" else 128, reps)
    if args.fashion:
        report["fashion_mnist_recipes"] = fashion_rows(dev, reps)
    print(json.dumps(report, indent=2))
    print(markdown(report))
    for name, r in report.get("fashion_mnist_recipes", {}).items():
        print(f"| {name} | {r['step_vs_standard']:.2f}× ({r['median_s'] * 1e3:.0f} ms) |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=2)


if __name__ == "__main__":
    main()
