"""The shape of the attack audit's ``summary`` (``AuditResult.summary`` of ``lcnn-audit attack``).

These are :class:`typing.TypedDict` s: the summary stays a plain JSON dict (results written
by earlier versions read back unchanged), and the keys that renderers, gates and plots read
are written down in one place. Besides the keys below, ``summary[attack][norm][eps_key]`` holds
the :class:`RobustEntry` of every row of ``results`` (``eps_key``: :func:`.fields.eps_key`).
"""

from __future__ import annotations

from typing import TypedDict


class RobustEntry(TypedDict):
    """Robust accuracy of one (attack, norm, eps) over all n points, with its exact 95 % interval."""

    robust_accuracy: float
    ci_low: float
    ci_high: float
    n: int
    robust: int


class ResultRow(TypedDict):
    """One row of ``summary["results"]``: a :class:`RobustEntry` with its attack, norm and eps."""

    attack: str
    norm: str
    eps: float
    robust_accuracy: float
    ci_low: float
    ci_high: float
    n: int
    robust: int


class MinNormStats(TypedDict):
    """A minimal-norm attack's distances (``summary["min_norm"][attack]``): ``attacked`` correct
    inputs, ``found`` adversarial examples, the median over all attacked (inf where none was
    found) and :func:`~lcnn_audit.results.summarize` of the found ones."""

    attacked: int
    found: int
    median_all: float
    mean: float
    std: float
    median: float
    p5: float
    p95: float
    max: float
    min: float
    count: int


class MoreStepsCheck(TypedDict):
    """The more-steps masking check: the eps it ran at and its number of steps."""

    eps: float
    steps: int


class RestartsCheck(TypedDict):
    """The restarts (non-convergence) check: restarts and steps."""

    restarts: int
    steps: int


class ChecksConfig(TypedDict, total=False):
    """``summary["checks"]``: what the gradient-masking checks ran (``{"enabled": False}`` if off)."""

    enabled: bool
    large_eps: dict[str, float]
    more_steps: dict[str, MoreStepsCheck]
    check_every: int
    restarts_check: RestartsCheck
    square_queries: int


class IndicatorEntry(TypedDict):
    """One Indicator of Attack Failure over the run (``summary["indicators"][name]``)."""

    count: int
    checked: int
    share: float | None


class AttackSummary(TypedDict, total=False):
    """``AuditResult.summary`` of the attack audit."""

    n: int
    clean_accuracy: float
    clean_correct: int
    clean_ci_low: float
    clean_ci_high: float
    interval: str
    results: list[ResultRow]
    min_norm: dict[str, MinNormStats]
    #: norm -> eps key -> AutoAttack sub-attack -> samples it broke
    autoattack_breakdown: dict[str, dict[str, dict[str, int]]]
    num_classes: int
    notices: list[str]
    checks: ChecksConfig
    flags: dict[str, bool | None]
    flag_messages: list[str]
    indicators: dict[str, IndicatorEntry]
    save_adv: str
