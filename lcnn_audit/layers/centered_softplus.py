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

β = 0 gives exactly x/2.

Fused form. :func:`centered_softplus` is one ``torch.autograd.Function``
(:class:`_CenteredSoftplusFn`): its forward runs without recording a graph, with
g(z) = relu(z) + g(−|z|), g(−u) = log((1 + e^−u)/2) from ``exp`` and ``log`` only (torch's CPU
``log1p``, ``expm1`` and ``softplus`` kernels are not vectorised and measured ~40× slower per
element), and the same series below τ; its backward is written in closed form with
differentiable torch operations:

* ∂s₀/∂x = σ(βx), recomputed from x and β so that double backward (GradReg, CURE, input
  HVPs) differentiates it: ∂²s₀/∂x² = β·σ·(1 − σ);
* ∂s₀/∂β = h(|z|)/β², h(u) = −u·σ(−u) − log1p(expm1(−u)/2), for |z| ≥ τ, and x²·φ'(z)
  (the series) below. The composite's x·σ/β − s₀/β cancels for large βx (a 5e-4 relative
  error in fp32 at β = 1000); this form does not.

Two details keep these graph-free paths cheap without changing a result: u = |βx| is clamped
at 80 before ``exp`` (no bit changes, since (1 + e^−u)/2 rounds to ½ long before, and torch's CPU
``exp`` is ~15× slower where its result is subnormal or zero), and below fp64 the series keeps only the
terms fp32 can resolve (remainder under 0.12 of an fp32 ulp); the first-order backward computes
∂/∂x and ∂/∂β from one z = βx (forward 0.59×, forward+backward 0.66× on the CPU; docs/benchmarks.md).

Autograd thus records one node per activation instead of ~20 elementwise ops and their
saved tensors; a training step of the LCNN small CNN measured 1.9× faster on CPU
(docs/benchmarks.md). :func:`centered_softplus_composite` is the previous composite of torch
operations, kept as the reference the fused op is tested against (values, gradients and
HVPs agree to rounding) and for ``torch.func`` transforms, which do not see through a
``Function`` without a ``vmap`` rule.
"""

from __future__ import annotations

import math

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from ..errors import UsageError
from ..layer_defaults import DEFAULT_BETA

LOG2 = math.log(2.0)
_TAU = 0.1  # |βx| below this uses the series for φ(z) = g(z)/z
_EXP_CLAMP = 80.0  # e^−80 is a normal number in fp32; see _forward_value
# φ(z) = 1/2 + z·P(z²), P(w) = 1/8 − w/192 + w²/2880 − 17w³/645120 + 31w⁴/14515200
_SERIES = (1.0 / 8.0, -1.0 / 192.0, 1.0 / 2880.0, -17.0 / 645120.0, 31.0 / 14515200.0)



def _phi_series(z: torch.Tensor) -> torch.Tensor:
    w = z * z
    acc = torch.full_like(z, _SERIES[-1])
    for c in reversed(_SERIES[:-1]):
        acc = acc * w + c
    return 0.5 + z * acc


def _phi_prime_series(z: torch.Tensor) -> torch.Tensor:
    """φ'(z) = P(w) + 2w·P'(w), w = z², so that ∂s₀/∂β = x²·φ'(βx) (series branch)."""
    w = z * z
    acc = torch.full_like(z, (2 * len(_SERIES) - 1) * _SERIES[-1])
    for i in range(len(_SERIES) - 2, -1, -1):
        acc = acc * w + (2 * i + 1) * _SERIES[i]
    return acc


def _as_beta(x: torch.Tensor, beta: torch.Tensor | float) -> torch.Tensor:
    if isinstance(beta, (int, float)):
        if not beta >= 0:  # also catches NaN
            raise UsageError(f"centered softplus needs beta >= 0, got {beta}")
        return torch.tensor(float(beta), dtype=x.dtype, device=x.device)
    return beta.to(dtype=x.dtype, device=x.device)


def _safe_beta(beta: torch.Tensor) -> torch.Tensor:
    # β below √tiny (β = 0, or exp(log β) underflowing) is treated as √tiny: z = βx stays a normal
    # number and s₀ = x/2 + O(βx²) to full precision, without a 0/0
    return beta.clamp_min(torch.finfo(beta.dtype).tiny ** 0.5)


#: Horner coefficients (highest power first) of P(w) and of φ'(z) = Σᵢ (2i+1)·cᵢ·wⁱ, w = z².
_P_HORNER = tuple(reversed(_SERIES))
_PHI_PRIME_HORNER = tuple(reversed([(2 * i + 1) * c for i, c in enumerate(_SERIES)]))
#: Below fp64 the series is cut where its remainder is under a tenth of an fp32 unit roundoff
#: (6e-8) on |z| < τ: φ = 1/2 + z(1/8 − w/192) leaves |z|·w²/2880 ≤ 3.5e-9 (7e-9 relative), and
#: φ' = 1/8 − 3w/192 + 5w²/2880 leaves 119w³/645120 ≤ 1.9e-10 (1.5e-9 relative).
_P_HORNER_SHORT = _P_HORNER[-2:]
_PHI_PRIME_HORNER_SHORT = _PHI_PRIME_HORNER[-3:]


def _series_coeffs(dtype: torch.dtype) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Horner coefficients (P, φ') to full accuracy for ``dtype``."""
    if dtype == torch.float64:
        return _P_HORNER, _PHI_PRIME_HORNER
    return _P_HORNER_SHORT, _PHI_PRIME_HORNER_SHORT


def _horner_(w: torch.Tensor, coeffs: tuple[float, ...]) -> torch.Tensor:
    """Σ cᵢ wⁱ (``coeffs`` highest power first) in one fresh tensor, updated in place."""
    acc = w * coeffs[0]
    for c in coeffs[1:-1]:
        acc.add_(c).mul_(w)
    return acc.add_(coeffs[-1])


def _forward_value(x: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """s₀ without a graph: ``where(|z| < τ, x·φ(z), (relu(z) + g(−|z|))/β)``, g(−u) = log((1 + e^−u)/2)
    (accurate to rounding in absolute terms), reusing buffers in place (fresh CPU buffers cost page faults)."""
    z = x * b
    u = z.abs()
    small = u < _TAU
    # u ≤ 80 changes no bit ((1 + e^−u)/2 rounds to ½ beyond u ≈ 17 in fp32, 37 in fp64), and keeps exp
    # off arguments whose result is subnormal or zero, where the CPU kernel measured ~15× slower
    large = u.clamp_max_(_EXP_CLAMP).neg_().exp_().mul_(0.5).add_(0.5).log_().add_(z.relu()).div_(b)
    # x·φ(z) = x·(1/2 + z·P(z²)) = x·(1/2 + β·x·P(z²)); for huge z it is ±inf at most (never NaN), and discarded
    small_val = _horner_(z.mul_(z), _series_coeffs(x.dtype)[0]).mul_(x).mul_(b).add_(0.5).mul_(x)
    return torch.where(small, small_val, large, out=large)


def _grads_graph_free(x: torch.Tensor, b: torch.Tensor, grad: torch.Tensor | None, need_x: bool, need_beta: bool):
    """``(grad·∂s₀/∂x, ∂s₀/∂β)`` for a first-order backward (no graph), sharing z = βx and reusing
    buffers in place: ∂s₀/∂x = σ(z), and ∂s₀/∂β elementwise (the caller contracts it with ``grad``),
    h(u)/β² with h(u) = −u·σ(−u) − g(−u), σ(−u) = e/(1 + e), g(−u) = log((1 + e)/2), e = e^−u, u = |z|,
    and x²·φ'(z) (the series) for u < τ. u is clamped at 80 before the exp, which changes no bit
    and keeps the exp off subnormal or zero results (see :func:`_forward_value`)."""
    z = x * b
    # grad * σ, not σ.mul_(grad): under is_grads_batched (vmap over grad) the in-place form fails
    gx = grad * torch.sigmoid(z) if need_x else None
    if not need_beta:
        return gx, None
    u = z.abs()
    small = u < _TAU
    e = u.clamp_max(_EXP_CLAMP).neg_().exp_()
    one_plus = e + 1.0
    h = e.div_(one_plus).mul_(u).neg_().sub_(one_plus.mul_(0.5).log_()).div_(b * b)
    series = _horner_(z.mul_(z), _series_coeffs(x.dtype)[1]).mul_(x).mul_(x)  # x²·φ'(z)
    return gx, torch.where(small, series, h, out=h)


def _dbeta_graph_free(x: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """∂s₀/∂β elementwise, graph-free (see :func:`_grads_graph_free`)."""
    return _grads_graph_free(x, b, None, False, True)[1]


def _dbeta_differentiable(x: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """∂s₀/∂β elementwise, from differentiable ops (double backward)."""
    z = x * b
    small = z.abs() < _TAU
    z_small = torch.where(small, z, torch.zeros_like(z))  # keeps the unused branch finite
    # |z| ≥ τ: ∂s₀/∂β = h(|z|)/β² with h(u) = u·σ(u) − g(u) = −u·σ(−u) − g(−u), which (unlike
    # x·σ/β − s₀/β) does not cancel for large |z|; h is even in z
    u = torch.where(small, torch.ones_like(z), z.abs())
    h = -(u * torch.sigmoid(-u)) - torch.log(torch.exp(-u) * 0.5 + 0.5)
    return torch.where(small, x * x * _phi_prime_series(z_small), h / (b * b))


class _CenteredSoftplusFn(torch.autograd.Function):
    """s₀(x; β) with a closed-form, differentiable backward (see the module docstring)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, beta: torch.Tensor, kernels=None) -> torch.Tensor:
        kernels = kernels if beta.dim() == 0 else None  # compiled kernels take a scalar β
        ctx.save_for_backward(x, beta)
        ctx.kernels = kernels
        b = _safe_beta(beta)
        return kernels.forward(x, b) if kernels is not None else _forward_value(x, b)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, beta = ctx.saved_tensors
        b = _safe_beta(beta)
        graph = torch.is_grad_enabled()  # create_graph: every op must be differentiable (no in-place)
        need_x, need_b = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        fast = None if graph else ctx.kernels
        gx = gb = None
        if fast is not None:
            gx = fast.grad_x(x, b, grad) if need_x else None
            gb = fast.grad_beta(x, b, grad) if need_b else None
        elif graph:
            gx = grad * torch.sigmoid(x * b) if need_x else None
            if need_b:
                gb = grad * _dbeta_differentiable(x, b)
                gb = gb.sum_to_size(beta.shape) if beta.dim() else gb.sum()
        else:
            gx, d_beta = _grads_graph_free(x, b, grad, need_x, need_b)
            if need_b:
                gb = (grad * d_beta).sum_to_size(beta.shape) if beta.dim() else torch.dot(grad.reshape(-1),
                                                                                          d_beta.reshape(-1))
        return gx, gb, None


def centered_softplus(x: torch.Tensor, beta: torch.Tensor | float, kernels=None) -> torch.Tensor:
    """s₀(x; β) = (1/β)·log((1 + exp(βx))/2) (LCNN paper eq. 4), for β ≥ 0.

    ``beta`` is a float or a tensor broadcastable to ``x``; β = 0 gives x/2 (the limit).
    Curvature bound β (eq. 3); slope in (0, 1); second derivative ≤ β/4. One fused
    autograd node, differentiable to any order (see the module docstring). ``kernels``
    (:func:`lcnn_audit.layers.softplus_kernels.compiled_kernels`) runs the graph-free forward
    and first-order backward compiled.
    """
    if isinstance(beta, (int, float)) and beta == 0:
        return x / 2
    return _CenteredSoftplusFn.apply(x, _as_beta(x, beta), kernels)


def centered_softplus_composite(x: torch.Tensor, beta: torch.Tensor | float) -> torch.Tensor:
    """The same function as a composite of torch operations (the pre-fusion implementation):
    the reference :func:`centered_softplus` is tested against, and usable under ``torch.func``."""
    beta = _as_beta(x, beta)
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


torch.fx.wrap("centered_softplus")  # a leaf for torch.fx: autograd.Function.apply cannot take Proxies


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
        #: compiled kernels (``compiled_kernels``) or None for eager; set by ``train(compile_kernels=True)``
        self.kernels = None

    @property
    def beta(self) -> torch.Tensor:
        """β = exp(log_beta) > 0."""
        return self.log_beta.exp()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """s₀(x) = softplus_β(x) − log(2)/β (LCNN eq. 4)."""
        return centered_softplus(x, self.beta, getattr(self, "kernels", None))

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
        """Module repr arguments."""
        return f"beta={float(self.beta.detach()):.4g}"
