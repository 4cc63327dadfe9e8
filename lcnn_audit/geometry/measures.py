"""Per-sample input-geometry measures of a batch, computed together.

Fields (LCNN paper §3.1 unless noted), for the per-sample objective f (see ``objective``):

* ``grad_norm``       ‖∇ₓf‖₂
* ``hessian_norm``    ‖∇²ₓf‖₂, the largest |eigenvalue|
* ``curvature``       C_f = ‖∇²ₓf‖₂ / (‖∇ₓf‖₂ + ε)
* ``hessian_eigs``    the K eigenvalues largest in magnitude, signed (CURE §2, Fig. 2)
* ``alignment``       |∇f·u₁| / ‖∇f‖ with u₁ the top eigenvector (CURE Remark 3)
* ``hessian_fro``     ‖∇²ₓf‖_F (CURE §4): exact part on the Krylov basis plus a Hutchinson
                      estimate of the remainder (Hutch++ style), or exact for Gauss-Newton
* ``fd_curvature``    ‖∇f(x+hz) − ∇f(x)‖, z = sign(∇f)/‖sign(∇f)‖ (CURE §4, Eq. 6 direction)
* ``jacobian_fro``    ‖J‖_F of the logits (Guo et al.)
* ``cross_lipschitz`` ν² = Σᵢⱼ‖∇gᵢ − ∇gⱼ‖²/K² (Guo et al.)
* ``converged``, ``iterations`` (HVPs used by the sample)

Methods: ``lanczos`` (default for smooth nets), ``power`` (plain power iteration with the
largest-|eigenvalue| estimate ‖Hv‖, for comparison), ``reference`` (a port of the LCNN
reference code's estimator, random start and Rayleigh quotient, biased low), and
``gauss-newton``, exact for piecewise-linear nets; ``auto`` picks gauss-newton when the
model is structurally piecewise linear, has at most ``gn_max_classes`` classes, and a
numerical check (one HVP against JᵀAJ v) confirms it, otherwise lanczos.
"""

from __future__ import annotations

import torch
from torch import nn

from .. import rng
from ..errors import UsageError
from ..model.wrapper import require_finite
from .gauss_newton import gauss_newton_hvp, gauss_newton_spectrum, is_piecewise_linear
from .hvp import BatchedHVP, CompactingHVP
from .jacobian import jacobian_measures, jacobian_measures_estimate, logit_jacobian
from .lanczos import SpectralResult, lanczos, power_iteration, reference_power_iteration
from .objective import input_gradient, make_objective, resolve_labels
from .options import JACOBIAN_MODES, METHODS, CurvatureOptions  # noqa: F401 - their former home

# random-stream ids (rng.per_sample_*): independent draws per purpose
STREAM_START, STREAM_RESTART, STREAM_FRO, STREAM_JAC, STREAM_CHECK = 1, 2, 3, 4, 5


def _flat(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], -1)


def _start_vectors(g: torch.Tensor, index: torch.Tensor, opts: CurvatureOptions, stream: int) -> torch.Tensor:
    """Unit gradient direction plus an equal-weight random direction (per-sample seeded).

    The gradient lies in the dominant Gauss-Newton subspace (∇f = Jᵀ(p − e_y)), so it is a
    warm start; the random part keeps every eigen-direction in the Krylov space."""
    gf = _flat(g)
    z = rng.per_sample_sphere(opts.seed, stream, index, (gf.shape[1],), dtype=gf.dtype).to(gf.device)
    gn = gf / gf.norm(dim=1, keepdim=True).clamp_min(torch.finfo(gf.dtype).tiny)
    return gn + z


def compute_geometry(model: nn.Module, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor,
                     opts: CurvatureOptions, *, vectors: bool = False) -> tuple[dict[str, torch.Tensor], str]:
    """All per-sample fields for one batch; returns (fields, method used).

    ``model`` must already be in measurement state (see ``state.measurement_state``). With
    ``vectors``, also ``gradient`` ∇f and ``top_vector`` u₁ (the unit eigenvector of the
    eigenvalue of largest magnitude, ``hessian_eigs``' first), shaped like ``x``.
    """
    labels = resolve_labels(model, x, y, opts.label)
    objective = make_objective(model, labels, opts.target)
    hvp = BatchedHVP(objective, x)
    g, logits, xr = hvp.grad.detach(), hvp.logits, hvp.x
    require_finite(logits, "logits", index)
    require_finite(g, "input gradients", index)
    gnorm = _flat(g).double().norm(dim=1)
    shape = x.shape

    def matvec(v_flat: torch.Tensor) -> torch.Tensor:
        return _flat(hvp(v_flat.view(shape)))

    method, J = _choose_method(model, x, index, opts, matvec=matvec, xr=xr, logits=logits)
    if method == "gauss-newton":
        res, fro, out = _gauss_newton_spectrum(x, opts, J=J, xr=xr, logits=logits)
    else:
        res, fro = _iterative_spectrum(model, hvp, matvec, method, g=g, labels=labels, index=index, opts=opts)
        out = _jacobian_fields(xr, logits, index, opts, C=logits.shape[1], J=J)
    hnorm = res.eigs[:, 0].double().abs()
    hnorm = torch.nan_to_num(hnorm, nan=0.0)
    out["grad_norm"] = gnorm
    out["hessian_norm"] = hnorm
    out["curvature"] = hnorm / (gnorm + opts.eps)
    if opts.profile:
        out["hessian_eigs"] = res.eigs.double()
    u = res.top_vector.double()
    has_vec = u.norm(dim=1) > 0.5
    align = (torch.einsum("bd,bd->b", _flat(g).double(), u).abs() / gnorm.clamp_min(1e-300))
    out["alignment"] = torch.where(has_vec & (hnorm > 0) & (gnorm > 0), align, torch.full_like(align, float("nan")))
    out["hessian_fro"] = fro.double()
    if opts.fd_h is not None:
        out["fd_curvature"] = _finite_difference(objective, x, g, opts.fd_h)
        require_finite(out["fd_curvature"], f"input gradients at the finite-difference step h={opts.fd_h}", index)
    out["converged"] = res.converged
    out["iterations"] = res.iterations
    out["label"] = labels if opts.label == "pred" else y
    out["pred"] = logits.argmax(1)
    if vectors:
        out["gradient"] = g
        out["top_vector"] = res.top_vector.reshape(shape)
        out["top_eig"] = res.eigs[:, 0].double()
    return {k: v.detach() for k, v in out.items()}, method


def _choose_method(model, x, index, opts: CurvatureOptions, *, matvec, xr, logits):
    """``(method, J)``: ``auto`` picks ``gauss-newton`` when the net is piecewise linear and one
    random HVP matches H = Jᵀ A J (J, the logit Jacobian, is then kept), else ``lanczos``."""
    method = opts.method
    J = None
    if method == "auto":
        method = "lanczos"
        if logits.shape[1] <= opts.gn_max_classes and is_piecewise_linear(model):
            J = logit_jacobian(xr, logits)
            v = rng.per_sample_normal(opts.seed, STREAM_CHECK, index, (J.shape[2],), x.dtype).to(x.device)
            auto = matvec(v).double()
            gn = gauss_newton_hvp(J, logits, v).double() if opts.target == "loss" else torch.zeros_like(auto)
            scale = auto.norm(dim=1).clamp_min(gn.norm(dim=1))
            tol = 1e-3 if x.dtype == torch.float32 else 1e-8
            if bool(((auto - gn).norm(dim=1) <= tol * scale + 1e-30).all()):
                method = "gauss-newton"
    return method, J


def _gauss_newton_spectrum(x, opts: CurvatureOptions, *, J, xr, logits):
    """``(SpectralResult, ‖H‖_F, Jacobian fields)`` exactly from the C×C Gauss-Newton matrix."""
    B = x.shape[0]
    k = max(1, opts.profile)
    if J is None:
        J = logit_jacobian(xr, logits)
    spec = gauss_newton_spectrum(J, logits.detach(), opts.target)
    eigs = spec.eigs
    if eigs.shape[1] < k:
        eigs = torch.cat([eigs, eigs.new_zeros(B, k - eigs.shape[1])], 1)
    res = SpectralResult(eigs=eigs[:, :k], top_vector=spec.top_vector,
                         converged=torch.ones(B, dtype=torch.bool, device=x.device),
                         iterations=torch.zeros(B, dtype=torch.long, device=x.device),
                         fro_sq_captured=spec.fro.pow(2))
    return res, spec.fro, {"jacobian_fro": spec.jacobian_fro, "cross_lipschitz": spec.cross_lipschitz}


def _iterative_spectrum(model, hvp, matvec, method: str, *, g, labels, index, opts: CurvatureOptions):
    """``(SpectralResult, ‖H‖_F)`` by Lanczos (Hutch++ Frobenius), power or the reference power iteration."""
    B = g.shape[0]
    k = max(1, opts.profile)
    q0 = _start_vectors(g, index, opts, STREAM_START)
    if method == "lanczos":
        compact = CompactingHVP(hvp, lambda idx: make_objective(model, labels[idx], opts.target))
        res = lanczos(compact, q0, k=k, max_iter=opts.max_iter, tol=opts.tol, atol=opts.atol, pass_active=True,
                      restart=lambda j: rng.per_sample_normal(opts.seed, STREAM_RESTART + 16 * (j + 1), index,
                                                              (q0.shape[1],), q0.dtype).to(q0.device),
                      keep_basis=opts.fro_probes > 0)
        return res, _frobenius(res, matvec, index, opts, q0)
    if method == "power":
        if opts.profile > 1:
            raise UsageError("--profile needs --method lanczos or gauss-newton (power finds one eigenvalue)")
        res = power_iteration(matvec, q0, iters=opts.iters, tol=opts.tol)
    elif method == "reference":
        if opts.profile > 1:
            raise UsageError("--profile needs --method lanczos or gauss-newton (reference finds one eigenvalue)")
        z = rng.per_sample_normal(opts.seed, STREAM_START, index, (q0.shape[1],), q0.dtype).to(q0.device)
        res = reference_power_iteration(matvec, z, iters=opts.iters)
    else:  # pragma: no cover - validated
        raise UsageError(f"unknown method {method}")
    return res, torch.full((B,), float("nan"), dtype=torch.float64, device=g.device)


def _frobenius(res: SpectralResult, matvec, index, opts: CurvatureOptions, q0) -> torch.Tensor:
    """‖H‖_F² = ‖T‖_F² + 2β² (exact, on the Krylov basis Q) + ‖P⊥HP⊥‖_F², the last by
    Hutchinson with ``fro_probes`` probes projected off Q (the Hutch++ split)."""
    captured = res.fro_sq_captured
    if opts.fro_probes <= 0 or res.basis is None:
        return captured.sqrt()
    Q = res.basis
    rest = torch.zeros_like(captured)
    for p in range(opts.fro_probes):
        z = rng.per_sample_normal(opts.seed, STREAM_FRO + 16 * p, index, (q0.shape[1],), q0.dtype).to(q0.device)
        z = z - torch.einsum("bk,bkd->bd", torch.einsum("bkd,bd->bk", Q, z), Q)
        hz = matvec(z)
        hz = hz - torch.einsum("bk,bkd->bd", torch.einsum("bkd,bd->bk", Q, hz), Q)
        rest += hz.double().pow(2).sum(1)
    return (captured + rest / opts.fro_probes).sqrt()


def _jacobian_fields(xr, logits, index, opts: CurvatureOptions, *, C: int, J=None) -> dict[str, torch.Tensor]:
    """Exact (C VJPs) when C <= 32 or asked for, else Hutchinson estimates (``jacobian_probes``)."""
    mode = opts.jacobian
    if mode == "off":
        return {}
    if J is not None or mode == "exact" or (mode == "auto" and C <= 32):
        J = logit_jacobian(xr, logits) if J is None else J
        jf, nu = jacobian_measures(J)
        return {"jacobian_fro": jf, "cross_lipschitz": nu}
    u = rng.per_sample_normal(opts.seed, STREAM_JAC, index, (opts.jacobian_probes, C), logits.dtype)
    u = u.to(logits.device).transpose(0, 1)  # (P, B, C)
    jf, nu = jacobian_measures_estimate(xr, logits, u)
    return {"jacobian_fro": jf, "cross_lipschitz": nu}


def _finite_difference(objective, x, g, h: float) -> torch.Tensor:
    """‖∇f(x + h z) − ∇f(x)‖ with z = sign(∇f)/‖sign(∇f)‖ (CURE §4). Not clamped to [0,1]:
    it is a property of f, not an attack."""
    s = torch.sign(g)
    z = s / _flat(s).norm(dim=1).clamp_min(1.0).view(-1, *([1] * (x.dim() - 1)))
    _, g2, _, _ = input_gradient(objective, x + h * z)
    return _flat(g2 - g).double().norm(dim=1)
