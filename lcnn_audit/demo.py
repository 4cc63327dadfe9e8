"""The demo pipeline: each audit on the bundled model and data, written under one folder.

The steps are the registry's audits that have :class:`~lcnn_audit.audits.registry.DemoSettings`
(:func:`demo_steps`, in registry order), so an audit joins the demo through its registry entry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from .audits.registry import AUDITS
from .gates.policy import DataSpec
from .model.load import load_model
from .results import AuditResult


@dataclass(frozen=True)
class DemoStep:
    """One demo step: ``run(n, progress) -> AuditResult`` runs audit ``name`` on ``n`` samples."""

    name: str
    title: str
    run: Callable[..., AuditResult]


def demo_steps() -> list[DemoStep]:
    """The demo's steps, read from the audit registry now (an entry added later is a step too)."""
    return [DemoStep(name, spec.demo.title, partial(run_step, name)) for name, spec in AUDITS.items()
            if spec.demo is not None]


def run_step(name: str, n: int, progress=None) -> AuditResult:
    """Audit ``name`` with its demo settings on the bundled model and ``n`` test samples (fewer
    where the settings say so), through :meth:`~lcnn_audit.audits.registry.AuditSpec.execute`."""
    spec = AUDITS[name]
    settings = spec.demo
    if settings is None:
        raise KeyError(f"the {name} audit has no demo settings")
    source = DataSpec(name="demo", n=n if settings.max_n is None else min(n, settings.max_n))
    options = spec.options_class(**settings.options)
    return spec.execute(load_model("demo"), source.load(), options, source, progress=progress,
                        config={"checkpoint": "demo"}, **settings.kwargs)


def run_demo(step: DemoStep, out: Path, n: int = 256, progress=None) -> tuple[AuditResult, Path]:
    """Run ``step`` on ``n`` samples and write its result as ``OUT/NAME.json``."""
    result = step.run(n, progress)
    path = Path(out) / f"{step.name}.json"
    result.save_json(path)
    return result, path


def __getattr__(name: str):
    if name == "DEMO_STEPS":  # the steps as a list, as read now (see demo_steps)
        return demo_steps()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
