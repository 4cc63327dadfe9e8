"""The audit registry (``lcnn_audit/audits/registry.py``): every entry runs and round-trips
through JSON, and a new audit is one module plus one registry entry - the gate (policy,
running, checks, result files), the demo and the report pick it up with no other edit."""

from __future__ import annotations

import dataclasses
import json
import sys
import types
from dataclasses import dataclass

import pytest
import torch

from lcnn_audit import gates
from lcnn_audit.audits import registry
from lcnn_audit.audits.registry import AUDITS, AuditSpec, DemoSettings, resolve
from lcnn_audit.cli.common import Ctx
from lcnn_audit.errors import ConfigError
from lcnn_audit.gates import DataSpec, load_policy
from lcnn_audit.loading import load_model
from lcnn_audit.options import Problem, finite_problems, validate
from lcnn_audit.report import build_report, load_inputs
from lcnn_audit.results import AuditResult
from tests.gate_helpers import invoke

#: small settings so that each audit runs in about a second on 4 demo samples
FAST = {
    "curvature": {"max_iter": 5, "fro_probes": 0, "jacobian": "off"},
    "attack": {"attacks": ("pgd",), "norms": ("l2",), "eps": (0.1,), "steps": 2},
    "grad_robustness": {"radii": (0.01, 0.1), "draws": 1},
    "bound": {"tol": 1e-3, "max_iter": 50},
}


@pytest.fixture(scope="module")
def demo_model():
    return load_model("demo", device="cpu")


# --------------------------------------------------------------------------- every entry


def test_entries_are_consistent():
    assert [a for a in AUDITS if a in FAST or a == "discrepancy"] == [
        "curvature", "attack", "grad_robustness", "discrepancy", "bound"]  # report order
    for name, spec in AUDITS.items():
        assert spec.name == name and registry.COMMANDS[spec.command] == name
        assert dataclasses.is_dataclass(spec.options_class) and callable(spec.run_function)
        spec.options_class().validate()  # the defaults are valid
    assert list(gates.AUDITS) == list(AUDITS) and dict(gates.COMMANDS) == dict(registry.COMMANDS)
    assert gates.AUDITS[0] == "curvature" and "bound" in gates.AUDITS and "toy" not in gates.AUDITS


def test_reading_the_registry_imports_no_torch():
    import subprocess

    code = "import sys; from lcnn_audit.audits.registry import AUDITS; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0


@pytest.mark.filterwarnings("ignore::lcnn_audit.notices.LcnnAuditNotice")
@pytest.mark.parametrize("name", list(AUDITS))
def test_every_audit_runs_on_demo_data_and_its_result_round_trips(name, demo_model, tmp_path, capsys):
    spec = AUDITS[name]
    source = DataSpec(name="demo", n=4)
    options = spec.options_class(**FAST.get(name, {}))
    result = spec.execute(demo_model, source.load(), options, source, config={"checkpoint": "demo"})
    assert isinstance(result, AuditResult) and result.complete
    assert result.command == spec.command and registry.by_command(result.command) is spec
    back = AuditResult.load(result.save_json(tmp_path / "r.json"))
    assert back.to_json() == result.to_json()
    assert json.loads(back.to_json())["command"] == spec.command
    assert len(result) % source.n == 0  # a row per sample (and split), or none (the bound)
    resolve(spec.renderer)(Ctx({}), back)  # the CLI renders what it reads back
    assert capsys.readouterr().out



# --------------------------------------------------------------------------- a new audit


@dataclass(frozen=True)
class ToyOptions:
    """audits.toy_audit: the mean top-class probability, times ``scale``."""

    scale: float = 1.0

    def problems(self) -> list[Problem]:
        out = finite_problems(self)
        if not self.scale > 0:
            out.append(Problem("scale", f"must be > 0, got {self.scale}"))
        return out

    def validate(self) -> None:
        validate(self)


def _toy_run(model, data, options=None, *, batch_size=128, progress=None, config=None):
    opts = options or ToyOptions()
    opts.validate()
    batch = data.get(torch.arange(len(data)))
    with torch.no_grad():
        conf = torch.softmax(model(batch.x), 1).amax(1).double() * opts.scale
    if progress is not None:
        progress(len(data), len(data))
    return AuditResult(command="toy-audit", config={"options": dataclasses.asdict(opts), **(config or {})},
                       summary={"confidence": {"mean": float(conf.mean())}, "n": len(data)},
                       per_sample={"index": batch.index.tolist(), "confidence": conf.tolist()})


def _toy_render(ctx, result):
    ctx.print(f"toy audit: mean confidence {result.summary['confidence']['mean']:.3f}")


@pytest.fixture(autouse=True)
def _registry_order_kept():
    """monkeypatch's undo re-inserts deleted entries last; keep the shipped order for later tests."""
    before = dict(AUDITS)
    yield
    AUDITS.clear()
    AUDITS.update(before)


@pytest.fixture
def toy(monkeypatch):
    """The whole of a new audit: a module (run + options + renderer) and one registry entry."""
    mod = types.ModuleType("toy_audit_module")
    mod.ToyOptions, mod.run, mod.render = ToyOptions, _toy_run, _toy_render
    monkeypatch.setitem(sys.modules, mod.__name__, mod)
    spec = AuditSpec("toy_audit", "toy-audit", "toy audit", options="toy_audit_module:ToyOptions",
                     run="toy_audit_module:run", renderer="toy_audit_module:render",
                     demo=DemoSettings("toy audit", options={"scale": 0.5}))
    monkeypatch.setitem(AUDITS, "toy_audit", spec)
    return spec


TOY_POLICY = """\
model: {checkpoint: demo, device: cpu}
data: {name: demo, n: 4}
audits:
  toy-audit:
    scale: %s
checks:
  - {name: confident, metric: toy_audit.confidence.mean, max: 0.5}
  - {name: four samples, metric: toy-audit.n, equals: 4}
"""


def test_a_new_audit_is_gated_with_no_other_edit(toy, tmp_path):
    policy = tmp_path / "policy.yaml"
    policy.write_text(TOY_POLICY % "0.5")
    loaded = load_policy(policy)
    assert loaded.audits == {"toy_audit": ToyOptions(scale=0.5)}
    verdict, results = gates.gate(policy)
    assert verdict.status == "pass", [(c.name, c.status, c.message) for c in verdict.checks]
    assert results["toy_audit"].command == "toy-audit" and 0 < results["toy_audit"].summary["confidence"]["mean"] <= .5
    # the CLI: run it, save the result, check the saved result again (--results reads toy-audit files)
    res = invoke("gate", policy, "--save-results", tmp_path / "res", "--json", tmp_path / "v.json")
    assert res.exit_code == 0, res.output
    assert (tmp_path / "res" / "toy-audit.json").is_file()
    res = invoke("gate", policy, "--results", tmp_path / "res")
    assert res.exit_code == 0, res.output
    # its options are validated like every audit's, each problem at its key's line
    policy.write_text(TOY_POLICY % "-1")
    with pytest.raises(ConfigError) as info:
        load_policy(policy)
    assert info.value.problems == ["audits.toy-audit (line 5): scale must be > 0, got -1.0"]


def test_a_new_audit_joins_the_demo_with_no_other_edit(toy, monkeypatch, tmp_path):
    from lcnn_audit import demo
    from lcnn_audit.cli import demo as cli_demo

    assert gates.AUDITS[-1] == "toy_audit" and gates.COMMANDS["toy-audit"] == "toy_audit"
    assert [s.name for s in demo.DEMO_STEPS][-1] == "toy_audit"
    assert list(cli_demo.RENDERERS)[-1] == "toy_audit"
    for name in [n for n in AUDITS if n != "toy_audit"]:  # the demo with the toy alone, to keep this fast
        monkeypatch.delitem(AUDITS, name)
    res = invoke("demo", "--out", tmp_path / "demo", "--n", "4")
    assert res.exit_code == 0, res.output
    assert "toy audit: mean confidence" in res.output
    saved = AuditResult.load(tmp_path / "demo" / "toy_audit.json")
    assert saved.command == "toy-audit" and saved.config["options"] == {"scale": 0.5} and len(saved) == 4


def test_a_new_audit_is_listed_by_the_report_with_no_other_edit(toy, demo_model, tmp_path):
    source = DataSpec(name="demo", n=4)
    path = toy.execute(demo_model, source.load(), ToyOptions(), source, config={"checkpoint": "demo"}).save_json(
        tmp_path / "toy.json")
    runs, _ = load_inputs([path])
    inputs = build_report(runs, plots=False)[0]
    assert inputs.anchor == "inputs" and inputs.blocks[0].rows[0][1] == "toy-audit"
    res = invoke("report", path, "-o", tmp_path / "r.md", "--no-plots")
    assert res.exit_code == 0, res.output
    assert "toy-audit" in (tmp_path / "r.md").read_text()


def _toy_section(runs, plots):
    from lcnn_audit.report import Section, Table

    return Section("Toy audit", "toy", [Table(["model", "mean confidence"],
                                              [[r.label, f"{r.result.summary['confidence']['mean']:.3f}"]
                                               for r in runs])])


def test_a_new_audit_with_a_section_gets_it_in_the_report(toy, demo_model, monkeypatch, tmp_path):
    """The registry entry's ``section`` is all the report needs: no table in the report to edit."""
    from lcnn_audit.report import SECTION_BUILDERS

    sys.modules["toy_audit_module"].section = _toy_section
    monkeypatch.setitem(AUDITS, "toy_audit", dataclasses.replace(AUDITS["toy_audit"],
                                                                 section="toy_audit_module:section"))
    assert list(SECTION_BUILDERS)[-1] == "toy-audit" and SECTION_BUILDERS["toy-audit"] is _toy_section
    source = DataSpec(name="demo", n=4)
    path = AUDITS["toy_audit"].execute(demo_model, source.load(), ToyOptions(), source,
                                       config={"checkpoint": "demo"}).save_json(tmp_path / "toy.json")
    runs, _ = load_inputs([path])
    sections = build_report(runs, plots=False)
    assert [s.anchor for s in sections] == ["inputs", "toy"]
    assert "No section" not in str(sections[0].blocks)
    res = invoke("report", path, "-o", tmp_path / "r.md", "--no-plots")
    assert res.exit_code == 0, res.output
    assert "Toy audit" in (tmp_path / "r.md").read_text()
