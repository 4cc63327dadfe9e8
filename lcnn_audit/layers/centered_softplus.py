"""Centered softplus, the LCNN activation with a learnable curvature β.

Srinivas et al., *Efficient Training of Low-Curvature Neural Networks*, NeurIPS 2022
("LCNN paper"), §3.3::

    s₀(x; β) = (1/β)·log((1 + exp(βx)) / 2) = softplus(x; β) − log(2)/β      (eq. 4)

Properties (§3.3): s₀(0; β) = 0, so s₀ⁿ(0) = 0 for every composition depth n;
s₀ → x/2 as β → 0 and s₀ → ReLU as β → ∞. Its derivatives are s₀' = σ(βx) ∈ (0, 1)
(Lipschitz constant 1) and s₀'' = β·σ(βx)·(1 − σ(βx)) ≤ β/4, and its normalised curvature
is |s₀''/s₀'| = β·(1 − σ(βx)) ≤ β (eq. 3), the per-layer term of Theorem 1.

Numerics. With z = βx the value is g(z)/β, g(z) = log((1 + eᶻ)/2):

* |z| ≥ τ: g(z) = relu(z) + log1p(exp(−|z|)) − log 2, overflow-free for any z, with
  derivatives of full relative accuracy in both tails;
* |z| < τ (τ = 0.1): s₀ = x·φ(z) with the Taylor series φ(z) = g(z)/z = 1/2 + z/8 −
  z³/192 + z⁵/2880 − 17z⁷/645120 + 31z⁹/14515200 (truncation error < 1e-18 at τ).
  This avoids the cancellation in (softplus(βx) − log 2)/β as β → 0 and gives
  accurate ∂s₀/∂β = x²·φ'(βx) and second derivatives through autograd.

β = 0 gives exactly x/2. The function is a composite of torch operations, so autograd,
double backward (input Hessians), ``torch.func`` and ``torch.fx`` all work.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UsageError

LOG2 = math.log(2.0)
_TAU = 0.1  # |βx| below this uses the series for φ(z) = g(z)/z
# φ(z) = 1/2 + z·P(z²), P(w) = 1/8 − w/192 + w²/2880 − 17w³/645120 + 31w⁴/14515200
_SERIES = (1.0 / 8.0, -1.0 / 192.0, 1.0 / 2880.0, -17.0 / 645120.0, 31.0 / 14515200.0)

#: The reference implementation (github.com/kylematoba/lcnn, models/psoftplus.py) starts at β = 5.
DEFAULT_BETA = 5.0


def _phi_series(z: torch.Tensor) -> torch.Tensor:
    w = z * z
    acc = torch.full_like(z, _SERIES[-1])
    for c in reversed(_SERIES[:-1]):
        acc = acc * w + c
    return 0.5 + z * acc


def centered_softplus(x: torch.Tensor, beta: torch.Tensor | float) -> torch.Tensor:
    """s₀(x; β) = (1/β)·log((1 + exp(βx))/2) (LCNN paper eq. 4), for β ≥ 0.

    ``beta`` is a float or a tensor broadcastable to ``x``; β = 0 gives x/2 (the limit).
    Curvature bound β (eq. 3); slope in (0, 1); second derivative ≤ β/4.
    """
    if isinstance(beta, (int, float)):
        if not beta >= 0:  # also catches NaN
            raise UsageError(f"centered softplus needs beta >= 0, got {beta}")
        beta = torch.tensor(float(beta), dtype=x.dtype, device=x.device)
    else:
        beta = beta.to(dtype=x.dtype, device=x.device)
    z = beta * x
    small = z.abs() < _TAU
    # each branch only ever sees inputs where it is accurate and finite, so that the
    # gradient of the branch torch.where discards is finite too (0 * finite = 0)
    z_small = torch.where(small, z, torch.zeros_like(z))
    value_small = x * _phi_series(z_small)
    z_large = torch.where(small, torch.ones_like(z), z)
    beta_large = torch.where(small, torch.ones_like(z), beta.expand_as(z))
    # softplus(z) = relu(z) + log1p(exp(−|z|)): finite for every z, and (unlike torch's logsigmoid)
    # its autograd second derivative exp(−|z|)/(1 + exp(−|z|))² keeps full relative accuracy in the tails
    value_large = (F.relu(z_large) + torch.log1p(torch.exp(-z_large.abs())) - LOG2) / beta_large
    return torch.where(small, value_small, value_large)


def _inverse_exp(value: float, name: str) -> float:
    if not (value > 0 and math.isfinite(value)):
        raise UsageError(f"{name} must be a positive finite number, got {value}")
    return math.log(value)


class CenteredSoftplus(nn.Module):
    """Centered softplus s₀(x; β) with a learnable β > 0 (LCNN paper §3.3, eq. 4).

    β is stored as ``log_beta`` (β = exp(log_beta)), which keeps it positive, as in the
    authors' reference implementation. ``beta`` is the positive β tensor (the quantity the
    LCNN penalty λβ·Σβ of eq. 5 sums); ``curvature_bound()`` is β (eq. 3).
    """

    def __init__(self, beta_init: float = DEFAULT_BETA, learnable: bool = True):
        super().__init__()
        raw = torch.tensor(_inverse_exp(float(beta_init), "beta_init"))
        if learnable:
            self.log_beta = nn.Parameter(raw)
        else:
            self.register_buffer("log_beta", raw)

    @property
    def beta(self) -> torch.Tensor:
        """β = exp(log_beta) > 0."""
        return self.log_beta.exp()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return centered_softplus(x, self.beta)

    def curvature_bound(self) -> float:
        """sup_x |s₀''/s₀'| = β (LCNN eq. 3)."""
        return float(self.beta.detach())

    def second_derivative_bound(self) -> float:
        """sup_x |s₀''| = β/4, attained at x = 0."""
        return float(self.beta.detach()) / 4.0

    def lipschitz_constant(self) -> float:
        """sup_x |s₀'| = sup σ(βx) = 1."""
        return 1.0

    def extra_repr(self) -> str:
        return f"beta={float(self.beta.detach()):.4g}"
