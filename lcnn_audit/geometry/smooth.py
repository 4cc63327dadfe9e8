"""softplus(β), the LCNN paper's smooth stand-in for ReLU (§5, "standard" baseline, β = 1000),
with a backward that keeps input-Hessian products cheap.

The function is torch's softplus. Its derivative is σ(βx), written with ordinary
differentiable ops, so double backward (HVPs) differentiates σ through its saved output instead
of recomputing exponentials in ``softplus_double_backward``. That made one ResNet-18 HVP 1.76×
faster on CPU: HVP/forward+backward went from 3.7 to 2.5 (docs/benchmarks.md). Above the
threshold (βx > 20) torch's softplus is linear; σ(βx) there differs from 1 by < 2.1e-9.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


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
        a, b = self.min_val, self.max_val
        out = _sp(x - a, self.beta, self.threshold) - _sp(x - b, self.beta, self.threshold)
        return out + a if a != 0 else out

    def extra_repr(self) -> str:
        return f"min_val={self.min_val}, max_val={self.max_val}, beta={self.beta}"


class SmoothLeakyReLU(nn.Module):
    """leaky_relu(x; s) with ReLU → softplus(β): s·x + (1 − s)·S(x). ``slope`` may be a
    per-channel tensor (PReLU, channels on dim 1)."""

    def __init__(self, slope: float | torch.Tensor = 0.01, beta: float = 1000.0, threshold: float = 20.0):
        super().__init__()
        self.register_buffer("slope", torch.as_tensor(slope, dtype=torch.get_default_dtype()).detach().clone())
        self.beta, self.threshold = beta, threshold

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.slope.to(x.dtype)
        if s.numel() > 1:
            s = s.view(1, -1, *([1] * (x.dim() - 2)))
        return s * x + (1 - s) * _sp(x, self.beta, self.threshold)

    def extra_repr(self) -> str:
        return f"slope={self.slope.tolist() if self.slope.numel() <= 4 else tuple(self.slope.shape)}, beta={self.beta}"


class SmoothHardsigmoid(nn.Module):
    """hardsigmoid with ReLU → softplus(β): (S(x + 3) − S(x − 3)) / 6."""

    def __init__(self, beta: float = 1000.0, threshold: float = 20.0):
        super().__init__()
        self.beta, self.threshold = beta, threshold

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (_sp(x + 3, self.beta, self.threshold) - _sp(x - 3, self.beta, self.threshold)) / 6

    def extra_repr(self) -> str:
        return f"beta={self.beta}"


class SmoothHardswish(SmoothHardsigmoid):
    """hardswish with ReLU → softplus(β): x·(S(x + 3) − S(x − 3)) / 6."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * super().forward(x)
