"""Batched input Hessian-vector products.

For a model in eval mode the samples of a batch do not interact, so the input Hessian
of Σᵢ fᵢ(xᵢ) is block-diagonal: one HVP of the summed objective with a batch of vectors
(one per sample) returns every per-sample product Hᵢvᵢ at once. The gradient graph is
built once (``create_graph=True``) and reused by every product, which measured ~2.2
forward+backward passes per HVP (docs/benchmarks.md).
"""

from __future__ import annotations

import torch

from ..errors import ModelError
from .objective import ObjectiveFn

_NO_SECOND_DERIVATIVE = (
    "the model's input gradient is not differentiable (an op is once_differentiable or detaches its "
    "backward), so input Hessians cannot be computed; replace that op (e.g. a custom autograd.Function)"
)
_NO_DOUBLE_BACKWARD = ("double backward", "not implemented", "does not require grad", "derivative for")


class BatchedHVP:
    """``hvp(v)`` = per-sample ∇²ₓfᵢ(xᵢ) vᵢ for a batch ``v`` shaped like ``x``."""

    def __init__(self, objective: ObjectiveFn, x: torch.Tensor):
        self.x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            self.f, self.logits = objective(self.x)
            (self.grad,) = torch.autograd.grad(self.f.sum(), self.x, create_graph=True)
        # a gradient that carries no graph means f is affine in x (H = 0) -- or that an op
        # dropped its own derivative; tell the two apart by evaluating the gradient elsewhere
        self._linear = not self.grad.requires_grad
        if self._linear:
            self._check_constant_gradient(objective)

    def _check_constant_gradient(self, objective: ObjectiveFn) -> None:
        shift = 1e-2 * torch.randn(self.x.shape, generator=torch.Generator().manual_seed(0)).to(self.x)
        x2 = (self.x.detach() + shift).requires_grad_(True)
        with torch.enable_grad():
            f2, _ = objective(x2)
            (g2,) = torch.autograd.grad(f2.sum(), x2)
        g1 = self.grad.detach()
        if (g2 - g1).abs().max() > 1e-4 * g1.abs().max().clamp_min(1e-12):
            raise ModelError(_NO_SECOND_DERIVATIVE)

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        """Hv for a batch of directions shaped like x (one HVP gives every sample's, eval mode)."""
        if self._linear:
            return torch.zeros_like(v)
        try:
            (hv,) = torch.autograd.grad(self.grad, self.x, grad_outputs=v, retain_graph=True, allow_unused=True)
        except RuntimeError as err:
            msg = str(err)
            if any(s in msg for s in _NO_DOUBLE_BACKWARD):
                raise ModelError(
                    "the model does not support double backward, which input Hessians need ("
                    + msg.splitlines()[0][:160]
                    + "); replace the offending op (e.g. a custom autograd.Function or fused kernel)"
                ) from None
            raise
        if hv is None:  # the gradient has a graph, but not back to x: an op dropped its derivative
            raise ModelError(_NO_SECOND_DERIVATIVE)
        return hv.detach()


class CompactingHVP:
    """Per-sample HVPs for the samples still active, on a graph rebuilt for them.

    Batched Lanczos stops samples one by one; running the remaining ones on the full-batch
    graph would make every sample pay for the slowest. When the active samples fall to at
    most ``shrink`` of the current graph's batch, the graph is rebuilt on those alone (a
    forward+backward of the subset; the rebuilds add at most ~2 full-batch passes in total).
    ``__call__(v, active)`` takes (B, d) vectors for the whole batch and returns (B, d) with
    zeros for inactive rows.
    """

    def __init__(self, full: BatchedHVP, objective_for, shrink: float = 0.5):
        self.full = full
        self.objective_for = objective_for  # index tensor -> objective for those samples
        self.shrink = shrink
        self.cur = full
        self.cur_idx: torch.Tensor | None = None  # None: the full batch
        self.rebuilds = 0

    def __call__(self, v: torch.Tensor, active: torch.Tensor | None = None) -> torch.Tensor:
        """Hv for (B, d) directions; with ``active``, only those rows are computed (others zero)."""
        B = v.shape[0]
        shape = self.full.x.shape
        if active is None:
            return self.full(v.view(shape)).reshape(B, -1)
        idx = active.nonzero().squeeze(1)
        size = B if self.cur_idx is None else len(self.cur_idx)
        if 0 < len(idx) <= self.shrink * size:
            x = self.full.x.detach()[idx]
            self.cur = BatchedHVP(self.objective_for(idx), x)
            self.cur_idx = idx
            self.rebuilds += 1
        if self.cur_idx is None:
            return self.full(v.view(shape)).reshape(B, -1)
        out = torch.zeros_like(v)
        sub = v[self.cur_idx].view(len(self.cur_idx), *shape[1:])
        out[self.cur_idx] = self.cur(sub).reshape(len(self.cur_idx), -1)
        return out
