"""Carlini & Wagner L2 (IEEE S&P 2017): minimal-norm adversarial examples.

The box constraint is removed by the change of variables x' = (tanh(w) + 1)/2, and for a
constant c each sample minimises::

    ‖x' − x‖₂² + c · max(z_y(x') − max_{k≠y} z_k(x') + κ, 0)

with Adam (``steps`` iterations, learning rate ``lr``). A binary search over c per sample
(``search_steps`` rounds, starting at ``initial_const``; c grows ×10 until the first
success, then bisects) trades distance against success. The returned point is the
smallest-norm adversarial iterate seen in any round; samples never fooled keep x.
"""

from __future__ import annotations

import torch

from ..errors import UsageError
from .base import check_norm, default_index, flat_norm, margin
from .deepfool import MinNormOutput

_UPPER = 1e10


class CarliniWagnerL2:
    """``CarliniWagnerL2(steps=100, search_steps=5, lr=0.01, confidence=0.0, initial_const=0.1)``.

    ``attack(model, x, y, index=None) -> x_adv`` (unbounded, minimal-norm); :meth:`run` also
    returns the norms. Parameter ``.grad`` is never written and the model's mode is kept.
    """

    name = "cw"
    norms = ("l2",)
    minimal_norm = True
    white_box = True
    batch_independent = True

    @classmethod
    def from_options(cls, options, norm: str = "l2", eps: float | None = None,
                     steps: int | None = None) -> CarliniWagnerL2:
        """C&W as ``AttackOptions`` configures it (minimal-norm: ``eps`` and ``steps`` are unused)."""
        return cls(steps=options.cw_steps, search_steps=options.cw_search_steps, lr=options.cw_lr,
                   confidence=options.cw_confidence, initial_const=options.cw_initial_const, norm=norm)

    def __init__(self, steps: int = 100, search_steps: int = 5, lr: float = 0.01, confidence: float = 0.0,  # noqa: PLR0917 - public constructor, positional like its peers
                 initial_const: float = 0.1, norm: str = "l2"):
        check_norm("CarliniWagnerL2", norm, self.norms)
        problems = []
        if int(steps) < 1:
            problems.append(f"steps must be >= 1, got {steps}")
        if int(search_steps) < 1:
            problems.append(f"search_steps must be >= 1, got {search_steps}")
        if not float(lr) > 0:
            problems.append(f"lr must be positive, got {lr}")
        if not float(confidence) >= 0:
            problems.append(f"confidence must be >= 0, got {confidence}")
        if not float(initial_const) > 0:
            problems.append(f"initial_const must be positive, got {initial_const}")
        if problems:
            raise UsageError("CarliniWagnerL2: " + "; ".join(problems))
        self.norm = norm
        self.steps, self.search_steps, self.lr = int(steps), int(search_steps), float(lr)
        self.confidence, self.initial_const = float(confidence), float(initial_const)

    def __repr__(self) -> str:
        return (f"CarliniWagnerL2(steps={self.steps}, search_steps={self.search_steps}, lr={self.lr:g}, "
                f"confidence={self.confidence:g}, initial_const={self.initial_const:g})")

    def __call__(self, model, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        """``run(...).x_adv``."""
        return self.run(model, x, y, index).x_adv

    def run(self, model, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor | None = None) -> MinNormOutput:
        """The smallest-norm adversarial example found per sample (Carlini & Wagner 2017, L2)."""
        x = x.detach()
        y = y.to(x.device)
        default_index(x, index)
        n = x.shape[0]
        w0 = torch.atanh((2.0 * x - 1.0).clamp(-1 + 1e-6, 1 - 1e-6))
        best_x = x.clone()
        best_norm = torch.full((n,), float("inf"), device=x.device)
        with torch.no_grad():
            best_adv = model(x).argmax(dim=1) != y
        best_norm[best_adv] = 0.0
        const = torch.full((n,), self.initial_const, device=x.device)
        lower = torch.zeros(n, device=x.device)
        upper = torch.full((n,), _UPPER, device=x.device)
        for _ in range(self.search_steps):
            w = w0.clone().requires_grad_(True)
            opt = torch.optim.Adam([w], lr=self.lr)
            success = torch.zeros(n, dtype=torch.bool, device=x.device)
            for _ in range(self.steps):
                with torch.enable_grad():
                    xa = (torch.tanh(w) + 1.0) / 2.0
                    logits = model(xa)
                    m = margin(logits, y)  # > 0 when misclassified
                    dist2 = (xa - x).flatten(1).pow(2).sum(dim=1)
                    hinge = (self.confidence - m).clamp_min(0.0)
                    loss = (dist2 + const * hinge).sum()
                    (g,) = torch.autograd.grad(loss, w)
                with torch.no_grad():
                    adv = (logits.argmax(dim=1) != y) & (m >= self.confidence)
                    dist = dist2.sqrt()
                    better = adv & (dist < best_norm)
                    best_norm = torch.where(better, dist, best_norm)
                    best_x[better] = xa[better].detach()
                    success |= adv
                w.grad = g
                opt.step()
            upper = torch.where(success, torch.minimum(upper, const), upper)
            lower = torch.where(success, lower, torch.maximum(lower, const))
            const = torch.where(upper < _UPPER, (lower + upper) / 2.0, const * 10.0)
        best_x = best_x.clamp_(0.0, 1.0)
        adversarial = torch.isfinite(best_norm)
        return MinNormOutput(x_adv=best_x, norm=flat_norm((best_x - x).double(), "l2").float(),
                             adversarial=adversarial)
