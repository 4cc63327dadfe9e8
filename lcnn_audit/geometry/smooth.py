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
