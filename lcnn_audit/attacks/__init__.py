"""Adversarial attacks and the robustness audit behind ``lcnn-audit attack``.

Every attack satisfies the :class:`~.protocol.Attack` protocol: a small object holding its
threat model, with ``run(model, x, y, index=None) -> output`` (and ``attack(...) -> x_adv``)
on inputs in [0, 1]. ``ATTACKS`` (:mod:`.registry`) maps each name to its class and builds it
from :class:`AttackOptions`; per-sample field names live in :mod:`.fields`, the summary's
shape in :mod:`.summary`. ``attack_audit`` runs them under the evaluation protocol of
``docs/attacks.md``.
"""

from .audit import attack_audit
from .autoattack import AutoAttack
from .cw import CarliniWagnerL2
from .deepfool import DeepFool
from .fgsm import FGSM
from .options import DEFAULT_EPS, AttackOptions
from .pgd import PGD
from .protocol import Attack
from .registry import ATTACKS, build_attack
from .stats import clopper_pearson

__all__ = ["ATTACKS", "DEFAULT_EPS", "Attack", "AttackOptions", "AutoAttack", "CarliniWagnerL2", "DeepFool", "FGSM",
           "PGD", "attack_audit", "build_attack", "clopper_pearson"]
