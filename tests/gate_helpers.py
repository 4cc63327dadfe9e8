"""Shared by test_gates.py and test_report.py: one real gate run on the bundled demo, made once."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from lcnn_audit.cli import app

runner = CliRunner()

#: every audit, on 8 demo samples, with small settings (a few seconds on CPU)
DEMO_POLICY = """\
name: demo-tiny
model: {checkpoint: demo, device: cpu}
data: {name: demo, n: 8, seed: 0}
audits:
  curvature: {max_iter: 10, fro_probes: 0, jacobian: "off"}
  attack: {attacks: [pgd], norms: [l2], eps: [0.1, 0.5], steps: 2}
  grad_robustness: {radii: [0.01, 0.1], draws: 1, curvature: {max_iter: 5, fro_probes: 0, jacobian: "off"}}
  discrepancy: {curvature: {max_iter: 5, fro_probes: 0, jacobian: "off"}}
  bound: {tol: 1.0e-3, max_iter: 50}
checks:
  - {name: curvature below 1000, metric: curvature.curvature.mean, max: 1000}
  - {name: clean accuracy, metric: attack.clean_accuracy, min: 0.1, statistical: true}
  - {name: robust accuracy, metric: attack.pgd.l2.0.1.robust_accuracy, min: 0.0}
  - {name: no masking, metric: attack.flags.gradient_masking, equals: false}
  - {name: gradient robustness, metric: grad_robustness.curves.0.1.mean, max: 100}
  - {name: discrepancy, metric: discrepancy.delta_tt.curvature, max: 10}
  - {name: lipschitz, metric: bound.lipschitz, min: 0}
"""

_CACHE: dict[str, object] = {}


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def demo_run(tmp_path_factory) -> dict:
    """Run DEMO_POLICY once per session: {"dir", "policy", "results", "verdict", "junit", "markdown", "output",
    "exit_code"}; results/ holds one JSON per audit."""
    if "run" not in _CACHE:
        d: Path = tmp_path_factory.mktemp("demo-gate")
        policy = d / "policy.yaml"
        policy.write_text(DEMO_POLICY)
        res = invoke("gate", policy, "--save-results", d / "results", "--json", d / "verdict.json",
                     "--junit", d / "junit.xml", "--markdown", d / "summary.md")
        _CACHE["run"] = {"dir": d, "policy": policy, "results": d / "results", "verdict": d / "verdict.json",
                         "junit": d / "junit.xml", "markdown": d / "summary.md", "output": res.output,
                         "exit_code": res.exit_code}
    return _CACHE["run"]
