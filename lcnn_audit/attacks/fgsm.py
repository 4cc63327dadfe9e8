"""Fast gradient sign method (Goodfellow et al., 2015) and its L2 form (fast gradient method).

One step of size eps along the steepest-ascent direction of the loss at x::

    x_adv = x + Π( eps · sign(∇_x loss) )          (linf)
    x_adv = x + Π( eps · ∇_x loss / ‖∇_x loss‖₂ )   (l2)

with Π the exact projection onto the eps-ball ∩ [0, 1]. It is deterministic (no random
start) and costs one forward/backward pass and one forward pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import UsageError
from .base import LOSSES, ascent_direction, check_eps, check_norm, input_gradient, project

SUPPORTED_NORMS = ("linf", "l2")


@dataclass
class FGSMOutput:
    """What :meth:`FGSM.run` returns."""

    x_adv: torch.Tensor


class FGSM:
    """``FGSM(norm="linf", eps, loss="ce")``; ``attack(model, x, y, index=None) -> x_adv``.

    ``index`` is accepted for a uniform call signature and unused (FGSM has no randomness).
    Like :class:`~lcnn_audit.attacks.PGD` it leaves the model's mode and parameter grads alone.
    """

    name = "fgsm"
    norms = SUPPORTED_NORMS
    minimal_norm = False
    white_box = True
    batch_independent = True

    def __init__(self, norm: str = "linf", eps: float | None = None, loss: str = "ce"):
        check_norm("FGSM", norm, SUPPORTED_NORMS)
        if loss not in LOSSES:
            raise UsageError(f"FGSM: unknown loss {loss!r}; use one of {', '.join(LOSSES)}")
        self.norm, self.eps, self.loss = norm, check_eps("FGSM", eps), loss

    @classmethod
    def from_options(cls, options, norm: str, eps: float | None = None, steps: int | None = None) -> FGSM:
        """FGSM as ``AttackOptions`` configures it (one step: ``steps`` is unused)."""
        return cls(norm, eps, loss=options.loss)

    def __repr__(self) -> str:
        return f"FGSM(norm={self.norm!r}, eps={self.eps:g}, loss={self.loss!r})"

    def __call__(self, model, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        """``run(...).x_adv``."""
        return self.run(model, x, y, index).x_adv

    def run(self, model, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor | None = None) -> FGSMOutput:
        """The one-step attack; ``x_adv`` lies in the eps-ball ∩ [0, 1]."""
        x = x.detach()
        g, _, _ = input_gradient(model, x, y.to(x.device), self.loss)
        delta = project(x, self.eps * ascent_direction(g, self.norm), self.norm, self.eps)
        return FGSMOutput((x + delta).clamp_(0.0, 1.0))
