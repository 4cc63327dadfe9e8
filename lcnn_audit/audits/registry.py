"""The audit registry: one :class:`AuditSpec` per audit, in a fixed order (:data:`AUDITS`).

The gate (policy options, running, metric names, result files), the demo and its terminal
output read this table, so adding an audit is two steps: a module with a
``run(model, data, options, *, batch_size=128, progress=None, config=None) -> AuditResult``
function and a frozen options class with ``problems()``/``validate()`` (see
:mod:`lcnn_audit.options`), and one entry here. ``tests/audits/test_registry.py`` registers a
toy audit that way and checks that the gate, the demo and the report pick it up.

Everything an entry points to is a reference: an object, or a ``"package.module:attr"`` string
imported on first use (:func:`resolve`). This module imports nothing of the package, so that
reading the table (the CLI's help, the policy validator) imports no torch.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

#: an object, or ``"package.module:attr"`` naming one (imported by :func:`resolve`)
Ref = Any


def resolve(ref: Ref) -> Any:
    """The object ``ref`` names: ``"package.module:attr"`` is imported; anything else is returned as is."""
    if not isinstance(ref, str):
        return ref
    module, sep, attr = ref.partition(":")
    if not sep or not module or not attr:
        raise ValueError(f"a registry reference is 'package.module:attr', got {ref!r}")
    obj: Any = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


@dataclass(frozen=True)
class DemoSettings:
    """How ``lcnn-audit demo`` runs an audit on the bundled model and data.

    ``options``: keyword arguments of the audit's options class (the rest at their defaults);
    ``max_n``: at most this many samples (default: the demo's ``--n``); ``kwargs``: further
    keyword arguments of the audit's ``run`` (e.g. ``examples=6``)."""

    title: str
    options: Mapping[str, Any] = field(default_factory=dict)
    max_n: int | None = None
    kwargs: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AuditSpec:
    """One audit, everything the front ends need to know about it.

    * ``name``: the audit in policies and metric paths (``grad_robustness``); ``command``:
      the CLI command and the result's ``command`` (``grad-robustness``); ``title``: words;
    * ``options``: the options class (a frozen dataclass with ``problems()``); a policy's
      ``audits.NAME`` mapping is read into it field by field;
    * ``run``: ``run(model, data, options, *, batch_size, progress, config, **kw) -> AuditResult``;
    * ``inputs``: optional ``inputs(options, data, source) -> dict`` giving ``run``'s data
      arguments when they are more than ``data`` (the discrepancy reads a train split from
      ``source``, a :class:`~lcnn_audit.gates.DataSpec`); default ``{"data": data}``;
    * ``needs_data``: whether ``run`` reads samples: a bool, or a predicate on the options
      (the bound needs data only for the input shape);
    * ``path_fields``: option fields holding file paths (a policy resolves them against its folder);
    * ``metric_check``: optional ``check(keys, options) -> list[str]``, static problems of a
      metric path ``NAME.KEY...`` (keys after the name) against the policy's options;
    * ``renderer``: the CLI's ``render(ctx, result)`` (a ``lcnn_audit.cli`` reference, resolved
      only by the CLI); ``demo``: :class:`DemoSettings`, or None to leave the audit out of the demo;
    * ``section``: the report's section builder ``(runs, plots) -> Section`` (``lcnn_audit.report``
      reads it live: an audit with a section gets one in every report).
    """

    name: str
    command: str
    title: str
    options: Ref
    run: Ref
    renderer: Ref | None = None
    demo: DemoSettings | None = None
    needs_data: bool | Ref = True
    inputs: Ref | None = None
    path_fields: tuple[str, ...] = ()
    metric_check: Ref | None = None
    section: Ref | None = None

    @property
    def options_class(self) -> type:
        """The options class (imported on first use)."""
        return resolve(self.options)

    @property
    def run_function(self) -> Callable[..., Any]:
        """The ``run`` function (imported on first use)."""
        return resolve(self.run)

    def requires_data(self, options: Any) -> bool:
        """Whether running with ``options`` reads samples."""
        if isinstance(self.needs_data, bool):
            return self.needs_data
        return bool(resolve(self.needs_data)(options))

    def execute(self, model: Any, data: Any, options: Any, source: Any = None, *, batch_size: int | None = None,
                progress: Any = None, config: dict | None = None, **kwargs: Any) -> Any:
        """Run the audit: ``run(model, **inputs, options=options, ...)``, its data arguments
        from :attr:`inputs` (``source`` describes the data, for audits that read more of it).
        ``batch_size`` defaults to ``source.batch_size`` (else the run function's default)."""
        inputs = resolve(self.inputs)(options, data, source) if self.inputs is not None else {"data": data}
        if batch_size is None and source is not None:
            batch_size = source.batch_size
        if batch_size is not None:
            kwargs["batch_size"] = batch_size
        return self.run_function(model, options=options, progress=progress, config=config, **inputs, **kwargs)


_CLI = "lcnn_audit.cli"
_REPORT = "lcnn_audit.report.sections"

#: every audit, in report order; add an entry to add an audit (keep this dict: the gate reads it live)
AUDITS: dict[str, AuditSpec] = {
    "curvature": AuditSpec(
        "curvature", "curvature", "curvature audit",
        options="lcnn_audit.geometry.options:CurvatureOptions", run="lcnn_audit.audits.curvature:run",
        renderer=f"{_CLI}.curvature:render_curvature", section=f"{_REPORT}:curvature_section",
        demo=DemoSettings("curvature audit", kwargs={"examples": 6})),
    "attack": AuditSpec(
        "attack", "attack", "adversarial robustness",
        options="lcnn_audit.attacks.options:AttackOptions", run="lcnn_audit.audits.attack:run",
        renderer=f"{_CLI}.attack:render_attack", section=f"{_REPORT}:attack_section",
        # PGD-L2 over the LCNN paper's Table 2 sweep, 5 steps (plus the masking checks)
        demo=DemoSettings("adversarial robustness (PGD-L2)", options={
            "attacks": ("pgd",), "norms": ("l2",), "eps": (0.05, 0.1, 0.15, 0.2), "steps": 5}),
        metric_check="lcnn_audit.gates.policy:_attack_metric_problems"),
    "grad_robustness": AuditSpec(
        "grad_robustness", "grad-robustness", "gradient robustness",
        options="lcnn_audit.geometry.options:GradRobustnessOptions", run="lcnn_audit.audits.grad_robustness:run",
        renderer=f"{_CLI}.robustness:render_grad_robustness",
        section=f"{_REPORT}:grad_robustness_section",
        demo=DemoSettings("gradient robustness", options={"draws": 2}, max_n=64)),
    "discrepancy": AuditSpec(
        "discrepancy", "discrepancy", "train-test discrepancy",
        options="lcnn_audit.geometry.options:DiscrepancyOptions", run="lcnn_audit.audits.discrepancy:run",
        inputs="lcnn_audit.audits.discrepancy:inputs", path_fields=("train_path",),
        renderer=f"{_CLI}.robustness:render_discrepancy", section=f"{_REPORT}:discrepancy_section",
        demo=DemoSettings("train-test discrepancy")),
    "bound": AuditSpec(
        "bound", "bound", "data-free bound",
        options="lcnn_audit.bound.options:BoundOptions", run="lcnn_audit.audits.bound:run",
        needs_data="lcnn_audit.audits.bound:needs_data", renderer=f"{_CLI}.bound:render_bound",
        section=f"{_REPORT}:bound_section"),
}


#: the built-in audits' names, as shipped (a snapshot: entries added at run time are not in it)
BUILTIN: tuple[str, ...] = tuple(AUDITS)


def by_command(command: str) -> AuditSpec | None:
    """The audit whose results carry ``command`` (``grad-robustness``), or None."""
    return next((s for s in AUDITS.values() if s.command == command), None)


class _Names(Sequence):
    """The audit names in registry order, read from :data:`AUDITS` on every use (a live tuple)."""

    def __getitem__(self, i):
        return tuple(AUDITS)[i]

    def __len__(self) -> int:
        return len(AUDITS)

    def __contains__(self, name: object) -> bool:
        return name in AUDITS

    def __repr__(self) -> str:
        return repr(tuple(AUDITS))


#: the audit names (``curvature``, ``attack``, ...), live
NAMES: Sequence[str] = _Names()


class _Commands(Mapping):
    """Result ``command`` -> audit name, read from :data:`AUDITS` on every use."""

    def __getitem__(self, command: str) -> str:
        spec = by_command(command)
        if spec is None:
            raise KeyError(command)
        return spec.name

    def __iter__(self) -> Iterator[str]:
        return iter([s.command for s in AUDITS.values()])

    def __len__(self) -> int:
        return len(AUDITS)

    def __repr__(self) -> str:
        return repr(dict(self))


#: result ``command`` -> audit name (``grad-robustness`` -> ``grad_robustness``), live
COMMANDS: Mapping[str, str] = _Commands()
