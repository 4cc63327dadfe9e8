"""Operator norms of the maps the bound meets that are not conv/linear/batch norm: max-pooling
(by counting window overlaps, exactly) and any other linear map (Lanczos on AᵀA with an
autograd adjoint, :func:`lcnn_audit.layers.spectral.top_singular`)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from ..layers.spectral import SingularResult, top_singular


def certified(res: SingularResult) -> float:
    """σ·√(1 + residual): an upper bound on the operator norm once the residual certificate of
    ``res`` holds (the top eigenvalue of AᵀA lies within residual·σ² of σ²)."""
    return res.sigma * math.sqrt(1 + res.residual)


def _per_dim(v, nd: int) -> tuple[int, ...]:
    return v if isinstance(v, tuple) else (v,) * nd


def _max_count(n: int, windows) -> int:
    counts = [0] * n
    for window in windows:
        for j in window:
            if 0 <= j < n:
                counts[j] += 1
    return max(counts) if counts else 1


def maxpool_overlap(pool: nn.Module, in_shape, out_shape) -> int:
    """Largest number of pooling windows any input element belongs to (exact, per dim): the
    a.e. Jacobian of max-pooling picks one input per window, so its norm is at most √(this)."""
    nd = len(in_shape) - 1
    k, s = _per_dim(pool.kernel_size, nd), _per_dim(pool.stride, nd)
    p, d = _per_dim(pool.padding, nd), _per_dim(pool.dilation, nd)
    m = 1
    for i in range(nd):
        windows = ((o * s[i] - p[i] + t * d[i] for t in range(k[i])) for o in range(out_shape[1 + i]))
        m *= _max_count(in_shape[1 + i], windows)
    return m


def adaptive_overlap(in_shape, out_shape) -> int:
    """:func:`maxpool_overlap` for adaptive pooling (window o covers ⌊on/m⌋ .. ⌈(o+1)n/m⌉ − 1)."""
    m = 1
    for n, n_out in zip(in_shape[1:], out_shape[1:], strict=True):
        windows = (range((o * n) // n_out, -((-(o + 1) * n) // n_out)) for o in range(n_out))
        m *= _max_count(n, windows)
    return m


def generic_norm(fn: Callable[[torch.Tensor], torch.Tensor], x_value: torch.Tensor, tol: float,
                 max_iter: int) -> SingularResult:
    """Operator norm of the affine map ``fn`` at the shape of ``x_value`` (one sample),
    A v = fn(v) − fn(0) and Aᵀ by autograd."""
    x0 = torch.zeros((1, *x_value.shape[1:]), dtype=x_value.dtype, device=x_value.device)
    with torch.no_grad():
        f0 = fn(x0)

    def op(v):
        with torch.no_grad():
            return fn(v) - f0

    def adj(u):
        with torch.enable_grad():
            x = x0.clone().requires_grad_(True)
            (g,) = torch.autograd.grad(fn(x), x, grad_outputs=u)
        return g

    gen = torch.Generator().manual_seed(0)
    v0 = torch.randn(x0.shape, generator=gen, dtype=torch.float64).to(x0.device, x0.dtype)
    return top_singular(op, adj, v0, tol=tol, max_iter=max_iter)
