"""Projected gradient descent (Madry et al., ICLR 2018), L2 and Linf, keeping the best iterate.

For each restart r, from a start δ₀ in the admissible set (eps-ball ∩ [0,1] box)::

    δ_{t+1} = Π( δ_t + α · d(∇_x loss(x + δ_t)) )      d = sign (linf) or g/‖g‖₂ (l2)

where Π is the exact projection of :func:`lcnn_audit.attacks.base.project`. Every iterate,
including the start and the last, is evaluated; the returned point is the best one seen
over all steps and restarts: a misclassified iterate beats a correctly classified one, and
among equals the higher loss wins. Later restarts only run on samples not yet fooled
(unless ``all_restarts``, which the non-convergence indicator needs).

Starts (``start``): ``"clean"`` (default) begins restart 0 at x itself, the best start at
a small step budget, and later restarts uniformly in the admissible ball (linf: uniform in
the cube; l2: a direction uniform on the sphere times radius eps·U^(1/d), i.e. uniform in
the ball); ``"random"`` draws every restart uniformly (Madry et al.'s training recipe);
``"none"`` starts every restart at x.

Step rules (``step_rule``): ``"fixed"`` uses ``step_size``, by default ``2.5 · eps / steps``
(Madry et al.): the steps can travel the ball's diameter and back, whatever the number of
steps. ``"apgd"`` (the default unless a ``step_size`` is given) is the step-size rule of
APGD (Croce & Hein, ICML 2020, Alg. 1): per sample, the step starts at 2·eps, each iterate
adds momentum 0.75 towards the projected gradient step, and at checkpoints (after 22 % of
the budget, then at shrinking intervals) the step is halved and the iterate reset to the
best point when fewer than 75 % of the steps since the last checkpoint raised the loss, or
when the best loss did not improve without a halving.

Random starts are drawn per sample with :mod:`lcnn_audit.rng` from ``(seed, restart,
dataset index)``, so a sample's result does not depend on the batch it is in. On an
accelerator the step loop reads nothing back to the host (best-iterate bookkeeping with
``torch.where``, the branchless projection of :func:`~lcnn_audit.attacks.base.project`), so
the device never waits on the CPU inside it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import rng
from ..errors import UsageError
from .base import (
    LOSSES,
    BoxBallProjection,
    ascent_direction,
    check_eps,
    check_norm,
    default_index,
    evaluate,
    input_gradient,
    project,
)
from .names import STEP_RULES

SUPPORTED_NORMS = ("l2", "linf")
#: rng stream ids: restart r draws from STREAM_PGD + 4r (+0 linf cube, +1 l2 direction, +2 l2 radius).
STREAM_PGD = 0x00A7_0000


STARTS = ("clean", "random", "none")
#: APGD's momentum and its checkpoint success-rate threshold (Croce & Hein, ICML 2020, Alg. 1).
APGD_ALPHA, APGD_RHO = 0.75, 0.75


def apgd_checkpoints(steps: int) -> set[int]:
    """The iterations at which APGD may halve its step: the first after 22 % of the budget, then
    at intervals shrinking by 3 % of the budget down to 6 % (the reference code's integer schedule)."""
    first, shrink, least = max(int(0.22 * steps), 1), max(int(0.03 * steps), 1), max(int(0.06 * steps), 1)
    out, at, gap = set(), first, first
    while at <= steps:
        out.add(at)
        gap = max(gap - shrink, least)
        at += gap
    return out


def keep_best(x, adv, loss, bx, badv, bloss, in_place: bool = False):  # noqa: PLR0917  (three (x, adv, loss) triples, positional by nature)
    """The best iterate so far per sample (Madry et al. 2018 report the last; we keep the best):
    a misclassified iterate beats a correct one, then the higher loss wins. ``in_place``
    overwrites ``bx``'s improved rows (see :func:`take_rows`)."""
    better = (adv & ~badv) | ((adv == badv) & (loss > bloss))
    return take_rows(bx, x, better, in_place), torch.where(better, adv, badv), torch.where(better, loss, bloss)


def take_rows(dst: torch.Tensor, src: torch.Tensor, mask: torch.Tensor, in_place: bool) -> torch.Tensor:
    """``dst`` with row i replaced by ``src[i]`` where ``mask[i]``. ``in_place`` (on a CPU, where the
    host read of ``mask`` is free) copies just those rows into ``dst``, which the caller must own;
    otherwise ``torch.where``, which reads and writes every row but never syncs (accelerators)."""
    if not in_place:
        return torch.where(mask.view(-1, *([1] * (dst.ndim - 1))), src, dst)
    rows = mask.nonzero().squeeze(1)
    if rows.numel():
        dst.index_copy_(0, rows, src.index_select(0, rows))
    return dst


@dataclass
class PGDOutput:
    """What :meth:`PGD.run` returns: the best iterate per sample, whether it is adversarial, its loss."""

    x_adv: torch.Tensor
    adversarial: torch.Tensor  # as seen by the attack's own forward passes (the audit re-checks)
    loss: torch.Tensor
    path_adversarial: torch.Tensor | None = None  # some iterate of some restart was misclassified (attack's view)
    trace: torch.Tensor | None = None  # (N, steps + 1) loss of restart 0 at every iterate
    restart_adversarial: torch.Tensor | None = None  # (N, restarts) outcome of each restart (all_restarts only)


class PGD:
    """``PGD(norm, eps, steps=10, step_size=None, restarts=1, random_start=True, seed=0, loss="ce",
    start="clean", eot=1, step_rule=None)``.

    ``attack(model, x, y, index=None) -> x_adv``: the best (misclassifying, else highest
    loss) iterate within the eps-ball ∩ [0, 1]. ``index`` holds dataset indices that seed
    the per-sample random starts (default ``arange(N)``). ``random_start=False`` is
    ``start="none"``. ``eot > 1`` averages each gradient (and the logits that decide
    success) over that many forward passes, for randomised models. The model's train/eval
    mode is left as it is (so it serves adversarial training too) and parameter ``.grad``
    is never written. In train mode BatchNorm layers update their running statistics on the
    attack's forward passes, as in Madry et al.'s training code.
    """

    name = "pgd"
    norms = SUPPORTED_NORMS
    minimal_norm = False
    white_box = True
    batch_independent = True

    def __init__(self, norm: str = "l2", eps: float | None = None, steps: int = 10, step_size: float | None = None,  # noqa: PLR0913, PLR0917 - mirrors torchattacks' PGD(model, eps, alpha, steps, random_start) plus our options
                 restarts: int = 1, random_start: bool = True, seed: int = 0, loss: str = "ce",
                 start: str = "clean", eot: int = 1, step_rule: str | None = None):
        check_norm("PGD", norm, SUPPORTED_NORMS)
        self.norm = norm
        self.eps = check_eps("PGD", eps)
        if int(steps) < 1:
            raise UsageError(f"PGD: steps must be >= 1, got {steps}")
        if int(restarts) < 1:
            raise UsageError(f"PGD: restarts must be >= 1, got {restarts}")
        if step_size is not None and not float(step_size) > 0:
            raise UsageError(f"PGD: step_size must be positive, got {step_size}")
        if loss not in LOSSES:
            raise UsageError(f"PGD: unknown loss {loss!r}; use one of {', '.join(LOSSES)}")
        if start not in STARTS:
            raise UsageError(f"PGD: unknown start {start!r}; use one of {', '.join(STARTS)}")
        if int(eot) < 1:
            raise UsageError(f"PGD: eot must be >= 1, got {eot}")
        if step_rule is None:  # an explicit step size asks for fixed steps; otherwise APGD's rule
            step_rule = "fixed" if step_size is not None else "apgd"
        if step_rule not in STEP_RULES:
            raise UsageError(f"PGD: unknown step_rule {step_rule!r}; use one of {', '.join(STEP_RULES)}")
        self.step_rule = step_rule
        self.steps, self.restarts = int(steps), int(restarts)
        self.step_size = float(step_size) if step_size is not None else 2.5 * self.eps / self.steps
        self.start_mode = start if random_start else "none"
        self.random_start, self.seed, self.loss, self.eot = self.start_mode != "none", int(seed), loss, int(eot)

    @classmethod
    def from_options(cls, options, norm: str, eps: float | None = None, steps: int | None = None) -> PGD:
        """PGD as ``AttackOptions`` configures it (``steps`` overrides ``options.steps``)."""
        return cls(norm, eps, steps=steps or options.steps, step_size=options.step_size, restarts=options.restarts,
                   random_start=options.random_start, seed=options.seed, loss=options.loss,
                   step_rule=options.step_rule)

    @classmethod
    def adaptive_from_options(cls, options, norm: str, eps: float | None = None, steps: int | None = None) -> PGD:
        """The adaptive counter of :mod:`.counters`: PGD with the margin loss and ``options.eot``."""
        return cls(norm, eps, steps=steps or options.steps, step_size=options.step_size, restarts=options.restarts,
                   random_start=options.random_start, seed=options.seed, loss="margin", eot=options.eot,
                   step_rule=options.step_rule)

    def __repr__(self) -> str:
        return (f"PGD(norm={self.norm!r}, eps={self.eps:g}, steps={self.steps}, step_size={self.step_size:g}, "
                f"restarts={self.restarts}, start={self.start_mode!r}, seed={self.seed}, loss={self.loss!r}, "
                f"eot={self.eot}, step_rule={self.step_rule!r})")

    def __call__(self, model, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        """``run(...).x_adv``."""
        return self.run(model, x, y, index).x_adv

    def start(self, x: torch.Tensor, index: torch.Tensor, restart: int) -> torch.Tensor:
        """A uniform draw δ₀ for ``restart``: uniform in the cube (linf) or in the ball (l2)."""
        shape = tuple(x.shape[1:])
        stream = STREAM_PGD + 4 * restart
        if self.norm == "linf":
            u = rng.per_sample_uniform(self.seed, stream, index, shape, x.dtype)
            return self.eps * (2.0 * u - 1.0)
        direction = rng.per_sample_sphere(self.seed, stream + 1, index, shape, x.dtype)
        radius = rng.per_sample_uniform(self.seed, stream + 2, index, (1,), torch.float64)
        radius = (radius.pow(1.0 / max(x[0].numel(), 1)) * self.eps).to(x.dtype)
        return direction * radius.view(-1, *([1] * len(shape)))

    def initial(self, x: torch.Tensor, index: torch.Tensor, restart: int) -> torch.Tensor:
        """δ₀ of ``restart`` under the start rule (zero for the clean start), already admissible."""
        if self.start_mode == "none" or (self.start_mode == "clean" and restart == 0):
            return torch.zeros_like(x)
        return project(x, self.start(x, index, restart).to(x.device), self.norm, self.eps)

    def run(self, model, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor | None = None, *,
            trace: bool = False, all_restarts: bool = False) -> PGDOutput:
        """The attack with its bookkeeping; ``trace`` keeps restart 0's loss at every iterate."""
        x = x.detach()
        y = y.to(x.device)
        index = default_index(x, index)
        n = x.shape[0]
        best_x = x.clone()
        best_adv = torch.zeros(n, dtype=torch.bool, device=x.device)
        best_loss = torch.full((n,), float("-inf"), device=x.device)
        path = torch.zeros_like(best_adv)
        per_restart = torch.zeros(n, self.restarts, dtype=torch.bool, device=x.device) if all_restarts else None
        losses = None
        for r in range(self.restarts):
            if all_restarts or r == 0:
                todo = None
                xs, ys, ids = x, y, index
            else:
                todo = (~best_adv).nonzero().squeeze(1)  # one host read per restart, never per step
                if todo.numel() == 0:
                    break
                xs, ys, ids = x[todo], y[todo], index[todo]
            body = self._restart_apgd if self.step_rule == "apgd" else self._restart
            bx, badv, bloss, bpath, tr = body(model, xs, ys, self.initial(xs, ids.to(x.device), r), trace and r == 0)
            if r == 0:
                losses = tr
            if per_restart is not None:
                per_restart[:, r] = badv
            cur_adv = best_adv if todo is None else best_adv[todo]
            cur_loss = best_loss if todo is None else best_loss[todo]
            better = (badv & ~cur_adv) | ((badv == cur_adv) & (bloss > cur_loss))
            if todo is None:
                best_x = torch.where(better.view(-1, *([1] * (x.ndim - 1))), bx, best_x)
                best_adv = torch.where(better, badv, best_adv)
                best_loss = torch.where(better, bloss, best_loss)
                path |= bpath
            else:
                sel = todo[better]
                best_x[sel], best_adv[sel], best_loss[sel] = bx[better], badv[better], bloss[better]
                path[todo] |= bpath
        return PGDOutput(best_x, best_adv, best_loss, path_adversarial=path, trace=losses,
                         restart_adversarial=per_restart)

    def _restart(self, model, xs, ys, delta, keep_trace=False):
        bx = xs.clone()
        badv = torch.zeros(xs.shape[0], dtype=torch.bool, device=xs.device)
        bloss = torch.full((xs.shape[0],), float("-inf"), device=xs.device)
        path = torch.zeros_like(badv)
        trace = []
        branchless = xs.device.type != "cpu"  # host reads cost nothing on a CPU, and the exact branch is cheaper
        proj = BoxBallProjection(xs, self.norm, self.eps, branchless=branchless)  # bounds and scratch kept
        for t in range(self.steps + 1):
            cur = (xs + delta).clamp_(0.0, 1.0)
            g, adv, loss = self._step_eval(model, cur, ys, t < self.steps)
            if keep_trace:
                trace.append(loss)
            bx, badv, bloss = keep_best(cur, adv, loss, bx, badv, bloss, in_place=not branchless)  # bx is ours
            path |= adv
            if t < self.steps:
                delta = proj(delta + self.step_size * ascent_direction(g, self.norm))
        return bx, badv, bloss, path, (torch.stack(trace, dim=1) if keep_trace else None)

    def _step_eval(self, model, x, ys, need_grad: bool):
        """Loss (NaN read as -inf), misclassification and, unless it is the last step, the input
        gradient at the iterate ``x``: one forward (and backward) serves all three."""
        if need_grad:
            g, logits, loss = input_gradient(model, x, ys, self.loss, eot=self.eot)
        else:
            g, (logits, loss) = None, evaluate(model, x, ys, self.loss, eot=self.eot)
        return g, logits.argmax(dim=1) != ys, torch.nan_to_num(loss.float(), nan=float("-inf"))

    def _restart_apgd(self, model, xs, ys, delta, keep_trace=False):
        """One restart under APGD's step rule (Croce & Hein 2020, Alg. 1), same bookkeeping as :meth:`_restart`."""
        view = (-1, *([1] * (xs.ndim - 1)))
        n = xs.shape[0]
        branchless = xs.device.type != "cpu"
        checkpoints = apgd_checkpoints(self.steps)
        eta = torch.full((n,), 2.0 * self.eps, device=xs.device)
        proj = BoxBallProjection(xs, self.norm, self.eps, branchless=branchless)  # bounds and scratch kept

        cur = (xs + delta).clamp_(0.0, 1.0)
        g, logits, loss = input_gradient(model, cur, ys, self.loss, eot=self.eot)
        loss = torch.nan_to_num(loss.float(), nan=float("-inf"))
        adv = logits.argmax(dim=1) != ys
        bx, badv, bloss, path = cur.clone(), adv.clone(), loss.clone(), adv.clone()
        trace = [loss] if keep_trace else []
        x_max, f_max, g_max = cur.clone(), loss.clone(), g.clone()
        prev, f_cur = cur.clone(), loss.clone()
        successes = torch.zeros(n, device=xs.device)
        f_max_check, reduced_check = f_max.clone(), torch.zeros(n, dtype=torch.bool, device=xs.device)
        last_check = 0
        for k in range(self.steps):
            offset = cur - xs  # the current δ, as both projections' argument starts from it
            z = xs + proj(offset + eta.view(view) * ascent_direction(g, self.norm))
            if k == 0:
                nxt = z
            else:
                nxt = xs + proj(offset + APGD_ALPHA * (z - cur) + (1 - APGD_ALPHA) * (cur - prev))
            nxt = nxt.clamp_(0.0, 1.0)
            g, adv, loss = self._step_eval(model, nxt, ys, k + 1 < self.steps)
            if keep_trace:
                trace.append(loss)
            # bx, x_max and g_max are this loop's own tensors (clones made above), never aliased
            bx, badv, bloss = keep_best(nxt, adv, loss, bx, badv, bloss, in_place=not branchless)
            path |= adv
            successes += (loss > f_cur).float()
            improved = loss > f_max
            x_max = take_rows(x_max, nxt, improved, in_place=not branchless)
            f_max = torch.where(improved, loss, f_max)
            if k + 1 < self.steps:
                g_max = take_rows(g_max, g, improved, in_place=not branchless)
            prev, cur, f_cur = cur, nxt, loss
            if k + 1 in checkpoints and k + 1 < self.steps:
                oscillating = successes < APGD_RHO * (k + 1 - last_check)
                stalled = ~reduced_check & (f_max_check >= f_max)
                halve = oscillating | stalled
                eta = torch.where(halve, eta / 2, eta)
                # cur, prev (iterates of this loop) and g (fresh from autograd) alias nothing: rows move in place
                cur = take_rows(cur, x_max, halve, in_place=not branchless)
                prev = take_rows(prev, cur, halve, in_place=not branchless)
                g = take_rows(g, g_max, halve, in_place=not branchless)
                f_cur = torch.where(halve, f_max, f_cur)
                successes = torch.zeros_like(successes)
                f_max_check, reduced_check, last_check = f_max.clone(), halve, k + 1
        return bx, badv, bloss, path, (torch.stack(trace, dim=1) if keep_trace else None)
