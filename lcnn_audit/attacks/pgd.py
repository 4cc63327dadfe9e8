"""Projected gradient descent (Madry et al., ICLR 2018), L2 and Linf, keeping the best iterate.

For each restart r, from a random start δ₀ in the admissible set (eps-ball ∩ [0,1] box)::

    δ_{t+1} = Π( δ_t + α · d(∇_x loss(x + δ_t)) )      d = sign (linf) or g/‖g‖₂ (l2)

where Π is the exact projection of :func:`lcnn_audit.attacks.base.project`. Every iterate,
including the start and the last, is evaluated; the returned point is the best one seen
over all steps and restarts: a misclassified iterate beats a correctly classified one, and
among equals the higher loss wins. Later restarts only run on samples not yet fooled.

The step size defaults to ``2.5 · eps / steps`` (Madry et al.): the steps can travel the
ball's diameter and back, whatever the number of steps.

Random starts are drawn per sample with :mod:`lcnn_audit.rng` from ``(seed, restart,
dataset index)``, so a sample's result does not depend on the batch it is in.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import rng
from ..errors import UsageError
from .base import (
    LOSSES,
    ascent_direction,
    check_eps,
    check_norm,
    default_index,
    evaluate,
    input_gradient,
    project,
)

SUPPORTED_NORMS = ("l2", "linf")
#: rng stream ids: restart r draws from STREAM_PGD + 4r (+0 linf cube, +1 l2 direction, +2 l2 radius).
STREAM_PGD = 0x00A7_0000


@dataclass
class PGDOutput:
    x_adv: torch.Tensor
    adversarial: torch.Tensor  # as seen by the attack's own forward passes (the audit re-checks)
    loss: torch.Tensor


class PGD:
    """``PGD(norm, eps, steps=10, step_size=None, restarts=1, random_start=True, seed=0, loss="ce")``.

    ``attack(model, x, y, index=None) -> x_adv``: the best (misclassifying, else highest
    loss) iterate within the eps-ball ∩ [0, 1]. ``index`` holds dataset indices that seed
    the per-sample random starts (default ``arange(N)``). The model's train/eval mode is
    left as it is (so it serves adversarial training too) and parameter ``.grad`` is never
    written. In train mode BatchNorm layers update their running statistics on the attack's
    forward passes, as in Madry et al.'s training code.
    """

    name = "pgd"
    norms = SUPPORTED_NORMS

    def __init__(self, norm: str = "l2", eps: float | None = None, steps: int = 10, step_size: float | None = None,
                 restarts: int = 1, random_start: bool = True, seed: int = 0, loss: str = "ce"):
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
        self.steps, self.restarts = int(steps), int(restarts)
        self.step_size = float(step_size) if step_size is not None else 2.5 * self.eps / self.steps
        self.random_start, self.seed, self.loss = bool(random_start), int(seed), loss

    def __repr__(self) -> str:
        return (f"PGD(norm={self.norm!r}, eps={self.eps:g}, steps={self.steps}, step_size={self.step_size:g}, "
                f"restarts={self.restarts}, random_start={self.random_start}, seed={self.seed}, loss={self.loss!r})")

    def __call__(self, model, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        return self.run(model, x, y, index).x_adv

    def start(self, x: torch.Tensor, index: torch.Tensor, restart: int) -> torch.Tensor:
        """The random start δ₀ of ``restart``: uniform in the cube (linf) or in the ball (l2)."""
        shape = tuple(x.shape[1:])
        stream = STREAM_PGD + 4 * restart
        if self.norm == "linf":
            u = rng.per_sample_uniform(self.seed, stream, index, shape, x.dtype)
            return self.eps * (2.0 * u - 1.0)
        direction = rng.per_sample_sphere(self.seed, stream + 1, index, shape, x.dtype)
        radius = rng.per_sample_uniform(self.seed, stream + 2, index, (1,), torch.float64)
        radius = (radius.pow(1.0 / max(x[0].numel(), 1)) * self.eps).to(x.dtype)
        return direction * radius.view(-1, *([1] * len(shape)))

    def run(self, model, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor | None = None) -> PGDOutput:
        x = x.detach()
        y = y.to(x.device)
        index = default_index(x, index)
        n = x.shape[0]
        best_x = x.clone()
        best_adv = torch.zeros(n, dtype=torch.bool, device=x.device)
        best_loss = torch.full((n,), float("-inf"), device=x.device)
        for r in range(self.restarts):
            todo = (~best_adv).nonzero().squeeze(1)
            if todo.numel() == 0:
                break
            xs, ys = x[todo], y[todo]
            if self.random_start:
                delta = project(xs, self.start(xs, index[todo].to(x.device), r).to(x.device), self.norm, self.eps)
            else:
                delta = torch.zeros_like(xs)
            bx, badv, bloss = self._restart(model, xs, ys, delta)
            better = (badv & ~best_adv[todo]) | ((badv == best_adv[todo]) & (bloss > best_loss[todo]))
            sel = todo[better]
            best_x[sel], best_adv[sel], best_loss[sel] = bx[better], badv[better], bloss[better]
        return PGDOutput(best_x, best_adv, best_loss)

    def _restart(self, model, xs, ys, delta):
        bx = xs.clone()
        badv = torch.zeros(xs.shape[0], dtype=torch.bool, device=xs.device)
        bloss = torch.full((xs.shape[0],), float("-inf"), device=xs.device)
        for t in range(self.steps + 1):
            cur = (xs + delta).clamp_(0.0, 1.0)
            if t < self.steps:
                g, logits, loss = input_gradient(model, cur, ys, self.loss)
            else:
                logits, loss = evaluate(model, cur, ys, self.loss)
            adv = logits.argmax(dim=1) != ys
            loss = torch.nan_to_num(loss.float(), nan=float("-inf"))
            better = (adv & ~badv) | ((adv == badv) & (loss > bloss))
            bx[better], badv[better], bloss[better] = cur[better], adv[better], loss[better]
            if t < self.steps:
                delta = project(xs, delta + self.step_size * ascent_direction(g, self.norm), self.norm, self.eps)
        return bx, badv, bloss
