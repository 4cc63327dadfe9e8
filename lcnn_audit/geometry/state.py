"""Put a model into measurement state and restore it afterwards.

Measurement state: eval mode (so the batch Hessian is block-diagonal), parameters not
requiring grad (double backward then skips weight gradients), TF32 off (it costs ~1e-3
relative accuracy), optional fp64, optionally ReLU-family activations replaced by softplus(β)
surrogates, and ops without double backward (SDPA kernels, hardsigmoid/hardswish) run in
twice-differentiable forms (``differentiable``). Parametrised weights (the spectral norms of
a converted model) are computed once per measurement (``torch.nn.utils.parametrize.cached``).
"""

from __future__ import annotations

import contextlib
import copy
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from ..errors import UsageError
from ..loading import set_eval
from ..surgery import Call, substitute
from .differentiable import twice_differentiable
from .smooth import SmoothHardsigmoid, SmoothHardswish, SmoothHardtanh, SmoothLeakyReLU, SmoothReLU

DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclass
class Prepared:
    model: nn.Module
    dtype: torch.dtype
    notices: list[str] = field(default_factory=list)


def _train_mode_bn(model: nn.Module) -> list[str]:
    return [n or type(model).__name__ for n, m in model.named_modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training]


#: --smooth-relu replaces these (exact module types and functional forms) by softplus surrogates
SMOOTH_MODULES: dict[str, tuple[type[nn.Module], ...]] = {
    "relu": (nn.ReLU,), "relu6": (nn.ReLU6,), "hardtanh": (nn.Hardtanh,), "leaky_relu": (nn.LeakyReLU,),
    "prelu": (nn.PReLU,), "hardsigmoid": (nn.Hardsigmoid,), "hardswish": (nn.Hardswish,),
}
SMOOTH_FUNCTIONS: dict[str, tuple] = {
    "relu": (F.relu, torch.relu, F.relu_, torch.relu_), "relu6": (F.relu6,), "hardtanh": (F.hardtanh, F.hardtanh_),
    "leaky_relu": (F.leaky_relu, F.leaky_relu_), "hardsigmoid": (F.hardsigmoid,), "hardswish": (F.hardswish,),
}
SMOOTH_METHODS = {"relu": ("relu", "relu_")}
#: non-smooth modules --smooth-relu has no surrogate for (named in a notice when present)
NON_SMOOTH = (nn.ReLU, nn.ReLU6, nn.Hardtanh, nn.LeakyReLU, nn.PReLU, nn.RReLU, nn.Threshold, nn.Hardshrink,
              nn.Softshrink, nn.Hardsigmoid, nn.Hardswish, nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d,
              nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d)


def _arg(call: Call, i: int, name: str, default):
    return call.args[i] if len(call.args) > i else call.kwargs.get(name, default)


def _smooth_builder(beta: float):
    def build(kind: str, orig) -> nn.Module | None:
        if kind == "relu":
            return SmoothReLU(beta=beta)
        if kind in ("relu6", "hardtanh"):
            if isinstance(orig, nn.Module):
                lo, hi = orig.min_val, orig.max_val
            elif kind == "relu6":
                lo, hi = 0.0, 6.0
            else:
                lo, hi = _arg(orig, 0, "min_val", -1.0), _arg(orig, 1, "max_val", 1.0)
            return SmoothHardtanh(lo, hi, beta=beta)
        if kind == "leaky_relu":
            slope = orig.negative_slope if isinstance(orig, nn.Module) else _arg(orig, 0, "negative_slope", 0.01)
            return SmoothLeakyReLU(slope, beta=beta)
        if kind == "prelu":
            return SmoothLeakyReLU(orig.weight.detach(), beta=beta).to(orig.weight.device)
        return (SmoothHardsigmoid if kind == "hardsigmoid" else SmoothHardswish)(beta=beta)

    return build


def smooth_relu(model: nn.Module, beta: float) -> nn.Module:
    """A copy of ``model`` with every ReLU-family activation (ReLU, ReLU6, Hardtanh,
    LeakyReLU, PReLU, Hardsigmoid, Hardswish; modules and functional calls) replaced by
    its softplus(β) surrogate (``smooth``), the LCNN paper's "standard" baseline (β = 1000)
    with defined curvature. See :func:`smooth_relu_report` for what was not replaced."""
    return smooth_relu_report(model, beta)[0]


def smooth_relu_report(model: nn.Module, beta: float) -> tuple[nn.Module, list[str]]:
    """(:func:`smooth_relu`'s model, notices naming what is still not smooth)."""
    if beta <= 0:
        raise UsageError(f"--smooth-relu needs a positive beta, got {beta}")
    out, rep = substitute(copy.deepcopy(model), _smooth_builder(beta), tuple(SMOOTH_MODULES), SMOOTH_MODULES,
                          SMOOTH_FUNCTIONS, SMOOTH_METHODS)
    notices = [f"--smooth-relu: {n}" for n in rep.notes if "not traceable" in n]
    kept = Counter(type(m).__name__ for name, m in out.named_modules()
                   if isinstance(m, NON_SMOOTH) and ".parametrizations." not in f".{name}.")
    kept.update(s["type"] for s in rep.skipped)
    if kept:
        listed = ", ".join(f"{k} ×{c}" for k, c in sorted(kept.items()))
        notices.append(f"--smooth-relu has no softplus surrogate for {listed}: those stay non-smooth, so the "
                       "Hessian there is still only the part autograd sees")
    return out, notices


@contextlib.contextmanager
def tf32_disabled() -> Iterator[None]:
    old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
           torch.get_float32_matmul_precision())
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old[0], old[1]
        torch.set_float32_matmul_precision(old[2])


@contextlib.contextmanager
def measurement_state(model: nn.Module, dtype: str = "float32", smooth_relu_beta: float | None = None
                      ) -> Iterator[Prepared]:
    """Yield the model to measure; restore ``training`` and ``requires_grad`` on exit.

    ``Prepared.notices`` gains, on a normal exit, a line per twice-differentiable substitution
    that took effect (math-kernel SDPA, clamp-form hard activations)."""
    if dtype not in DTYPES:
        raise UsageError(f"unknown dtype {dtype!r}; use float32 or float64")
    notices = []
    bn = _train_mode_bn(model)
    if bn:
        notices.append(f"BatchNorm layers in train mode ({', '.join(bn[:3])}{'...' if len(bn) > 3 else ''}) "
                       "couple the samples of a batch; switched the model to eval mode for the audit")
    training = {m: m.training for m in model.modules()}
    grads = {p: p.requires_grad for p in model.parameters()}
    try:
        set_eval(model)
        for p in model.parameters():
            p.requires_grad_(False)
        work = model
        if smooth_relu_beta is not None:
            work, smooth_notices = smooth_relu_report(model, smooth_relu_beta)
            notices.extend(smooth_notices)
        if DTYPES[dtype] != torch.float32:
            work = copy.deepcopy(work) if work is model else work
            work = work.to(DTYPES[dtype])
        # parametrised weights (spectral norm: W/σ) are fixed while measuring: compute each once, not
        # on every forward (for a converted VGG11-BN that was ~30 % of every HVP, docs/benchmarks.md)
        with tf32_disabled(), twice_differentiable() as mode, parametrize.cached():
            yield Prepared(work, DTYPES[dtype], notices)
        notices.extend(mode.notices())  # read by the audits after the block
    finally:
        for m, t in training.items():
            m.training = t
        for p, g in grads.items():
            p.requires_grad_(g)
