"""The demo pipeline: each audit on the bundled model and data, written under one folder.

Steps are data, so later audits join the demo by adding one entry to ``DEMO_STEPS``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .data import load_data
from .model.load import load_model
from .results import AuditResult


@dataclass(frozen=True)
class DemoStep:
    name: str
    title: str
    run: Callable[..., AuditResult]


def _curvature(n, progress):
    from .examples import attach_examples, curved_examples
    from .geometry import CurvatureOptions, curvature_audit

    model, data = load_model("demo"), load_data("demo", n=n)
    result = curvature_audit(model, data, CurvatureOptions(), batch_size=128, progress=progress,
                             config={"checkpoint": "demo"})
    if result.complete:  # the six most curved samples, for `lcnn-audit report`
        attach_examples(result, curved_examples(model, data, result, k=min(6, len(result))))
    return result


def _grad_robustness(n, progress):
    from .geometry.robustness import GradRobustnessOptions, grad_robustness

    return grad_robustness(load_model("demo"), load_data("demo", n=min(n, 64)), GradRobustnessOptions(draws=2),
                           progress=progress, config={"checkpoint": "demo"})


def _discrepancy(n, progress):
    from .geometry.robustness import discrepancy

    return discrepancy(load_model("demo"), load_data("demo", split="train", n=n), load_data("demo", n=n),
                       progress=progress, config={"checkpoint": "demo"})


def _attack(n, progress):
    from .attacks import AttackOptions, attack_audit

    # PGD-L2 over the LCNN paper's Table 2 sweep, 5 steps (plus the masking checks)
    return attack_audit(load_model("demo"), load_data("demo", n=n),
                        AttackOptions(attacks=("pgd",), norms=("l2",), eps=(0.05, 0.1, 0.15, 0.2), steps=5),
                        batch_size=128, progress=progress, config={"checkpoint": "demo"})


DEMO_STEPS: list[DemoStep] = [
    DemoStep("curvature", "curvature audit", _curvature),
    DemoStep("grad_robustness", "gradient robustness", _grad_robustness),
    DemoStep("discrepancy", "train-test discrepancy", _discrepancy),
    DemoStep("attack", "adversarial robustness (PGD-L2)", _attack),
]


def run_demo(step: DemoStep, out: Path, n: int = 256, progress=None) -> tuple[AuditResult, Path]:
    result = step.run(n, progress)
    path = Path(out) / f"{step.name}.json"
    result.save_json(path)
    return result, path
