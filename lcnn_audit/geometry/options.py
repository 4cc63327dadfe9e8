"""The options of the curvature engine and the audits built on it, importable without torch.

:class:`CurvatureOptions` (``lcnn-audit curvature``), :class:`GradRobustnessOptions`
(``grad-robustness``, LCNN Fig. 2) and :class:`DiscrepancyOptions` (``discrepancy``, LCNN
Table 3) are frozen dataclasses in the style of :mod:`lcnn_audit.options`. They live here,
apart from the torch kernels, so that the CLI reads its defaults from them while
``lcnn-audit --help`` imports no torch; :mod:`.measures`, :mod:`.robustness` and
:mod:`lcnn_audit.audits.discrepancy` re-export them.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from ..options import Problem, finite_problems, literal, nested, validate

#: the per-sample scalar f (:mod:`.objective`): the loss at the label, or the label's logit
TARGETS = ("loss", "logit")
#: whose label f uses: the true label or the predicted class
LABELS = ("true", "pred")
METHODS = ("auto", "lanczos", "power", "reference", "gauss-newton")
JACOBIAN_MODES = ("auto", "exact", "estimate", "off")
#: 9 log-spaced noise norms in [1e-3, 1e-1] (as ``torch.logspace(-3, -1, 9)`` in float64)
DEFAULT_RADII = tuple(10.0 ** (-3 + 2 * i / 8) for i in range(9))


@dataclass(frozen=True)
class CurvatureOptions:
    """Settings of the curvature engine (CLI flags of the same names)."""

    target: str = "loss"
    label: str = "true"
    method: str = "auto"
    tol: float = 1e-3
    atol: float = 0.0
    max_iter: int = 40
    iters: int = 20  # power iteration steps
    profile: int = 0
    fd_h: float | None = None
    eps: float = 1e-6
    fro_probes: int = 8
    jacobian: str = "auto"
    jacobian_probes: int = 32
    gn_max_classes: int = 64
    smooth_relu: float | None = None
    dtype: str = "float32"
    seed: int = 0

    def problems(self) -> list[Problem]:
        """Every problem of these settings (fields by name; see :mod:`lcnn_audit.options`)."""
        out = finite_problems(self)
        for name, choices in (("target", TARGETS), ("label", LABELS), ("method", METHODS),
                              ("jacobian", JACOBIAN_MODES)):
            if getattr(self, name) not in choices:
                out.append(Problem(None, f"unknown {{{name}}} {literal(getattr(self, name))}; use one of "
                                         f"{', '.join(choices)}"))
        if not (0 < self.tol < 1):
            out.append(Problem("tol", f"must lie in (0, 1), got {self.tol}"))
        for name in ("max_iter", "iters"):
            if getattr(self, name) < 1:
                out.append(Problem(name, f"must be at least 1, got {getattr(self, name)}"))
        if self.profile < 0:
            out.append(Problem("profile", f"must be >= 0, got {self.profile}"))
        if self.fd_h is not None and self.fd_h <= 0:
            out.append(Problem("fd_h", f"must be positive, got {self.fd_h}"))
        if self.eps < 0:
            out.append(Problem("eps", f"must be >= 0, got {self.eps}"))
        return out

    def validate(self) -> None:
        """Raise one OptionsError listing every problem."""
        validate(self)

    def to_dict(self) -> dict:
        """The JSON form (``config.options`` of a result)."""
        return asdict(self)


@dataclass(frozen=True)
class GradRobustnessOptions:
    """Settings of ``grad_robustness`` (CLI flags of the same names)."""

    radii: tuple[float, ...] = DEFAULT_RADII
    draws: int = 4
    adversarial: bool = False
    adv_steps: int = 5
    curvature: CurvatureOptions = field(default_factory=CurvatureOptions)

    def problems(self) -> list[Problem]:
        """Every problem of these settings; the curvature engine's as ``curvature.FIELD``."""
        out = finite_problems(self)
        if not self.radii or any(not (r > 0 and math.isfinite(r)) for r in self.radii):
            out.append(Problem("radii", "must be positive numbers"))
        if self.draws < 1:
            out.append(Problem("draws", "must be at least 1"))
        if self.adv_steps < 1:
            out.append(Problem("adv_steps", "must be at least 1"))
        return out + nested("curvature", self.curvature.problems())

    def validate(self) -> None:
        """Raise one OptionsError listing every problem."""
        validate(self)

    def to_dict(self) -> dict:
        """The JSON form (``config.options`` of a result)."""
        return asdict(self)


@dataclass(frozen=True)
class DiscrepancyOptions:
    """``audits.discrepancy``: the train data (default: the same dataset's train split) and the
    curvature engine's settings under ``curvature:``."""

    train_path: str | None = None
    curvature: CurvatureOptions = field(default_factory=CurvatureOptions)

    def problems(self) -> list[Problem]:
        """The curvature settings' problems, as ``curvature.FIELD``."""
        return nested("curvature", self.curvature.problems())

    def validate(self) -> None:
        """Raise one OptionsError listing every problem."""
        validate(self)
