"""Names of the attack audit's per-sample fields: the one place that builds and parses them.

The attack audit writes one list per field into ``AuditResult.per_sample``; a field's name
says what it holds (``docs/attacks.md``):

* ``robust_{attack}_{norm}_{eps}``: still correctly classified after ``attack`` (or the rows
  ``worst_case`` / ``pgd_adaptive``) at radius ``eps``;
* ``{attack}_norm``: a minimal-norm attack's distance to the adversarial example found;
* ``autoattack_by_{norm}_{eps}`` / ``autoattack_checks_{norm}_{eps}``: AutoAttack's
  attribution and raised checks;
* ``check_more_steps_{norm}_{eps}``, ``check_black_box_{norm}_{eps}``, ``check_large_eps_{norm}``:
  the masking checks;
* ``ioaf_{indicator}_{norm}`` (and ``ioaf_unavailable_gradients``): the Indicators of Attack
  Failure.

``{eps}`` is always :func:`eps_key` (``f"{eps:g}"``). Attack and indicator names may hold
underscores; norms and eps keys never do, so :func:`parse` splits from the right.
"""

from __future__ import annotations

from dataclasses import dataclass

ROBUST = "robust_"
MIN_NORM_SUFFIX = "_norm"
AUTOATTACK_BY = "autoattack_by_"
AUTOATTACK_CHECKS = "autoattack_checks_"
MORE_STEPS = "check_more_steps_"
BLACK_BOX = "check_black_box_"
LARGE_EPS = "check_large_eps_"
IOAF = "ioaf_"
#: Field kinds keyed by ``{norm}_{eps}`` after their prefix.
_NORM_EPS = {AUTOATTACK_BY: "autoattack_by", AUTOATTACK_CHECKS: "autoattack_checks", MORE_STEPS: "more_steps",
             BLACK_BOX: "black_box"}


def eps_key(eps: float | str) -> str:
    """The eps as it appears in field names and summary keys: ``f"{eps:g}"`` (0.1 -> "0.1");
    a key (a string) is returned as it is."""
    return eps if isinstance(eps, str) else f"{eps:g}"


def robust(attack: str, norm: str, eps: float | str) -> str:
    """``robust_{attack}_{norm}_{eps}``: True where the sample survives ``attack`` at ``eps``."""
    return f"{ROBUST}{attack}_{norm}_{eps_key(eps)}"


def min_norm(attack: str) -> str:
    """``{attack}_norm``: the distance a minimal-norm attack found (inf: none found)."""
    return f"{attack}{MIN_NORM_SUFFIX}"


def autoattack_by(norm: str, eps: float | str) -> str:
    """The AutoAttack sub-attack that broke each sample at ``eps`` ("" if none)."""
    return f"{AUTOATTACK_BY}{norm}_{eps_key(eps)}"


def autoattack_checks(norm: str, eps: float | str) -> str:
    """AutoAttack's raised check flags per sample at ``eps`` (comma-separated)."""
    return f"{AUTOATTACK_CHECKS}{norm}_{eps_key(eps)}"


def more_steps(norm: str, eps: float | str) -> str:
    """Robust under PGD with ``steps_factor``× the steps (the masking check)."""
    return f"{MORE_STEPS}{norm}_{eps_key(eps)}"


def black_box(norm: str, eps: float | str) -> str:
    """Broken by the small Square check only."""
    return f"{BLACK_BOX}{norm}_{eps_key(eps)}"


def large_eps(norm: str) -> str:
    """Still correct after PGD at the box diameter."""
    return f"{LARGE_EPS}{norm}"


def ioaf(indicator: str, norm: str | None = None) -> str:
    """``ioaf_{indicator}_{norm}`` (``ioaf_{indicator}`` for a norm-free indicator)."""
    return f"{IOAF}{indicator}" + (f"_{norm}" if norm else "")


@dataclass(frozen=True)
class FieldName:
    """A parsed per-sample field name. ``kind`` is ``robust``, ``autoattack_by``,
    ``autoattack_checks``, ``more_steps``, ``black_box`` or ``large_eps``; ``attack`` is set
    for ``robust`` only, ``eps`` (the key) for all but ``large_eps``."""

    kind: str
    norm: str
    eps: str | None = None
    attack: str | None = None


def parse(name: str) -> FieldName | None:
    """The parts of a field built by this module (robust and masking-check fields), or None for
    any other field."""
    if name.startswith(ROBUST):
        attack, norm, key = name.removeprefix(ROBUST).rsplit("_", 2) if name.count("_") >= 3 else ("", "", "")
        return FieldName("robust", norm, key, attack) if attack else None
    if name.startswith(LARGE_EPS):
        return FieldName("large_eps", name.removeprefix(LARGE_EPS))
    for prefix, kind in _NORM_EPS.items():
        if name.startswith(prefix):
            norm, sep, key = name.removeprefix(prefix).partition("_")
            return FieldName(kind, norm, key) if sep else None
    return None


def with_prefix(per_sample: dict, prefix: str) -> list[str]:
    """The field names of ``per_sample`` that start with one of this module's prefixes."""
    return [k for k in per_sample if k.startswith(prefix)]
