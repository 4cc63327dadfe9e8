"""γ-Lipschitz batch normalisation (LCNN paper §3.4.2 and arXiv appendix C).

In eval mode batch norm is the affine map x ↦ w ⊙ (x − μ)/√(σ² + ε) + b, whose spectral
norm (Lipschitz constant) has the closed form

    ‖BN‖₂ = maxᵢ |wᵢ| / √(running_varᵢ + ε)

with w the affine weight when the layer has one and 1 otherwise. The γ-Lipschitz layer is

    1-Lipschitz-BN(x) = BN(x) / ‖BN‖₂
    γ-Lipschitz-BN(x) = min(γ, ‖BN‖₂) · 1-Lipschitz-BN(x)

so its Lipschitz constant in eval mode is min(γ, ‖BN‖₂) ≤ γ (Srinivas et al., NeurIPS 2022,
§3.4.2; the arXiv version's appendix C gives the PyTorch snippet). γ ≥ 1 is learnable,
stored as ``gamma_raw`` with γ = 1 + exp(gamma_raw), and penalised through λγ·Σ log γ
(eq. 5).

The classes subclass ``nn.BatchNorm1d``/``nn.BatchNorm2d``: running statistics, the affine
parameters and ``num_batches_tracked`` keep their names and behaviour (batch statistics and
running-statistic updates in train mode, running statistics in eval mode). ‖BN‖₂ is
always computed from the running variance, as in the paper, so the bound is exact for the
eval-mode layer.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UsageError

#: Default γ when a fixed value is wanted: the appendix C snippet's 1 + 10.
PAPER_GAMMA = 11.0
#: Smallest γ that ``from_batchnorm(gamma_init=None)`` starts from (gamma_raw = 0).
GAMMA_FLOOR = 2.0


def _gamma_raw(gamma: float) -> float:
    if not (math.isfinite(gamma) and gamma > 1.0):
        raise UsageError(f"gamma must be a finite number > 1 (γ = 1 + exp(raw) > 1), got {gamma}")
    return math.log(gamma - 1.0)


def bn_spectral_norm(weight: torch.Tensor | None, running_var: torch.Tensor, eps: float) -> torch.Tensor:
    """‖BN‖₂ = maxᵢ |wᵢ| / √(running_varᵢ + ε) (w = 1 without an affine weight), LCNN §3.4.2."""
    scale = torch.rsqrt(running_var + eps)
    if weight is not None:
        scale = weight.abs() * scale
    return scale.max()


class _LipschitzBN:
    """Shared implementation; mixed into the torch BatchNorm classes below."""

    def _setup_gamma(self, gamma_init: float) -> None:
        if not self.track_running_stats:
            raise UsageError("γ-Lipschitz batch norm needs running statistics (track_running_stats=True): "
                             "its Lipschitz constant is defined by the running variance")
        ref = self.running_var
        self.gamma_raw = nn.Parameter(torch.tensor(_gamma_raw(float(gamma_init)), device=ref.device, dtype=ref.dtype))

    @property
    def gamma(self) -> torch.Tensor:
        """γ = 1 + exp(gamma_raw) ≥ 1, the learnable Lipschitz cap."""
        return 1.0 + self.gamma_raw.exp()

    def bn_norm(self) -> torch.Tensor:
        """‖BN‖₂ of the underlying (eval-mode) batch norm, from the running variance."""
        return bn_spectral_norm(self.weight if self.affine else None, self.running_var, self.eps)

    def lipschitz_constant(self) -> torch.Tensor:
        """min(γ, ‖BN‖₂) ≤ γ: the exact Lipschitz constant of the eval-mode layer."""
        return torch.minimum(self.gamma.to(self.running_var.dtype), self.bn_norm())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # min(γ, ‖BN‖₂)/‖BN‖₂ · BN(x; w, b) = BN(x; c·w, c·b): the scale c goes into the affine
        # parameters (C numbers) instead of a second pass over the activation. Otherwise as
        # nn.BatchNorm's forward: batch statistics and running-statistic updates in train mode
        # (track_running_stats is required), running statistics in eval mode.
        # The running statistics are updated first (one read of x), so that c comes from the updated
        # running variance, as with a scale applied after nn.BatchNorm's forward.
        self._check_input_dim(x)
        if self.training:
            factor = 0.0 if self.momentum is None else self.momentum
            if self.num_batches_tracked is not None:
                self.num_batches_tracked.add_(1)
                if self.momentum is None:  # cumulative moving average
                    factor = 1.0 / float(self.num_batches_tracked)
            torch.batch_norm_update_stats(x.detach(), self.running_mean, self.running_var, factor)
        norm = self.bn_norm().clamp_min(torch.finfo(x.dtype).tiny)
        c = torch.minimum(self.gamma.to(norm.dtype), norm) / norm
        # (contiguous: the CPU eval-mode batch-norm backward reads garbage from a stride-0 expanded weight)
        weight = self.weight * c if self.affine else c.expand(self.num_features).contiguous()
        bias = self.bias * c if self.affine else None
        if self.training:
            return F.batch_norm(x, None, None, weight, bias, True, 0.0, self.eps)
        return F.batch_norm(x, self.running_mean, self.running_var, weight, bias, False, 0.0, self.eps)

    @classmethod
    def from_batchnorm(cls, bn: nn.modules.batchnorm._BatchNorm, gamma_init: float | None = None):
        """A γ-Lipschitz copy of ``bn`` with its running statistics and affine parameters.

        ``gamma_init=None`` starts γ at max(‖BN‖₂·(1 + 1e-5), 2): any γ ≥ ‖BN‖₂ leaves the layer's
        function unchanged, and the floor 2 (gamma_raw = 0) keeps γ = 1 + exp(gamma_raw) away
        from 1, where its gradient vanishes. A number starts every layer at that γ.
        """
        if gamma_init is None:
            norm = float(bn_spectral_norm(bn.weight.detach() if bn.affine else None, bn.running_var, bn.eps))
            gamma_init = max(norm * (1.0 + 1e-5), GAMMA_FLOOR)
        ref = bn.running_var
        new = cls(bn.num_features, eps=bn.eps, momentum=bn.momentum, affine=bn.affine,
                  track_running_stats=bn.track_running_stats, gamma_init=gamma_init,
                  device=ref.device, dtype=ref.dtype)
        with torch.no_grad():
            for name in ("running_mean", "running_var", "num_batches_tracked"):
                getattr(new, name).copy_(getattr(bn, name))
            if bn.affine:
                new.weight.copy_(bn.weight)
                new.bias.copy_(bn.bias)
        new.train(bn.training)
        return new

    def extra_repr(self) -> str:
        return super().extra_repr() + f", gamma={float(self.gamma.detach()):.4g}"


class LipschitzBatchNorm1d(_LipschitzBN, nn.BatchNorm1d):
    """γ-Lipschitz ``BatchNorm1d`` (LCNN §3.4.2): min(γ, ‖BN‖₂)·BN(x)/‖BN‖₂, γ ≥ 1 learnable."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = True,  # noqa: PLR0917 - drop-in for torch.nn.BatchNorm*d: same positional signature
                 track_running_stats: bool = True, gamma_init: float = PAPER_GAMMA, device=None, dtype=None):
        nn.BatchNorm1d.__init__(self, num_features, eps, momentum, affine, track_running_stats, device, dtype)
        self._setup_gamma(gamma_init)


class LipschitzBatchNorm2d(_LipschitzBN, nn.BatchNorm2d):
    """γ-Lipschitz ``BatchNorm2d`` (LCNN §3.4.2): min(γ, ‖BN‖₂)·BN(x)/‖BN‖₂, γ ≥ 1 learnable."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = True,  # noqa: PLR0917 - drop-in for torch.nn.BatchNorm*d: same positional signature
                 track_running_stats: bool = True, gamma_init: float = PAPER_GAMMA, device=None, dtype=None):
        nn.BatchNorm2d.__init__(self, num_features, eps, momentum, affine, track_running_stats, device, dtype)
        self._setup_gamma(gamma_init)
