"""Spectral normalisation of linear and convolution layers (LCNN paper §3.4.1).

Each layer's weight W is re-parametrised as W/σ(W), σ the spectral norm of the linear map
the layer applies, so the layer is 1-Lipschitz (Srinivas et al., NeurIPS 2022, §3.4.1).
The normalisation is registered with :mod:`torch.nn.utils.parametrize`: the module keeps
its type, ``module.weight`` is the normalised weight and the raw weight lives in
``module.parametrizations.weight.original``.

* ``nn.Linear``: :func:`torch.nn.utils.parametrizations.spectral_norm` (Miyato et al.,
  ICLR 2018), whose singular vectors are set to the exact top pair at conversion.
* ``nn.Conv1d/2d/3d``: "real" spectral normalisation (Ryu et al., ICML 2019): power
  iteration on the convolution *operator* on the layer's actual input size, v ← Aᵀu/‖Aᵀu‖,
  u ← Av/‖Av‖, with A = conv and Aᵀ = conv_transpose using the layer's stride, padding,
  dilation and groups. ``output_padding`` = (n + 2p − d(k−1) − 1) mod s per spatial dim
  makes conv_transpose return exactly the input size, so Aᵀ is the true adjoint also for
  strided layers. The singular vectors are buffers of the input shape (v) and of the
  *output* shape (u); the original implementation sized both from the input and so was
  wrong for stride 2. String padding ('same') and non-zero padding modes use the autograd
  adjoint of the layer's own forward instead of conv_transpose.

At conversion the top singular pair is computed to convergence (:func:`top_singular`:
Lanczos on AᵀA with full re-orthogonalisation, i.e. power iteration accelerated in its own
Krylov space, stopped on a residual certificate), so a converted layer has spectral norm 1
before any training. In train mode each forward pass then runs ``n_power_iterations``
power steps, as :func:`torch.nn.utils.parametrizations.spectral_norm` does.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from ..errors import UsageError
from ..layer_defaults import DEFAULT_MAX_ITER, DEFAULT_TOL
from ..nn_kinds import CONVS

_CONV_FN = {1: (F.conv1d, F.conv_transpose1d), 2: (F.conv2d, F.conv_transpose2d), 3: (F.conv3d, F.conv_transpose3d)}


# --------------------------------------------------------------------------- top singular pair


@dataclass
class SingularResult:
    """Top singular value σ of a linear operator A with unit vectors u ≈ Av/σ, v."""

    sigma: float
    u: torch.Tensor
    v: torch.Tensor
    iterations: int
    converged: bool
    residual: float  # ‖AᵀAv − σ²v‖ / σ² at the end

    def to_dict(self) -> dict:
        """JSON form."""
        return {"sigma": self.sigma, "iterations": self.iterations, "converged": self.converged,
                "residual": self.residual}


def _unit(t: torch.Tensor) -> torch.Tensor:
    n = t.norm()
    return t / n if n > 0 else t


@torch.no_grad()
def top_singular(op: Callable[[torch.Tensor], torch.Tensor], adj: Callable[[torch.Tensor], torch.Tensor],
                 v0: torch.Tensor, *, tol: float = DEFAULT_TOL, max_iter: int = DEFAULT_MAX_ITER,
                 cycle: int = 64) -> SingularResult:
    """Largest singular value of A (``op``, adjoint ``adj``) from the start vector ``v0``.

    Lanczos on AᵀA with full re-orthogonalisation and explicit restarts every ``cycle``
    steps from the current top Ritz vector. It stops when the Ritz pair (θ, y) has residual
    ‖AᵀAy − θy‖ ≤ tol·θ, which certifies an eigenvalue of AᵀA within tol·θ of θ (the
    top one unless the start vector is orthogonal to it); ``max_iter`` bounds the number of
    AᵀA products. Ritz values never exceed σ², so σ is approached from below.
    """
    if max_iter < 1:
        raise UsageError("max_iter must be >= 1")
    shape = v0.shape
    v = v0.reshape(-1)
    if v.norm() == 0:
        v = torch.ones_like(v)
    v = _unit(v)
    done = 0
    residual = math.inf
    converged = False
    while done < max_iter and not converged:
        m = min(cycle, max_iter - done)
        Q = v.new_zeros(m + 1, v.numel())
        Q[0] = v
        alphas: list[float] = []
        betas: list[float] = []
        y = torch.ones(1, dtype=torch.float64)
        for j in range(m):
            w = adj(op(Q[j].view(shape))).reshape(-1)
            done += 1
            alphas.append(float(torch.dot(Q[j], w)))
            for _ in range(2):  # full re-orthogonalisation, twice is enough
                w = w - Q[: j + 1].T @ (Q[: j + 1] @ w)
            beta = float(w.norm())
            T = torch.diag(torch.tensor(alphas, dtype=torch.float64))
            if betas:
                off = torch.tensor(betas, dtype=torch.float64)
                T = T + torch.diag(off, 1) + torch.diag(off, -1)
            evals, evecs = torch.linalg.eigh(T)
            theta = float(evals[-1])
            y = evecs[:, -1]
            residual = beta * abs(float(y[-1])) / max(theta, 1e-300)
            scale = max(abs(a) for a in alphas) or 1.0
            if residual <= tol or beta <= 1e-12 * scale:  # converged, or an invariant subspace
                converged = True
                break
            if j + 1 < m:
                betas.append(beta)
                Q[j + 1] = w / beta
        k = y.numel()
        v = _unit((Q[:k].T.double() @ y.to(Q.device)).to(v.dtype))
    av = op(v.view(shape))
    sigma = float(av.norm())
    u = _unit(av)
    return SingularResult(sigma=sigma, u=u, v=v.view(shape), iterations=done, converged=converged,
                          residual=float(residual))


# --------------------------------------------------------------------------- convolution operator


def _tuple(v, n: int) -> tuple[int, ...]:
    return tuple(v) if isinstance(v, (tuple, list)) else (v,) * n


class ConvGeometry:
    """The linear map of a convolution layer (bias excluded) on a fixed input size.

    ``apply(v, w)`` is exactly the layer's forward without bias; ``adjoint(u, w)`` is its
    transpose: conv_transpose with ``output_padding`` chosen so that it returns the input
    size, or (string padding, non-zero padding modes) the autograd vector-Jacobian product.
    """

    def __init__(self, conv: nn.Module, input_shape: tuple[int, ...]):
        nd = conv.weight.ndim - 2
        if nd not in _CONV_FN:
            raise UsageError(f"unsupported convolution with {nd} spatial dims")
        self.nd = nd
        self.input_shape = tuple(int(s) for s in input_shape)
        if len(self.input_shape) != nd + 1:
            raise UsageError(f"{type(conv).__name__} needs an input shape (C, {'spatial, ' * nd}) without the "
                             f"batch dim; got {self.input_shape}")
        in_ch = conv.weight.shape[1] * conv.groups
        if self.input_shape[0] != in_ch:
            raise UsageError(f"input shape {self.input_shape} has {self.input_shape[0]} channels but the "
                             f"convolution expects {in_ch}")
        self.stride = _tuple(conv.stride, nd)
        self.dilation = _tuple(conv.dilation, nd)
        self.groups = int(conv.groups)
        self.padding = conv.padding if isinstance(conv.padding, str) else _tuple(conv.padding, nd)
        self.padding_mode = conv.padding_mode
        self.reversed_padding = tuple(getattr(conv, "_reversed_padding_repeated_twice", ()))
        self._fwd, self._tr = _CONV_FN[nd]
        with torch.no_grad():
            probe = torch.zeros((1, *self.input_shape), dtype=conv.weight.dtype, device=conv.weight.device)
            self.output_shape = tuple(self.apply(probe, conv.weight.detach()).shape[1:])
        kernel = conv.weight.shape[2:]
        self.use_transpose = self.padding_mode == "zeros" and not isinstance(self.padding, str)
        self.output_padding = tuple(
            (self.input_shape[1 + i] + 2 * self.padding[i] - self.dilation[i] * (kernel[i] - 1) - 1) % self.stride[i]
            for i in range(nd)) if self.use_transpose else (0,) * nd

    def apply(self, v: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """The convolution (no bias) of ``v`` with ``w``, padding as the layer does."""
        if self.padding_mode != "zeros":
            v = F.pad(v, self.reversed_padding, mode=self.padding_mode)
            return self._fwd(v, w, None, self.stride, 0, self.dilation, self.groups)
        return self._fwd(v, w, None, self.stride, self.padding, self.dilation, self.groups)

    def adjoint(self, u: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """The adjoint of :meth:`apply` (a transposed convolution, or its VJP)."""
        if self.use_transpose:
            return self._tr(u, w, None, self.stride, self.padding, self.output_padding, self.groups, self.dilation)
        with torch.enable_grad():
            x = torch.zeros((u.shape[0], *self.input_shape), dtype=u.dtype, device=u.device, requires_grad=True)
            (g,) = torch.autograd.grad(self.apply(x, w.detach()), x, grad_outputs=u)
        return g

    def describe(self) -> dict:
        """JSON form of the geometry."""
        return {"input_shape": list(self.input_shape), "output_shape": list(self.output_shape),
                "stride": list(self.stride), "dilation": list(self.dilation), "groups": self.groups,
                "padding": self.padding if isinstance(self.padding, str) else list(self.padding),
                "padding_mode": self.padding_mode, "output_padding": list(self.output_padding)}


def conv_operator_norm(conv: nn.Module, input_shape: tuple[int, ...], *, tol: float = DEFAULT_TOL,
                       max_iter: int = DEFAULT_MAX_ITER, seed: int = 0, dtype: torch.dtype | None = None
                       ) -> SingularResult:
    """Spectral norm of the convolution operator of ``conv`` (current ``conv.weight``) on
    inputs of ``input_shape`` (C, *spatial), by :func:`top_singular` (in ``dtype``, default
    the weight's)."""
    geo = ConvGeometry(conv, input_shape)
    w = conv.weight.detach()
    w = w.to(dtype) if dtype is not None else w
    gen = torch.Generator().manual_seed(seed)
    v0 = torch.randn((1, *geo.input_shape), generator=gen, dtype=torch.float64).to(w.device, w.dtype)
    return top_singular(lambda v: geo.apply(v, w), lambda u: geo.adjoint(u, w), v0, tol=tol, max_iter=max_iter)


def matrix_norm(weight: torch.Tensor, *, tol: float = DEFAULT_TOL, max_iter: int = DEFAULT_MAX_ITER,
                exact_flops: float = 2.0**28, seed: int = 0) -> SingularResult:
    """Spectral norm of a matrix (``weight`` flattened to (rows, -1)): exact SVD (float64)
    when it costs at most ``exact_flops`` (min side² × max side), else :func:`top_singular`."""
    W = weight.detach().reshape(weight.shape[0], -1)
    if min(W.shape) ** 2 * max(W.shape) <= exact_flops:
        U, S, Vh = torch.linalg.svd(W.double(), full_matrices=False)
        return SingularResult(sigma=float(S[0]), u=U[:, 0].to(W.dtype), v=Vh[0].to(W.dtype), iterations=0,
                              converged=True, residual=0.0)
    gen = torch.Generator().manual_seed(seed)
    v0 = torch.randn(W.shape[1], generator=gen, dtype=torch.float64).to(W.device, W.dtype)
    return top_singular(lambda v: W @ v, lambda u: W.T @ u, v0, tol=tol, max_iter=max_iter)


# --------------------------------------------------------------------------- parametrisations


class _DivideBySigma(torch.autograd.Function):
    """``W / σ`` for a σ(W) linear in W, with ``G = ∂σ/∂W`` given: one autograd node.

    Backward is ∂L/∂W = (g − (Σ g⊙W / σ)·G) / σ, one dot product and two passes over the
    weight, where autograd's generic ``weight / sigma`` (with σ's own graph) takes about
    eight weight-sized passes and temporaries: on a ResNet-18 they cost more than the
    convolutions' own elementwise work (``docs/benchmarks.md``, LCNN step). σ is exactly
    linear in W (σ = uᵀ conv(v; W) with u, v fixed buffers), so G carries all of σ's
    dependence on W. First-order only (``once_differentiable``): no audit or penalty
    differentiates twice with respect to the weights.
    """

    @staticmethod
    def forward(ctx, weight: torch.Tensor, sigma: torch.Tensor, grad_sigma: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(weight, sigma, grad_sigma)
        return weight / sigma

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g: torch.Tensor):
        weight, sigma, grad_sigma = ctx.saved_tensors
        coef = torch.dot(g.reshape(-1), weight.reshape(-1)) / sigma  # Σ g⊙W / σ, no weight-sized temporary
        out = torch.addcmul(g, grad_sigma, coef, value=-1.0)
        return out.div_(sigma), None, None


class ConvSpectralNorm(nn.Module):
    """Parametrisation W ↦ W/σ, σ = uᵀ·conv(v; W) from power iteration on the convolution
    operator (Ryu et al., ICML 2019; LCNN §3.4.1). Buffers ``_u`` (1, C_out, *out_spatial)
    and ``_v`` (1, C_in, *in_spatial) are the left/right singular vectors."""

    def __init__(self, conv: nn.Module, input_shape: tuple[int, ...], n_power_iterations: int = 1,
                 eps: float = 1e-12, seed: int = 0):
        super().__init__()
        if n_power_iterations < 0:
            raise UsageError(f"n_power_iterations must be >= 0, got {n_power_iterations}")
        self.geometry = ConvGeometry(conv, input_shape)
        self.n_power_iterations = int(n_power_iterations)
        self.eps = eps
        w = conv.weight.detach()
        gen = torch.Generator().manual_seed(seed)
        u = torch.randn((1, *self.geometry.output_shape), generator=gen).to(w.device, w.dtype)
        v = torch.randn((1, *self.geometry.input_shape), generator=gen).to(w.device, w.dtype)
        self.register_buffer("_u", F.normalize(u.flatten(), dim=0, eps=eps).view_as(u))
        self.register_buffer("_v", F.normalize(v.flatten(), dim=0, eps=eps).view_as(v))

    @torch.no_grad()
    def _power_method(self, weight: torch.Tensor, n: int) -> None:
        for _ in range(n):
            v = self.geometry.adjoint(self._u, weight)
            self._v.copy_(v / v.norm().clamp_min(self.eps))
            u = self.geometry.apply(self._v, weight)
            self._u.copy_(u / u.norm().clamp_min(self.eps))

    @torch.no_grad()
    def converge(self, weight: torch.Tensor, tol: float = DEFAULT_TOL, max_iter: int = DEFAULT_MAX_ITER
                 ) -> SingularResult:
        """Set ``_u``, ``_v`` to the converged top singular pair of ``weight``'s operator."""
        w = weight.detach()
        res = top_singular(lambda v: self.geometry.apply(v, w), lambda u: self.geometry.adjoint(u, w), self._v,
                           tol=tol, max_iter=max_iter)
        self._v.copy_(res.v.view_as(self._v))
        self._u.copy_(res.u.view_as(self._u))
        return res

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        """W / σ(W), σ by power iteration on the convolution operator (one step per training forward)."""
        if self.training and self.n_power_iterations > 0:
            self._power_method(weight.detach(), self.n_power_iterations)
        u = self._u.clone(memory_format=torch.contiguous_format)
        v = self._v.clone(memory_format=torch.contiguous_format)
        if not (torch.is_grad_enabled() and weight.requires_grad):
            return weight / torch.sum(u * self.geometry.apply(v, weight))
        # σ = uᵀ A(v; W) is linear in W: its gradient G = ∂σ/∂W (a batch-1 convolution gradient) is all
        # the backward needs
        w = weight.detach().requires_grad_(True)
        sigma = torch.sum(u * self.geometry.apply(v, w))
        (grad_sigma,) = torch.autograd.grad(sigma, w)
        return _DivideBySigma.apply(weight, sigma.detach(), grad_sigma)

    def extra_repr(self) -> str:
        """Module repr arguments."""
        g = self.geometry
        return (f"input_shape={g.input_shape}, output_shape={g.output_shape}, "
                f"n_power_iterations={self.n_power_iterations}")


def is_parametrized(module: nn.Module, name: str = "weight") -> bool:
    """Whether ``module.name`` is parametrised (torch parametrize or the old ``weight_orig`` hooks)."""
    return parametrize.is_parametrized(module, name) or hasattr(module, f"{name}_orig")


def spectral_norm_conv(conv: nn.Module, input_shape: tuple[int, ...], *, n_power_iterations: int = 1,
                       eps: float = 1e-12, converge: bool = True, tol: float = DEFAULT_TOL,
                       max_iter: int = DEFAULT_MAX_ITER) -> SingularResult | None:
    """Register :class:`ConvSpectralNorm` on ``conv.weight`` (in place) for inputs of
    ``input_shape`` (C, *spatial). With ``converge`` the singular vectors are computed to
    convergence, so the layer's spectral norm is 1 at once; returns that result, whose
    ``sigma`` is the spectral norm of the original weight."""
    if not isinstance(conv, CONVS):
        raise UsageError(f"spectral_norm_conv needs a Conv1d/2d/3d, got {type(conv).__name__}")
    if is_parametrized(conv):
        raise UsageError(f"{type(conv).__name__}.weight is already parametrised")
    par = ConvSpectralNorm(conv, input_shape, n_power_iterations=n_power_iterations, eps=eps)
    res = par.converge(conv.weight, tol=tol, max_iter=max_iter) if converge else None
    parametrize.register_parametrization(conv, "weight", par)
    return res


def spectral_norm_linear(linear: nn.Linear, *, n_power_iterations: int = 1, eps: float = 1e-12,
                         converge: bool = True, tol: float = DEFAULT_TOL,
                         max_iter: int = DEFAULT_MAX_ITER) -> SingularResult | None:
    """:func:`torch.nn.utils.parametrizations.spectral_norm` on ``linear.weight`` (in
    place); with ``converge`` its ``_u``/``_v`` are set to the top singular pair
    (:func:`matrix_norm`: exact SVD for small matrices, else :func:`top_singular`)."""
    if not isinstance(linear, nn.Linear):
        raise UsageError(f"spectral_norm_linear needs an nn.Linear, got {type(linear).__name__}")
    if is_parametrized(linear):
        raise UsageError("Linear.weight is already parametrised")
    res = matrix_norm(linear.weight, tol=tol, max_iter=max_iter) if converge else None
    torch.nn.utils.parametrizations.spectral_norm(linear, n_power_iterations=n_power_iterations, eps=eps)
    if res is not None:
        sn = linear.parametrizations.weight[0]
        with torch.no_grad():
            sn._u.copy_(res.u.reshape(-1))
            sn._v.copy_(res.v.reshape(-1))
    return res


def spectral_parametrization(module: nn.Module) -> nn.Module | None:
    """The spectral-norm parametrisation on ``module.weight``, if there is one."""
    if not parametrize.is_parametrized(module, "weight"):
        return None
    for p in module.parametrizations.weight:
        if isinstance(p, ConvSpectralNorm) or type(p).__name__ == "_SpectralNorm":
            return p
    return None


@torch.no_grad()
def refit_spectral_norms(model: nn.Module, *, tol: float = DEFAULT_TOL, max_iter: int = DEFAULT_MAX_ITER
                         ) -> list[SingularResult]:
    """Set every spectral-norm parametrisation's singular vectors to the converged top pair of
    its current raw weight (:func:`top_singular` / :func:`matrix_norm`), so that each layer's
    spectral norm is 1 to ``tol`` again after training, where one power step per forward
    (LCNN §3.4.1, as the paper's code) only tracks it. Returns one result per layer."""
    out = []
    for module in model.modules():
        par = spectral_parametrization(module)
        if par is None:
            continue
        raw = module.parametrizations.weight.original
        if isinstance(par, ConvSpectralNorm):
            out.append(par.converge(raw, tol=tol, max_iter=max_iter))
        elif raw.ndim > 1:  # torch's _SpectralNorm on a matrix (1-D weights are normalised exactly)
            res = matrix_norm(par._reshape_weight_to_matrix(raw), tol=tol, max_iter=max_iter)
            par._u.copy_(res.u.reshape(-1))
            par._v.copy_(res.v.reshape(-1))
            out.append(res)
    return out
