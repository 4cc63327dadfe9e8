"""The attack registry: ``ATTACKS[name]`` is the attack class, and :func:`build_attack` builds
every attack the audit runs from :class:`~lcnn_audit.attacks.AttackOptions`.

Adding an attack is one class that satisfies :class:`~lcnn_audit.attacks.protocol.Attack`
plus one entry here; the CLI, the options' validation, the audit (minimal-norm or
eps-bounded), the gradient-masking flags (white box or not) and the registry-driven contract
tests (``tests/attacks/test_contract.py``) all read it.
"""

from __future__ import annotations

from typing import Any

from ..errors import UsageError
from .autoattack import AutoAttack
from .cw import CarliniWagnerL2
from .deepfool import DeepFool
from .fgsm import FGSM
from .names import ADAPTIVE
from .pgd import PGD
from .protocol import Attack

#: name -> attack class (the registry; its errors list the valid names).
ATTACKS: dict[str, type[Attack]] = {cls.name: cls for cls in (PGD, FGSM, DeepFool, CarliniWagnerL2, AutoAttack)}
#: Attacks the audit builds besides the registry's: name -> builder ``(options, norm, eps, steps)``.
COUNTERS = {ADAPTIVE: PGD.adaptive_from_options}
#: Attacks that only follow the model's gradient (derived from the classes' ``white_box``).
WHITE_BOX = tuple(name for name, cls in ATTACKS.items() if cls.white_box)
#: Minimal-norm attacks (derived from the classes' ``minimal_norm``): run once, then every eps
#: of the sweep is read off their norms.
MINIMAL_NORM = tuple(name for name, cls in ATTACKS.items() if cls.minimal_norm)


def build_attack(name: str, options: Any, norm: str, eps: float | None = None, steps: int | None = None) -> Attack:
    """The attack ``name`` (a registry entry or a counter) configured by ``options`` for one
    (norm, eps); ``steps`` overrides PGD's step budget (the masking checks' longer run)."""
    if name in ATTACKS:
        return ATTACKS[name].from_options(options, norm, eps, steps)
    if name in COUNTERS:
        return COUNTERS[name](options, norm, eps, steps)
    raise UsageError(f"unknown attack {name!r}; use one of {', '.join(ATTACKS)}")
