"""What a gate policy says, once validated: the model, the data, the audits and the checks.

:mod:`.policy` reads and validates a YAML policy into these frozen dataclasses; :mod:`.run`
and :mod:`.verdict` consume them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .metrics import audit_name

BOUNDS = ("max", "min", "equals")
BASELINE = "baseline"
TOP_KEYS = ("version", "name", "model", "data", "audits", "checks")
CHECK_KEYS = ("name", "metric", *BOUNDS, "relative_to", "tolerance", "statistical")


@dataclass(frozen=True)
class ModelSpec:
    """``model:`` - how :func:`lcnn_audit.load_model` loads the checkpoint."""

    checkpoint: str
    arch: str | None = None
    arch_kwargs: dict[str, Any] | str | None = None
    trust_checkpoint: bool = False
    normalize: str | list[float] | None = None
    output_key: str | None = None
    state_key: str | None = None
    device: str = "auto"


@dataclass(frozen=True)
class DataSpec:
    """``data:`` - a dataset ``name`` (demo, cifar10, ...) or a ``path``, as :func:`lcnn_audit.load_data`."""

    name: str | None = None
    path: str | None = None
    split: str = "test"
    n: int | None = None
    seed: int = 0
    root: str | None = None
    download: bool = False
    batch_size: int = 128
    single_split: bool = False  # an ImageFolder without train/ and test/ subfolders (see load_data)

    @property
    def spec(self) -> str:
        """The data spec: the file path if given, else the dataset name."""
        return self.path if self.path is not None else str(self.name)

    def load(self, split: str | None = None, spec: str | None = None):
        """Load the policy's data (``split`` and ``spec`` override the policy's own)."""
        from ..data import load_data

        return load_data(spec or self.spec, split or self.split, n=self.n, seed=self.seed, data_root=self.root,
                         download=self.download, single_split=self.single_split)


@dataclass(frozen=True)
class Check:
    """One check: ``metric`` against ``op`` (max, min or equals) of ``bound`` (a value, or
    ``"baseline"`` with ``relative_to``). ``path`` is its place in the YAML (``checks[2]``)."""

    name: str
    metric: str
    op: str
    bound: Any
    path: str
    relative_to: str | None = None
    baseline: Any = None
    tolerance: float = 0.0
    tolerance_relative: bool = False
    statistical: bool = False
    skip: bool = False  # a regression check under --no-regression

    @property
    def audit(self) -> str:
        """The audit the metric reads (its first segment)."""
        return audit_name(self.metric.split(".", 1)[0])

    @property
    def tolerance_text(self) -> str | None:
        """The tolerance as written (``5%`` or ``0.01``), or None."""
        if not self.tolerance:
            return None
        return f"{self.tolerance * 100:g}%" if self.tolerance_relative else f"{self.tolerance:g}"

    def threshold(self) -> Any:
        """The bound in force: the value, or the baseline moved by the tolerance in the allowed direction."""
        base = self.baseline if self.bound == BASELINE else self.bound
        if isinstance(base, bool) or not isinstance(base, (int, float)) or self.op == "equals":
            return base
        tol = self.tolerance * abs(base) if self.tolerance_relative else self.tolerance
        return base + tol if self.op == "max" else base - tol

    def equals_tolerance(self) -> float:
        """The absolute tolerance of ``equals`` (a relative one scaled by the bound or baseline)."""
        base = self.baseline if self.bound == BASELINE else self.bound
        if self.tolerance_relative and isinstance(base, (int, float)):
            return self.tolerance * abs(base)
        return self.tolerance


@dataclass(frozen=True)
class Policy:
    """A validated policy. ``audits`` maps each audit to run onto its options object."""

    source: str
    name: str
    checks: tuple[Check, ...]
    model: ModelSpec | None = None
    data: DataSpec | None = None
    audits: dict[str, Any] = field(default_factory=dict)

