"""Indicators of Attack Failure (Pintor et al., NeurIPS 2022), per sample.

Each indicator is a per-sample bool computed by the attack audit (fields ``ioaf_*``);
``summary["indicators"]`` counts them and ``summary["flags"]`` raises a flag when a count
passes its threshold. Definitions, as in the paper and its reference code, adapted to an
eps-bounded audit:

===============================  ==========================================================
indicator                        a sample counts when
===============================  ==========================================================
``silent_success``               an iterate on the attack's path was misclassified (by the
                                 attack's own forward pass), yet the returned point is not
                                 (fresh re-check): the attack saw success and lost it
``incomplete_optimization``      the attack ended without success and its loss was still
                                 improving: the running best of the loss, rescaled to [0, 1]
                                 over the run, rose by ≥ ``INCOMPLETE_MU`` over the last
                                 quarter of the steps (the masking check's longer PGD run)
``transfer_failure``             the adaptive attack's surrogate (the model with BPDA and
                                 EOT) was fooled by the returned point, the model itself is not
``non_convergence``              restarts of the same attack (clean start, uniform start)
                                 end on different sides of the decision boundary (on the
                                 check subsample)
``unavailable_gradients``        the input gradient of the loss is exactly zero, missing or
                                 not finite
``unreachable_misclassification`` PGD with an eps of the box diameter (every image admissible)
                                 still cannot flip the label
===============================  ==========================================================

The shares that raise a flag are set so that a well-behaved model (the bundled demo CNN,
fp32 softmax classifiers) raises none; see ``docs/attacks.md``.
"""

from __future__ import annotations

import torch

INDICATORS = ("silent_success", "incomplete_optimization", "transfer_failure", "non_convergence",
              "unavailable_gradients", "unreachable_misclassification")
#: Pintor et al.'s threshold on the rise of the rescaled running-best loss over the last steps.
INCOMPLETE_MU = 0.05
#: Share of the checked samples above which an indicator raises its flag (0: any sample).
RAISE_SHARE = {"silent_success": 0.0, "incomplete_optimization": 0.05, "transfer_failure": 0.0,
               "non_convergence": 0.1, "unavailable_gradients": 0.0, "unreachable_misclassification": 0.01}


def incomplete_optimization(trace: torch.Tensor, fooled: torch.Tensor, mu: float = INCOMPLETE_MU) -> torch.Tensor:
    """Per sample: not ``fooled`` and the running best of ``trace`` (N, T) — the loss at every
    iterate, maximised — rescaled to [0, 1] rose by at least ``mu`` over the last ``max(T//4, 2)``
    iterates (Pintor et al.'s indicator, for maximisation)."""
    t = torch.nan_to_num(trace.double(), nan=float("-inf"), neginf=float("-inf"))
    best = torch.cummax(t, dim=1).values
    finite = torch.isfinite(best)
    lo = torch.where(finite, best, torch.full_like(best, float("inf"))).amin(dim=1, keepdim=True)
    hi = best[:, -1:]
    span = (hi - lo).clamp_min(1e-12)
    scaled = torch.where(finite, (best - lo) / span, torch.zeros_like(best))
    k = min(max(trace.shape[1] // 4, 2), trace.shape[1])
    rise = scaled[:, -1] - scaled[:, -k]
    real = (hi.squeeze(1) - lo.squeeze(1)) > 1e-12  # a flat loss never "improves"
    return (~fooled) & real & (rise >= mu)
