"""Curvature and robustness penalties added to the training loss.

Every penalty is a plain function ``penalty(batch, **weights) -> scalar tensor`` that keeps
its autograd graph, so ``(batch.loss + Σ penalties).backward()`` trains through it. The
functions return the *weighted* term (the λ is an argument), which is what the training
log reports. ``PENALTIES`` maps the CLI names to them.

``PenaltyBatch`` runs the forward pass once and builds the input gradient ∇ₓℓ lazily, also
once, so GradReg and CURE share it. ℓ is the per-sample cross-entropy
(:func:`lcnn_audit.geometry.objective.per_sample_objective`, evaluated in float64 on the
logits); "mean" below is the mean over the batch. Penalties are computed on the training
forward pass, i.e. with the model in whatever mode the loop put it (train mode, so
BatchNorm uses batch statistics and a sample's input gradient includes the small
cross-sample terms through them, as in the reference implementations); in eval mode, or
without BatchNorm, every per-sample quantity is exact.

References
----------
* LCNN: Srinivas et al., *Efficient Training of Low-Curvature Neural Networks*, NeurIPS
  2022, §3.5 eq. (5); λβ = 1e-4, λγ = 1e-5, λgrad = 1e-3 from the arXiv version's
  appendix E ("Flatten the Curve").
* GradReg: Ross & Doshi-Velez (AAAI 2018), as used in the LCNN paper §5.
* CURE: Moosavi-Dezfooli et al., *Robustness via curvature regularization, and vice
  versa*, CVPR 2019, §4.
* Jacobian and cross-Lipschitz: Guo et al., *On Connections between Regularizations for
  Improving DNN Robustness*, §3.2 (μ² = ‖J‖_F², ν² = Σᵢⱼ‖∇gᵢ − ∇gⱼ‖²/K²).
"""

from __future__ import annotations

import torch
from torch import nn

from . import rng
from .errors import ModelError
from .geometry.objective import per_sample_objective
from .training.config import PenaltyConfig  # noqa: F401 - its former home (torch-free there, for the CLI)

# random-stream ids for the projection penalties (see lcnn_audit.rng)
STREAM_JACOBIAN, STREAM_CROSS_LIPSCHITZ = 101, 102


class PenaltyBatch:
    """One training batch as the penalties see it.

    The forward pass runs once at construction (``logits``, per-sample ``losses``);
    :meth:`input_grad` builds ∇ₓℓᵢ with ``create_graph=True`` on first use and caches it.
    ``index`` (dataset indices) and ``seed`` make the random projections a pure function
    of (seed, sample), so they do not depend on batch composition and a resumed run draws
    the same ones.
    """

    def __init__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor | None = None,  # noqa: PLR0917 - public constructor, kept as released
                 seed: int = 0, track_input: bool = True):
        self.model = model
        self.x = x.detach().requires_grad_(track_input)
        self.y = y
        self.index = index if index is not None else torch.arange(x.shape[0], device=x.device)
        self.seed = int(seed)
        self.logits = model(self.x)
        if not isinstance(self.logits, torch.Tensor) or self.logits.ndim != 2:
            raise ModelError("the model must return (N, C) logits for training (use --output-key to select them)")
        self.losses = per_sample_objective(self.logits, y, "loss")
        self._grad: torch.Tensor | None = None

    @property
    def loss(self) -> torch.Tensor:
        """Mean cross-entropy of the batch (the unpenalised training loss)."""
        return self.losses.mean().to(self.logits.dtype)

    def input_grad(self) -> torch.Tensor:
        """∇ₓℓᵢ for every sample, shape of ``x``, differentiable (double backprop)."""
        if self._grad is None:
            if not self.x.requires_grad:
                raise RuntimeError("PenaltyBatch was built with track_input=False; input gradients need it")
            (self._grad,) = torch.autograd.grad(self.losses.sum(), self.x, create_graph=True)
        return self._grad


def _sq_norms(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], -1).pow(2).sum(1)


# --------------------------------------------------------------------------- LCNN (eq. 5)


def lcnn_parameters(model: nn.Module) -> tuple[list[nn.Module], list[nn.Module]]:
    """(centered-softplus modules, γ-Lipschitz batch-norm modules) of ``model``."""
    from .layers import CenteredSoftplus, LipschitzBatchNorm1d, LipschitzBatchNorm2d  # noqa: PLC0415

    softplus = [m for m in model.modules() if isinstance(m, CenteredSoftplus)]
    bn = [m for m in model.modules() if isinstance(m, (LipschitzBatchNorm1d, LipschitzBatchNorm2d))]
    return softplus, bn


def lcnn_penalty(batch: PenaltyBatch, *, lambda_beta: float, lambda_gamma: float) -> torch.Tensor:
    """R_f = λβ·Σᵢ βᵢ + λγ·Σⱼ log γⱼ over the centered-softplus (β) and γ-Lipschitz
    batch-norm (γ) layers (LCNN paper, NeurIPS 2022, §3.5 eq. 5; the paper uses
    λβ = 1e-4, λγ = 1e-5). Per-channel β or γ contribute every entry.

    The arXiv version's eq. 5 penalises Σ log β instead; that form is unbounded below as
    β → 0, so the NeurIPS form (the one the issue states) is the one implemented.
    """
    softplus, bn = lcnn_parameters(batch.model)
    if not softplus and not bn:
        raise ModelError("the LCNN penalty needs CenteredSoftplus / LipschitzBatchNorm layers and the model has "
                         "none; convert it first (lcnn-audit convert) or drop --lcnn/--lambda-beta/--lambda-gamma")
    ref = batch.logits
    total = ref.new_zeros(())
    if lambda_beta:
        for m in softplus:
            total = total + lambda_beta * m.beta.sum()
    if lambda_gamma:
        for m in bn:
            total = total + lambda_gamma * torch.log(m.gamma).sum()
    return total


# --------------------------------------------------------------------------- GradReg


def gradreg_penalty(batch: PenaltyBatch, *, weight: float) -> torch.Tensor:
    """λ · meanᵢ ‖∇ₓℓ(xᵢ, yᵢ)‖₂², by double backpropagation (GradReg, Ross & Doshi-Velez;
    LCNN paper §5 with λgrad = 1e-3, arXiv appendix E)."""
    return weight * _sq_norms(batch.input_grad()).mean()


# --------------------------------------------------------------------------- CURE


def cure_direction(grad: torch.Tensor) -> torch.Tensor:
    """z = sign(∇ℓ)/‖sign(∇ℓ)‖₂ per sample, detached (CURE §4). A zero gradient gives z = 0."""
    s = torch.sign(grad.detach())
    norm = s.reshape(s.shape[0], -1).norm(dim=1).clamp_min(1.0)
    return s / norm.view(-1, *([1] * (s.dim() - 1)))


def cure_penalty(batch: PenaltyBatch, *, weight: float, h: float) -> torch.Tensor:
    """λ · meanᵢ ‖∇ℓ(xᵢ + h zᵢ) − ∇ℓ(xᵢ)‖₂², z = sign(∇ℓ)/‖sign(∇ℓ)‖ (CURE, Moosavi-Dezfooli
    et al. CVPR 2019, §4: the finite-difference Hessian along z, with the 1/h² absorbed
    into λ as in the paper). z is held fixed (no gradient flows through the sign); both
    gradients are differentiated. x + hz is not clipped to [0, 1] (a property of the loss
    surface, not an attack). h = 0 gives exactly 0 (the start of CURE's h schedule).
    """
    g = batch.input_grad()
    if h == 0:
        return g.sum() * 0.0
    z = cure_direction(g)
    x2 = (batch.x.detach() + h * z).requires_grad_(True)
    losses2 = per_sample_objective(batch.model(x2), batch.y, "loss")
    (g2,) = torch.autograd.grad(losses2.sum(), x2, create_graph=True)
    return weight * _sq_norms(g2 - g).mean()


# --------------------------------------------------------------------------- Jacobian / cross-Lipschitz


def _vjp_sq_norms(batch: PenaltyBatch, probes: torch.Tensor) -> torch.Tensor:
    """‖Jᵢᵀ uₚᵢ‖² for probes u of shape (P, B, C): (P, B), differentiable."""
    probes = probes.to(batch.logits.dtype)
    if len(probes) == 1:
        (g,) = torch.autograd.grad(batch.logits, batch.x, grad_outputs=probes[0], create_graph=True)
        return g.flatten(1).pow(2).sum(1)[None]
    try:
        (g,) = torch.autograd.grad(batch.logits, batch.x, grad_outputs=probes, create_graph=True,
                                   is_grads_batched=True)
    except RuntimeError:  # an op without a batching rule: one VJP per probe
        g = torch.stack([torch.autograd.grad(batch.logits, batch.x, grad_outputs=p,
                                             create_graph=True, retain_graph=True)[0] for p in probes])
    return g.flatten(2).pow(2).sum(2)


def _probes(batch: PenaltyBatch, probes: int, stream: int) -> torch.Tensor:
    """(P, B, C) probes √C·v with v uniform on the unit sphere of R^C, so E[uuᵀ] = I.
    P = 0 gives the C basis vectors (the exact sum). Drawn per sample from (seed, index)."""
    B, C = batch.logits.shape
    if probes == 0:
        return torch.eye(C, device=batch.x.device)[:, None, :].expand(C, B, C)
    z = rng.per_sample_normal(batch.seed, stream, batch.index, (probes, C)).to(batch.x.device)
    u = z / z.norm(dim=2, keepdim=True).clamp_min(1e-12) * (C ** 0.5)
    return u.transpose(0, 1)


def _combine(sq: torch.Tensor, probes: int) -> torch.Tensor:
    """Per-sample ‖·‖_F² from (P, B) projections: the sum over basis vectors (exact) or the
    mean over random probes (estimate)."""
    return sq.sum(0) if probes == 0 else sq.mean(0)


def jacobian_penalty(batch: PenaltyBatch, *, weight: float, probes: int = 1) -> torch.Tensor:
    """λ · meanᵢ ‖Jᵢ‖_F², J the Jacobian of the logits w.r.t. the input (Jacobian
    regularisation, Guo et al. §3.2 μ² = ‖V‖_F²). With ``probes`` = P > 0 it is the unbiased
    random-projection estimate (1/P) Σₚ ‖Jᵀuₚ‖², u = √C·v, v uniform on the sphere
    (Hoffman et al. 2019's estimator); ``probes`` = 0 is exact (C vector-Jacobian products).
    """
    sq = _vjp_sq_norms(batch, _probes(batch, probes, STREAM_JACOBIAN))
    return weight * _combine(sq, probes).mean()


def cross_lipschitz_penalty(batch: PenaltyBatch, *, weight: float, probes: int = 1) -> torch.Tensor:
    """λ · meanᵢ νᵢ², ν² = Σⱼₖ ‖∇gⱼ − ∇gₖ‖² / K² (cross-Lipschitz, Guo et al. §3.2 and §4).

    Uses ν² = (2/K)‖PJ‖_F² with P = I − 11ᵀ/K (see :mod:`lcnn_audit.geometry.jacobian`):
    exact with ``probes`` = 0 (K VJPs), else the unbiased estimate (2/K)(1/P)Σₚ‖JᵀP uₚ‖².
    """
    u = _probes(batch, probes, STREAM_CROSS_LIPSCHITZ)
    sq = _vjp_sq_norms(batch, u - u.mean(2, keepdim=True))  # ‖JᵀPu‖²
    K = batch.logits.shape[1]
    return weight * (2.0 / K) * _combine(sq, probes).mean()


#: Penalty registry: name -> function(batch, **weights) -> weighted scalar term.
PENALTIES = {
    "lcnn": lcnn_penalty,
    "gradreg": gradreg_penalty,
    "cure": cure_penalty,
    "jacobian": jacobian_penalty,
    "cross_lipschitz": cross_lipschitz_penalty,
}
