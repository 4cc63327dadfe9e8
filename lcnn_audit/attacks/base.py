"""Shared pieces of every attack: norms, exact projections, input gradients, re-checks.

Conventions (see ``docs/attacks.md``):

* inputs ``x`` are (N, ...) float tensors in [0, 1]; normalisation lives inside the model;
* a perturbation ``delta`` is admissible when ``‖delta‖_p ≤ eps`` and ``0 ≤ x + delta ≤ 1``;
* attacks never change ``model.training`` and never write parameter ``.grad``: input
  gradients come from :func:`torch.autograd.grad` with respect to the input only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import CheckFailedError, UsageError
from .names import LOSSES, NORMS

#: Relative slack on ``‖x_adv − x‖ ≤ eps`` in the re-check, on top of float32 rounding of x + δ.
NORM_RTOL = 1e-4
#: One float32 rounding of a value in [0, 1] moves it by at most 2**-24 (half an ulp of 1.0).
_ROUND = 2.0 ** -24


def flat_norm(delta: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-sample ``‖delta_i‖_p`` for p in {linf, l2, l1}, shape (N,)."""
    flat = delta.flatten(1)
    if norm == "linf":
        return flat.abs().amax(dim=1) if flat.shape[1] else flat.new_zeros(flat.shape[0])
    if norm == "l2":
        return flat.norm(dim=1)
    if norm == "l1":
        return flat.abs().sum(dim=1)
    raise UsageError(f"unknown norm {norm!r}; use one of {', '.join(NORMS)}")


def _view(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.view(-1, *([1] * (like.ndim - 1)))


def project_ball(delta: torch.Tensor, norm: str, eps: float) -> torch.Tensor:
    """Exact Euclidean projection of each ``delta_i`` onto ``{‖·‖_p ≤ eps}`` (p = linf or l2).

    Linf: coordinate-wise clipping to [−eps, eps]. L2: ``delta · min(1, eps/‖delta‖₂)``.
    """
    if norm == "linf":
        return delta.clamp(-eps, eps)
    if norm == "l2":
        n = flat_norm(delta, "l2")
        scale = torch.where(n > eps, eps / n.clamp_min(1e-30), torch.ones_like(n))
        return delta * _view(scale, delta)
    raise UsageError(f"project_ball supports linf and l2, not {norm!r}")


def project(x: torch.Tensor, delta: torch.Tensor, norm: str, eps: float, branchless: bool = False) -> torch.Tensor:
    """Exact Euclidean projection of ``delta`` onto ``{δ : ‖δ‖_p ≤ eps, 0 ≤ x + δ ≤ 1}``.

    * Linf: the set is a box per coordinate, ``[max(−eps, −x), min(eps, 1 − x)]``, so
      clipping is the exact projection.
    * L2: by the KKT conditions the projection is ``clip(t·v, −x, 1 − x)`` with t = 1 when
      ``clip(v)`` is inside the ball, else the t ∈ (0, 1) where its norm equals eps. That
      norm² is piecewise quadratic in t, ``φ(t) = Σ_{clipped} bound_i² + t² Σ_{free} v_i²``,
      with a breakpoint where each coordinate reaches its bound; sorting the breakpoints
      locates t's piece and solves for it in closed form (O(d log d) per sample). This is
      the exact projection onto the intersection, not "project onto the ball, then clip".

    ``branchless=True`` computes the same result without reading anything back to the host
    (no data-dependent branch or row selection), as attack step loops want on a GPU: every
    row runs ``FIXED_POINT_ITERS`` fixed-point iterations and ``torch.where`` picks the answer. A loop that
    projects onto the same set at every step uses :class:`BoxBallProjection` instead, which
    keeps the bounds and its scratch memory between calls (same results, bit for bit).
    """
    return BoxBallProjection(x, norm, eps, branchless=branchless)(delta)


class BoxBallProjection:
    """:func:`project` onto one fixed set ``{δ : ‖δ‖_p ≤ eps, 0 ≤ x + δ ≤ 1}``, for step loops.

    ``BoxBallProjection(x, norm, eps, branchless=False)(delta)`` equals
    ``project(x, delta, norm, eps, branchless)`` bit for bit. It computes the box bounds
    ``−x`` and ``1 − x`` once, and the L2 fixed point writes its per-coordinate scratch
    (breakpoints, squared bounds and steps, the clipped mask) into buffers kept between
    calls: on a CPU a fresh multi-megabyte temporary per call can cost page faults in the
    allocator, measured up to as much as the arithmetic itself (``docs/benchmarks.md``).
    Each call returns a new tensor; the object is not meant to be shared between threads.
    """

    def __init__(self, x: torch.Tensor, norm: str, eps: float, branchless: bool = False):
        if norm not in ("linf", "l2"):
            raise UsageError(f"project supports linf and l2, not {norm!r}")
        self.norm, self.eps, self.branchless = norm, eps, branchless
        self.lo, self.hi = -x, 1.0 - x
        if norm == "linf":
            self.lo, self.hi = self.lo.clamp(min=-eps), self.hi.clamp(max=eps)
        self._scratch: dict = {}

    def __call__(self, delta: torch.Tensor) -> torch.Tensor:
        """The exact projection of ``delta`` onto ``{‖δ‖_p ≤ eps, 0 ≤ x + δ ≤ 1}`` (see :func:`project`)."""
        lo, hi, eps = self.lo, self.hi, self.eps
        full = torch.maximum(torch.minimum(delta, hi), lo)
        if self.norm == "linf":
            return full
        inside = flat_norm(full, "l2") <= eps
        if self.branchless:
            path = _l2_box_fixed_point(delta.flatten(1), lo.flatten(1), hi.flatten(1), eps, iters=FIXED_POINT_ITERS,
                                       scratch=self._scratch)
            return torch.where(_view(inside, delta), full, path.view_as(delta))
        if bool(inside.all()):
            return full
        rows = (~inside).nonzero().squeeze(1)
        if rows.numel() == delta.shape[0]:  # every row is outside: no gather, no scatter
            v, lo_r, hi_r = delta.flatten(1), lo.flatten(1), hi.flatten(1)
        else:
            v = delta.flatten(1).index_select(0, rows)
            lo_r, hi_r = lo.flatten(1).index_select(0, rows), hi.flatten(1).index_select(0, rows)
        proj, done = _l2_box_fixed_point(v, lo_r, hi_r, eps, iters=None, scratch=self._scratch)
        if not bool(done.all()):  # rounding made the iteration creep: the sorted closed form settles it
            left = (~done).nonzero().squeeze(1)
            proj[left] = _l2_box_path(v[left], lo_r[left], hi_r[left], eps)
        if rows.numel() == delta.shape[0]:
            return proj.view_as(delta)
        full.view(delta.shape[0], -1).index_copy_(0, rows, proj)  # full is this call's own tensor
        return full


#: Iterations of :func:`_l2_box_fixed_point` in branchless mode (4 settle the demo data exactly).
FIXED_POINT_ITERS = 8
_FIXED_POINT_MAX = 64


def _buffer(scratch: dict | None, name: str, shape: tuple, dtype: torch.dtype, device) -> torch.Tensor:
    """A scratch tensor of ``shape`` (contents undefined), reused from ``scratch`` when it is large enough."""
    numel = math.prod(shape)
    buf = None if scratch is None else scratch.get(name)
    if buf is None or buf.numel() < numel or buf.dtype != dtype or buf.device != device:
        buf = torch.empty(numel, dtype=dtype, device=device)
        if scratch is not None:
            scratch[name] = buf
    return buf[:numel].view(shape)


def _l2_box_fixed_point(v: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, eps: float, *, iters: int | None,
                        scratch: dict | None = None):
    """Rows (N, d) of ``clip(t·v, lo, hi)`` with ``‖·‖₂ = eps``, by the monotone fixed point
    ``t ← sqrt((eps² − C(t)) / F(t))`` (C: Σ bound² of the coordinates clipped at t; F: Σ v²
    of the free ones), from the ball projection ``t₀ = eps/‖v‖``. The box is the unit box
    about x (``lo = −x``, ``hi = 1 − x``, so ``hi = lo + 1`` exactly in floating point).

    Each iterate stays ≤ the solution t* (for t ≥ t_k the piece at t_k over-estimates the
    norm), so the sequence rises monotonically and is exact once the clipped set stops
    changing, after at most d iterations and in practice 1-3; its cost is a few elementwise
    passes, against the O(d log d) sort of :func:`_l2_box_path`. The sets are nested, so
    "unchanged" is "as many clipped coordinates as before": the confirming pass is one
    comparison and a count. When the ball projection already lies in the box, nothing is
    clipped at t₀ and that first count settles it. Sums are float64 (squares exact; the
    clipped mask is written as float64 0/1 directly, since a boolean mask and its conversion
    cost several times a float comparison on a CPU). ``scratch`` (a dict) keeps the
    per-coordinate buffers between calls. ``iters=None`` iterates to convergence and returns
    ``(rows, converged)``; an int runs exactly that many iterations without reading back to
    the host and returns the rows, admissible (‖·‖ ≤ eps) even if not yet exact.
    """
    n, d = v.shape
    # the bound coordinate i runs into as t grows: hi = lo + 1 where v ≥ 0, else lo
    bound = torch.ge(v, 0, out=_buffer(scratch, "bound", (n, d), v.dtype, v.device)).add_(lo)
    # t where i is clipped, ≥ 0 (bound and v have the same sign); +inf or NaN (never clipped) where v = ±0:
    # the abs maps bound/(−0.0) = −inf, which would count i as clipped at every t, to +inf
    brk = torch.div(bound, v, out=_buffer(scratch, "brk", (n, d), v.dtype, v.device)).abs_()
    w = _buffer(scratch, "w", (n, 2, d), torch.float64, v.device)
    w[:, 0].copy_(bound)
    w[:, 1].copy_(v)
    w.mul_(w)
    total = w[:, 1].sum(dim=1)
    mask = _buffer(scratch, "mask", (n, 1, d), torch.float64, v.device)
    prod = _buffer(scratch, "prod", (n, 2, d), torch.float64, v.device)
    t = eps / total.sqrt().clamp_min(1e-300)
    count = done = None
    for _ in range(iters if iters is not None else _FIXED_POINT_MAX):
        torch.le(brk, t.to(v.dtype).unsqueeze(1), out=mask[:, 0])  # clipped at t, as float64 0/1
        if iters is None:
            n_clipped = mask[:, 0].sum(dim=1)
            if count is not None:
                done = n_clipped == count
                if bool(done.all()):
                    break
            count = n_clipped
        c, u = torch.mul(w, mask, out=prod).sum(dim=2).unbind(1)
        t = torch.maximum(t, ((eps**2 - c).clamp_min(0) / (total - u).clamp_min(1e-300)).sqrt())
    else:
        if iters is None:
            done = (brk <= t.to(v.dtype).unsqueeze(1)).sum(dim=1) == count
    proj = project_ball(torch.maximum(torch.minimum(v * t.to(v.dtype).unsqueeze(1), hi), lo), "l2", eps)
    return proj if iters is not None else (proj, done)


def _l2_box_path(v: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, eps: float) -> torch.Tensor:
    """Rows (N, d) of ``clip(t·v, lo, hi)`` with the t where the norm reaches eps (see :func:`project`)."""
    dtype = v.dtype
    v, lo_r, hi_r = v.double(), lo.double(), hi.double()
    bound = torch.where(v > 0, hi_r, lo_r)  # the bound coordinate i runs into as t grows
    safe_v = torch.where(v == 0, torch.ones_like(v), v)
    brk = torch.where(v == 0, torch.full_like(v, float("inf")), bound / safe_v)  # t at which it is clipped
    brk, order = brk.sort(dim=1)
    c2 = bound.gather(1, order).pow(2)
    v2 = v.gather(1, order).pow(2)
    clipped = c2.cumsum(dim=1)  # Σ bound² of the first k+1 coordinates to clip
    free = v2.sum(dim=1, keepdim=True) - v2.cumsum(dim=1)  # Σ v² of those still free
    phi = torch.where(torch.isinf(brk), torch.full_like(brk, float("inf")), clipped + brk.pow(2) * free)
    k = (phi >= eps**2).to(torch.int8).argmax(dim=1, keepdim=True)  # first breakpoint past the sphere
    prev = (k - 1).clamp_min(0)
    c_prev = torch.where(k > 0, clipped.gather(1, prev), torch.zeros_like(k, dtype=v.dtype))
    f_prev = torch.where(k > 0, free.gather(1, prev), v2.sum(dim=1, keepdim=True))
    t = ((eps**2 - c_prev).clamp_min(0) / f_prev.clamp_min(1e-300)).sqrt()
    proj = torch.maximum(torch.minimum(v * t, hi_r), lo_r).to(dtype)
    return project_ball(proj, "l2", eps)  # guards the last ulp of rounding; scaling keeps the box


def per_sample_loss(logits: torch.Tensor, y: torch.Tensor, loss: str = "ce") -> torch.Tensor:
    """The attack objective per sample, larger = more adversarial.

    ``ce``: cross-entropy at the label. ``margin``: ``max_{k≠y} z_k − z_y`` (the C&W margin;
    it does not saturate when the softmax does).
    """
    if loss == "ce":
        return F.cross_entropy(logits, y, reduction="none")
    if loss == "margin":
        return margin(logits, y)
    raise UsageError(f"unknown loss {loss!r}; use one of {', '.join(LOSSES)}")


def margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``max_{k≠y} z_k − z_y`` per sample (positive = misclassified)."""
    true = logits.gather(1, y.view(-1, 1)).squeeze(1)
    other = logits.scatter(1, y.view(-1, 1), float("-inf")).amax(dim=1)
    return other - true


def input_gradient(model, x: torch.Tensor, y: torch.Tensor, loss: str = "ce", eot: int = 1):
    """``(∇_x loss_i, logits, loss_i)`` for every sample, detached.

    Works with the model in either mode and leaves parameter ``.grad`` untouched. A model
    whose output does not depend on ``x`` through autograd gets a zero gradient (which the
    audit reports as gradient masking) rather than an exception. ``eot > 1`` averages the
    gradient, logits and loss over that many forward/backward passes: expectation over
    transformation (Athalye et al., ICML 2018) for models that are random at each forward.
    """
    g_sum = logit_sum = loss_sum = None
    for _ in range(max(int(eot), 1)):
        with torch.enable_grad():
            xg = x.detach().clone().requires_grad_(True)
            logits = model(xg)
            per = per_sample_loss(logits, y, loss)
            if per.requires_grad:
                (g,) = torch.autograd.grad(per.sum(), xg, allow_unused=True)
            else:
                g = None
        if g is None:
            g = torch.zeros_like(x)
        g, logits, per = g.detach(), logits.detach(), per.detach()
        if g_sum is None:
            g_sum, logit_sum, loss_sum = g, logits, per
        else:
            g_sum, logit_sum, loss_sum = g_sum + g, logit_sum + logits, loss_sum + per
    k = max(int(eot), 1)
    if k == 1:
        return g_sum, logit_sum, loss_sum
    return g_sum / k, logit_sum / k, loss_sum / k


def evaluate(model, x: torch.Tensor, y: torch.Tensor, loss: str = "ce", eot: int = 1):
    """``(logits, loss_i)`` without building a graph (logits averaged over ``eot`` passes)."""
    with torch.no_grad():
        logits = model(x)
        for _ in range(max(int(eot), 1) - 1):
            logits = logits + model(x)
        if eot > 1:
            logits = logits / int(eot)
        return logits, per_sample_loss(logits, y, loss)


def ascent_direction(g: torch.Tensor, norm: str) -> torch.Tensor:
    """The steepest-ascent unit step for ``norm``: sign(g) (linf) or g/‖g‖₂ (l2)."""
    if norm == "linf":
        return g.sign()
    n = flat_norm(g, "l2")
    return g / _view(n.clamp_min(1e-30), g)


def norm_tolerance(eps: float, norm: str, numel: int) -> float:
    """Slack allowed on ``‖x_adv − x‖ ≤ eps``: a relative ``NORM_RTOL`` plus the worst-case
    effect of rounding x + δ to float32 (one half-ulp of 1.0 per coordinate)."""
    per = {"linf": 1.0, "l2": math.sqrt(numel), "l1": float(numel)}[norm]
    return NORM_RTOL * eps + 2.0 * _ROUND * per


@dataclass
class Recheck:
    """The outcome of :func:`recheck`: fresh predictions and which samples they misclassify."""

    pred: torch.Tensor
    adversarial: torch.Tensor
    norm: torch.Tensor


def recheck(model, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor, norm: str, eps: float | None,  # noqa: PLR0917
            what: str) -> Recheck:  # (model, x, x_adv, y, norm, eps, what): every caller, tests included, is positional
    """Re-check adversarial examples independently of the attack that made them.

    Raises :class:`CheckFailedError` when any ``x_adv`` has the wrong shape, holds NaN/inf,
    leaves [0, 1], or (when ``eps`` is given) lies outside the eps-ball plus
    :func:`norm_tolerance`. The prediction comes from a fresh forward pass, so whether a
    sample counts as broken never rests on an attack's own bookkeeping.
    """
    if x_adv.shape != x.shape:
        raise CheckFailedError(f"{what}: returned adversarial examples of shape {tuple(x_adv.shape)} "
                               f"for inputs of shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        empty = torch.zeros(0, dtype=torch.bool, device=x.device)
        return Recheck(y.clone(), empty, torch.zeros(0, device=x.device))
    finite = torch.isfinite(x_adv.flatten(1)).all(dim=1)
    if not bool(finite.all()):
        raise CheckFailedError(f"{what}: {int((~finite).sum())} adversarial example(s) hold NaN or infinite "
                               "values")
    lo, hi = float(x_adv.min()), float(x_adv.max())
    if lo < 0.0 or hi > 1.0:
        raise CheckFailedError(f"{what}: adversarial examples leave the [0, 1] input range "
                               f"(found [{lo:.6g}, {hi:.6g}])")
    dist = flat_norm((x_adv - x).double(), norm).float()
    if eps is not None:
        tol = norm_tolerance(eps, norm, x[0].numel())
        bad = dist > eps + tol
        if bool(bad.any()):
            raise CheckFailedError(f"{what}: {int(bad.sum())} adversarial example(s) lie outside the {norm} "
                                   f"ball of radius {eps:g} (largest norm {float(dist.max()):.8g}, "
                                   f"tolerance {tol:.2g})")
    with torch.no_grad():
        pred = model(x_adv).argmax(dim=1)
    return Recheck(pred=pred, adversarial=pred != y, norm=dist)


def default_index(x: torch.Tensor, index: torch.Tensor | None) -> torch.Tensor:
    """Dataset indices that seed per-sample random draws (``arange(N)`` by default)."""
    if index is None:
        return torch.arange(x.shape[0], device=x.device)
    index = torch.as_tensor(index, device=x.device).long().flatten()
    if index.numel() != x.shape[0]:
        raise UsageError(f"index has {index.numel()} entries for a batch of {x.shape[0]}")
    return index


def check_norm(name: str, norm: str, supported: tuple[str, ...]) -> None:
    """Raise UsageError unless ``norm`` is one of ``supported``."""
    if norm not in supported:
        raise UsageError(f"{name} supports the norms {', '.join(supported)}, not {norm!r}")


def check_eps(name: str, eps) -> float:
    """``eps`` as a float; UsageError unless it is a positive finite number."""
    try:
        eps = float(eps)
    except (TypeError, ValueError):
        raise UsageError(f"{name}: eps must be a number, got {eps!r}") from None
    if not math.isfinite(eps) or eps <= 0:
        raise UsageError(f"{name}: eps must be a positive finite number, got {eps}")
    return eps
