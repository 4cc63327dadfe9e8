"""Adversarial attacks and the robustness audit behind ``lcnn-audit attack``.

Every attack is a small object holding its threat model, called as
``attack(model, x, y, index=None) -> x_adv`` on inputs in [0, 1]; ``attack_audit`` runs
them under the evaluation protocol of ``docs/attacks.md``.
"""

from .audit import attack_audit
from .autoattack import AutoAttack
from .cw import CarliniWagnerL2
from .deepfool import DeepFool
from .fgsm import FGSM
from .options import ATTACKS, DEFAULT_EPS, AttackOptions
from .pgd import PGD
from .stats import clopper_pearson

__all__ = ["ATTACKS", "DEFAULT_EPS", "AttackOptions", "AutoAttack", "CarliniWagnerL2", "DeepFool", "FGSM", "PGD",
           "attack_audit", "clopper_pearson"]
