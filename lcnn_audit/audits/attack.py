"""The attack audit (``lcnn-audit attack``): robust accuracy against eps, per-sample worst case
over attacks, restarts and eps, with gradient-masking flags, over :func:`lcnn_audit.attacks.attack_audit`."""

from __future__ import annotations

from torch import nn

from .. import attacks
from ..attacks.options import AttackOptions
from ..data import ImageData
from ..results import AuditResult
from ..runner import Progress


def run(model: nn.Module, data: ImageData, options: AttackOptions | None = None, *, batch_size: int = 128,
        state_path=None, resume: bool = False, keep_state: bool = False, progress: Progress | None = None,
        config: dict | None = None, save_adv=None) -> AuditResult:
    """:func:`~lcnn_audit.attacks.attack_audit` (``save_adv``: write the adversarial examples there)."""
    # through the public name, so that lcnn_audit.attacks.attack_audit stays the one to patch
    return attacks.attack_audit(model, data, options, batch_size=batch_size, state_path=state_path, resume=resume,
                                keep_state=keep_state, progress=progress, config=config, save_adv=save_adv)
