"""softplus(β), the LCNN paper's smooth stand-in for ReLU (§5, "standard" baseline, β = 1000),
with a backward that keeps input-Hessian products cheap.

The function is torch's softplus. Its derivative is σ(βx), written with ordinary
differentiable ops, so double backward (HVPs) differentiates σ through its saved output instead
of recomputing exponentials in ``softplus_double_backward``. That made one ResNet-18 HVP 1.76×
faster on CPU: HVP/forward+backward went from 3.7 to 2.5 (docs/benchmarks.md). Above the
threshold (βx > 20) torch's softplus is linear; σ(βx) there differs from 1 by < 2.1e-9.

The rest of the ReLU family gets the same surrogate through its shifted-ReLU form (below), and
:func:`smooth_relu_report` swaps every such module and functional call in a copy of a model
(``--smooth-relu``).
"""

from __future__ import annotations

import copy
from collections import Counter

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UsageError
from ..surgery import Call, substitute


class _SoftplusFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, beta: float, threshold: float) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.beta = beta
        return F.softplus(x, beta, threshold)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (x,) = ctx.saved_tensors
        return grad * torch.sigmoid(ctx.beta * x), None, None


class SmoothReLU(nn.Softplus):
    """``nn.Softplus(beta)`` with an HVP-friendly backward (see the module docstring)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """softplus_β(x), with a derivative at any order."""
        return _SoftplusFn.apply(x, self.beta, self.threshold)


# --------------------------------------------------------------------------- the ReLU family
#
# Every piecewise-linear activation is a combination of shifted ReLUs, so each gets the
# surrogate with ReLU replaced by S = softplus(β) (the same kink width 1/β everywhere):
#
#   hardtanh(x; a, b) = a + relu(x − a) − relu(x − b)       ReLU6 = hardtanh(·; 0, 6)
#   leaky_relu(x; s)  = s·x + (1 − s)·relu(x)              PReLU: s per channel
#   hardsigmoid(x)    = (relu(x + 3) − relu(x − 3)) / 6     hardswish(x) = x·hardsigmoid(x)
#
# Each surrogate tends to its original uniformly as β → ∞ (error ≤ log 2/β per ReLU).


def _sp(x: torch.Tensor, beta: float, threshold: float) -> torch.Tensor:
    return _SoftplusFn.apply(x, beta, threshold)


class SmoothHardtanh(nn.Module):
    """hardtanh(x; a, b) with ReLU → softplus(β): a + S(x − a) − S(x − b) (ReLU6: a=0, b=6)."""

    def __init__(self, min_val: float = -1.0, max_val: float = 1.0, beta: float = 1000.0, threshold: float = 20.0):
        super().__init__()
        self.min_val, self.max_val, self.beta, self.threshold = float(min_val), float(max_val), beta, threshold

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The smooth clamp to [min_val, max_val]: a + s_β(x − a) − s_β(x − b)."""
        a, b = self.min_val, self.max_val
        out = _sp(x - a, self.beta, self.threshold) - _sp(x - b, self.beta, self.threshold)
        return out + a if a != 0 else out

    def extra_repr(self) -> str:
        """Module repr arguments."""
        return f"min_val={self.min_val}, max_val={self.max_val}, beta={self.beta}"


class SmoothLeakyReLU(nn.Module):
    """leaky_relu(x; s) with ReLU → softplus(β): s·x + (1 − s)·S(x). ``slope`` may be a
    per-channel tensor (PReLU, channels on dim 1)."""

    def __init__(self, slope: float | torch.Tensor = 0.01, beta: float = 1000.0, threshold: float = 20.0):
        super().__init__()
        self.register_buffer("slope", torch.as_tensor(slope, dtype=torch.get_default_dtype()).detach().clone())
        self.beta, self.threshold = beta, threshold

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """s·x + (1 − s)·softplus_β(x)."""
        s = self.slope.to(x.dtype)
        if s.numel() > 1:
            s = s.view(1, -1, *([1] * (x.dim() - 2)))
        return s * x + (1 - s) * _sp(x, self.beta, self.threshold)

    def extra_repr(self) -> str:
        """Module repr arguments."""
        return f"slope={self.slope.tolist() if self.slope.numel() <= 4 else tuple(self.slope.shape)}, beta={self.beta}"


class SmoothHardsigmoid(nn.Module):
    """hardsigmoid with ReLU → softplus(β): (S(x + 3) − S(x − 3)) / 6."""

    def __init__(self, beta: float = 1000.0, threshold: float = 20.0):
        super().__init__()
        self.beta, self.threshold = beta, threshold

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(s_β(x + 3) − s_β(x − 3)) / 6, the smooth hardsigmoid."""
        return (_sp(x + 3, self.beta, self.threshold) - _sp(x - 3, self.beta, self.threshold)) / 6

    def extra_repr(self) -> str:
        """Module repr arguments."""
        return f"beta={self.beta}"


class SmoothHardswish(SmoothHardsigmoid):
    """hardswish with ReLU → softplus(β): x·(S(x + 3) − S(x − 3)) / 6."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x · smooth hardsigmoid(x)."""
        return x * super().forward(x)


# --------------------------------------------------------------------------- replacing them in a model


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
                          functions=SMOOTH_FUNCTIONS, methods=SMOOTH_METHODS)
    notices = [f"--smooth-relu: {n}" for n in rep.notes if "not traceable" in n]
    kept = Counter(type(m).__name__ for name, m in out.named_modules()
                   if isinstance(m, NON_SMOOTH) and ".parametrizations." not in f".{name}.")
    kept.update(s["type"] for s in rep.skipped)
    if kept:
        listed = ", ".join(f"{k} ×{c}" for k, c in sorted(kept.items()))
        notices.append(f"--smooth-relu has no softplus surrogate for {listed}: those stay non-smooth, so the "
                       "Hessian there is still only the part autograd sees")
    return out, notices
