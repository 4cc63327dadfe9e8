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

NORMS = ("linf", "l2", "l1")
LOSSES = ("ce", "margin")

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


def project(x: torch.Tensor, delta: torch.Tensor, norm: str, eps: float) -> torch.Tensor:
    """Exact Euclidean projection of ``delta`` onto ``{δ : ‖δ‖_p ≤ eps, 0 ≤ x + δ ≤ 1}``.

    * Linf: the set is a box per coordinate, ``[max(−eps, −x), min(eps, 1 − x)]``, so
      clipping is the exact projection.
    * L2: by the KKT conditions the projection is ``clip(t·v, −x, 1 − x)`` with t = 1 when
      ``clip(v)`` is inside the ball, else the t ∈ (0, 1) where its norm equals eps. That
      norm² is piecewise quadratic in t, ``φ(t) = Σ_{clipped} bound_i² + t² Σ_{free} v_i²``,
      with a breakpoint where each coordinate reaches its bound; sorting the breakpoints
      locates t's piece and solves for it in closed form (O(d log d) per sample). This is
      the exact projection onto the intersection, not "project onto the ball, then clip".
    """
    lo, hi = -x, 1.0 - x
    if norm == "linf":
        return torch.maximum(torch.minimum(delta, hi.clamp(max=eps)), lo.clamp(min=-eps))
    if norm != "l2":
        raise UsageError(f"project supports linf and l2, not {norm!r}")
    full = torch.maximum(torch.minimum(delta, hi), lo)
    inside = flat_norm(full, "l2") <= eps
    if bool(inside.all()):
        return full
    # if the ball projection already respects the box, it is the projection onto the intersection
    ball = project_ball(delta, "l2", eps)
    in_box = ((ball >= lo) & (ball <= hi)).flatten(1).all(dim=1)
    out = torch.where(_view(inside, delta), full, ball)
    rows = (~inside & ~in_box).nonzero().squeeze(1)
    if rows.numel() == 0:
        return out
    v = delta[rows].flatten(1).double()
    lo_r, hi_r = lo[rows].flatten(1).double(), hi[rows].flatten(1).double()
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
    proj = torch.maximum(torch.minimum(v * t, hi_r), lo_r).to(delta.dtype).view_as(delta[rows])
    out[rows] = project_ball(proj, "l2", eps)  # guards the last ulp of rounding; scaling keeps the box
    return out


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


def input_gradient(model, x: torch.Tensor, y: torch.Tensor, loss: str = "ce"):
    """``(∇_x loss_i, logits, loss_i)`` for every sample, detached.

    Works with the model in either mode and leaves parameter ``.grad`` untouched. A model
    whose output does not depend on ``x`` through autograd gets a zero gradient (which the
    audit reports as gradient masking) rather than an exception.
    """
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
    return g.detach(), logits.detach(), per.detach()


def evaluate(model, x: torch.Tensor, y: torch.Tensor, loss: str = "ce"):
    """``(logits, loss_i)`` without building a graph."""
    with torch.no_grad():
        logits = model(x)
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


def recheck(model, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor, norm: str, eps: float | None,
            what: str) -> Recheck:
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
    if norm not in supported:
        raise UsageError(f"{name} supports the norms {', '.join(supported)}, not {norm!r}")


def check_eps(name: str, eps) -> float:
    try:
        eps = float(eps)
    except (TypeError, ValueError):
        raise UsageError(f"{name}: eps must be a number, got {eps!r}") from None
    if not math.isfinite(eps) or eps <= 0:
        raise UsageError(f"{name}: eps must be a positive finite number, got {eps}")
    return eps
