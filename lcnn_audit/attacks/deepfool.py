"""DeepFool (Moosavi-Dezfooli et al., CVPR 2016), L2, batched: minimal adversarial perturbations.

At the current point x_t, for every candidate class k ≠ y with f_k = z_k − z_y and
w_k = ∇_x f_k, the linearised distance to the k-boundary is |f_k| / ‖w_k‖₂. DeepFool steps
to the nearest one::

    r_t = (|f_k*| + 1e-4) / ‖w_k*‖₂² · w_k*,     k* = argmin_k |f_k| / ‖w_k‖₂
    x_{t+1} = clip(x + (1 + overshoot) · Σ_t r_t, 0, 1)

until x_{t+1} is misclassified or ``steps`` run out. Candidates are the ``candidates − 1``
classes with the largest clean logits besides y (the original's ``num_classes``). Each
iteration costs one forward and ``candidates − 1`` backward passes for the whole batch; in
eval mode the per-sample gradients of a batch sum are exact.

The result is each sample's minimal-norm adversarial example found, whose L2 distance
upper-bounds the true minimal perturbation (DeepFool slightly overestimates robustness, so
the audit combines it with PGD and reports the worst case).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import UsageError
from .base import check_norm, default_index, flat_norm


@dataclass
class MinNormOutput:
    """Output of a minimal-norm attack: ``norm`` is ``‖x_adv − x‖₂``; ``adversarial`` says
    whether the attack's own last forward pass misclassified ``x_adv`` (the audit re-checks)."""

    x_adv: torch.Tensor
    norm: torch.Tensor
    adversarial: torch.Tensor


class DeepFool:
    """``DeepFool(steps=50, overshoot=0.02, candidates=10)``; ``attack(model, x, y, index=None) -> x_adv``.

    Returns each sample's minimal-norm adversarial example (unbounded: there is no eps);
    :meth:`run` also gives the norms. Samples already misclassified are returned unchanged.
    """

    name = "deepfool"
    norms = ("l2",)
    minimal_norm = True
    white_box = True
    batch_independent = True

    @classmethod
    def from_options(cls, options, norm: str = "l2", eps: float | None = None, steps: int | None = None) -> DeepFool:
        """DeepFool as ``AttackOptions`` configures it (minimal-norm: ``eps`` and ``steps`` are unused)."""
        return cls(steps=options.df_steps, overshoot=options.overshoot, candidates=options.candidates, norm=norm)

    def __init__(self, steps: int = 50, overshoot: float = 0.02, candidates: int = 10, norm: str = "l2"):
        check_norm("DeepFool", norm, self.norms)
        if int(steps) < 1:
            raise UsageError(f"DeepFool: steps must be >= 1, got {steps}")
        if not float(overshoot) >= 0:
            raise UsageError(f"DeepFool: overshoot must be >= 0, got {overshoot}")
        if int(candidates) < 2:
            raise UsageError(f"DeepFool: candidates must be >= 2 (the label and one other class), got {candidates}")
        self.norm, self.steps, self.overshoot, self.candidates = norm, int(steps), float(overshoot), int(candidates)

    def __repr__(self) -> str:
        return f"DeepFool(steps={self.steps}, overshoot={self.overshoot:g}, candidates={self.candidates})"

    def __call__(self, model, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        """``run(...).x_adv``."""
        return self.run(model, x, y, index).x_adv

    def run(self, model, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor | None = None) -> MinNormOutput:
        """The minimal-norm adversarial example found per sample (Moosavi-Dezfooli et al. 2016)."""
        x = x.detach()
        y = y.to(x.device)
        default_index(x, index)
        with torch.no_grad():
            logits0 = model(x)
        num_classes = logits0.shape[1]
        k = min(self.candidates, num_classes) - 1
        others = logits0.scatter(1, y.view(-1, 1), float("-inf")).topk(k, dim=1).indices  # (N, k)
        x_adv = x.clone()
        adversarial = logits0.argmax(dim=1) != y
        r_tot = torch.zeros_like(x)
        active = (~adversarial).nonzero().squeeze(1)
        for it in range(self.steps + 1):
            if active.numel() == 0:
                break
            xa = (x[active] + (1.0 + self.overshoot) * r_tot[active]).clamp(0.0, 1.0)
            ya, cands = y[active], others[active]
            last = it == self.steps
            with torch.enable_grad():
                xg = xa.detach().requires_grad_(not last)
                logits = model(xg)
            fooled = logits.argmax(dim=1) != ya
            x_adv[active] = xa.detach()
            adversarial[active] = fooled
            if last:
                break
            keep = ~fooled
            if not bool(keep.any()):
                break
            f, w = self._linearise(logits, xg, ya, cands)
            dist = f.abs() / w.flatten(2).norm(dim=2).t().clamp_min(1e-12)  # (B, k)
            best = dist.argmin(dim=1)
            ar = torch.arange(best.numel(), device=x.device)
            wk = w[best, ar]
            fk = f[ar, best]
            wn = flat_norm(wk, "l2").clamp_min(1e-12)
            step = ((fk.abs() + 1e-4) / wn**2).view(-1, *([1] * (x.ndim - 1))) * wk
            r_tot[active[keep]] += step[keep].detach()
            active = active[keep]
        return MinNormOutput(x_adv=x_adv, norm=flat_norm((x_adv - x).double(), "l2").float(), adversarial=adversarial)

    @staticmethod
    def _linearise(logits, xg, y, cands):
        """f (B, k): z_k − z_y for each candidate; w (k, B, ...): ∇_x f per candidate."""
        z_y = logits.gather(1, y.view(-1, 1))
        f = logits.gather(1, cands) - z_y
        if not f.requires_grad:  # the output does not depend on x through autograd
            return f.detach(), torch.zeros(cands.shape[1], *xg.shape, dtype=xg.dtype, device=xg.device)
        grads = []
        for j in range(cands.shape[1]):
            (g,) = torch.autograd.grad(f[:, j].sum(), xg, retain_graph=j < cands.shape[1] - 1, allow_unused=True)
            grads.append(torch.zeros_like(xg) if g is None else g)
        return f.detach(), torch.stack(grads)
