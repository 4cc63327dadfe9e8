"""Adversarial attacks and the robustness audit behind ``lcnn-audit attack``.

Every attack satisfies the :class:`~.protocol.Attack` protocol: a small object holding its
threat model, with ``run(model, x, y, index=None) -> output`` (and ``attack(...) -> x_adv``)
on inputs in [0, 1]. ``ATTACKS`` (:mod:`.registry`) maps each name to its class and builds it
from :class:`AttackOptions`; per-sample field names live in :mod:`.fields`, the summary's
shape in :mod:`.summary`. ``attack_audit`` runs them under the evaluation protocol of
``docs/attacks.md``.
"""


from .._lazy import lazy_attributes

#: public name -> the submodule that defines it, imported on first use (PEP 562): :mod:`.options`
#: and :mod:`.names` need no torch, so that the CLI reads the attack defaults before torch is imported
_EXPORTS = {"attack_audit": "audit", "AutoAttack": "autoattack", "CarliniWagnerL2": "cw", "DeepFool": "deepfool",
            "FGSM": "fgsm", "DEFAULT_EPS": "options", "AttackOptions": "options", "PGD": "pgd", "Attack": "protocol",
            "ATTACKS": "registry", "build_attack": "registry", "clopper_pearson": "stats"}


__getattr__, __dir__ = lazy_attributes(__name__, globals(), _EXPORTS)


__all__ = ["ATTACKS", "DEFAULT_EPS", "Attack", "AttackOptions", "AutoAttack", "CarliniWagnerL2", "DeepFool", "FGSM",
           "PGD", "attack_audit", "build_attack", "clopper_pearson"]
