"""Bad values are one-line errors, never a NaN result or an always-passing check: non-finite
options, non-finite policy thresholds, non-UTF-8 or oversized policies, YAML alias bombs,
result and baseline files of the wrong structure, Rich markup in paths."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from lcnn_audit.errors import ConfigError, UsageError
from lcnn_audit.gates import load_policy
from tests.gate_helpers import invoke


def one_line_error(res, *words):
    assert res.exit_code == 2, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), res.output
    flat = " ".join(res.output.split())
    for w in words:
        assert w in flat, (w, res.output)


@pytest.fixture
def no_compute(monkeypatch):
    import lcnn_audit.data
    import lcnn_audit.loading
    import lcnn_audit.model.load

    def boom(*a, **k):
        raise AssertionError("a bad option value was not refused before loading")

    monkeypatch.setattr(lcnn_audit.loading, "load_model", boom)
    monkeypatch.setattr(lcnn_audit.model.load, "load_model", boom)  # its home since issue 13
    monkeypatch.setattr(lcnn_audit.data, "load_data", boom)


NON_FINITE = [
    (["curvature", "demo", "--eps", "nan"], "--eps"),
    (["curvature", "demo", "--fd-h", "nan"], "--fd-h"),
    (["curvature", "demo", "--atol", "inf"], "--atol"),
    (["curvature", "demo", "--smooth-relu", "inf"], "--smooth-relu"),
    (["curvature", "demo", "--tol", "nan"], "--tol"),
    (["attack", "demo", "--step-size", "nan"], "--step-size"),
    (["attack", "demo", "--attack", "deepfool", "--overshoot", "inf"], "--overshoot"),
    (["attack", "demo", "--attack", "cw", "--cw-lr", "nan"], "--cw-lr"),
    (["attack", "demo", "--eps", "nan"], "eps"),
    (["attack", "demo", "--eps", "inf"], "eps"),
    (["grad-robustness", "demo", "--radii", "0.1,nan"], "--radii"),
    (["bound", "demo", "--input-shape", "1,28,28", "--lambda-beta", "nan"], "--lambda-beta"),
    (["bound", "demo", "--input-shape", "1,28,28", "--tol", "inf"], "--tol"),
    (["convert", "demo", "-o", "x.safetensors", "--beta-init", "inf"], "--beta-init"),
    (["convert", "demo", "-o", "x.safetensors", "--tol", "nan"], "--tol"),
    (["finetune", "demo", "-o", "x.safetensors", "--lr", "nan"], "--lr"),
    (["finetune", "demo", "-o", "x.safetensors", "--cure-h", "inf"], "--cure-h"),
    (["finetune", "demo", "-o", "x.safetensors", "--momentum", "nan"], "--momentum"),
    (["discrepancy", "demo", "--smooth-relu", "nan"], "--smooth-relu"),
]


@pytest.mark.parametrize("args,flag", NON_FINITE, ids=[" ".join(a) for a, _ in NON_FINITE])
def test_non_finite_option_values_are_refused(tmp_path, monkeypatch, no_compute, args, flag):
    monkeypatch.chdir(tmp_path)
    one_line_error(invoke(*args), flag, "finite")


def test_options_classes_refuse_non_finite_values():
    from lcnn_audit import AttackOptions, CurvatureOptions, GradRobustnessOptions
    from lcnn_audit.penalties import PenaltyConfig
    from lcnn_audit.training import TrainConfig

    for bad in (CurvatureOptions(eps=math.nan), CurvatureOptions(fd_h=math.nan), CurvatureOptions(atol=math.inf),
                GradRobustnessOptions(curvature=CurvatureOptions(eps=math.nan)),
                AttackOptions(step_size=math.nan), AttackOptions(cw_lr=math.inf)):
        with pytest.raises(UsageError, match="finite"):
            bad.validate()
    with pytest.raises(ConfigError, match="finite"):
        TrainConfig(lr=math.nan).validate()
    assert any("finite" in p for p in PenaltyConfig(cure_h=math.inf).problems())


# --------------------------------------------------------------------------- policies


def _policy(tmp_path: Path, text: str | bytes) -> Path:
    p = tmp_path / "p.yaml"
    p.write_bytes(text if isinstance(text, bytes) else text.encode())
    return p


def _result(tmp_path: Path) -> Path:
    r = tmp_path / "curvature.json"
    r.write_text(json.dumps({"command": "curvature", "config": {}, "summary": {"curvature": {"mean": 5.0}},
                             "per_sample": {}}))
    return r


@pytest.mark.parametrize("bound", ["1.0e+400", "-1.0e+400", ".inf", "-.inf", ".nan", "1e999"])
def test_non_finite_policy_threshold_is_an_error_with_its_line(tmp_path, bound):
    pol = _policy(tmp_path, f"name: x\nchecks:\n  - metric: curvature.curvature.mean\n    max: {bound}\n")
    with pytest.raises(ConfigError, match=r"checks\[0\]\.max \(line 4\): must be a finite number"):
        load_policy(pol, compute=False)
    one_line_error(invoke("gate", pol, "--results", _result(tmp_path)), "checks[0].max (line 4)", "finite")


def test_non_finite_audit_option_in_policy(tmp_path):
    pol = _policy(tmp_path, "model: {checkpoint: demo}\ndata: {name: demo}\naudits:\n  curvature: {eps: .nan}\n"
                            "checks:\n  - {metric: curvature.curvature.mean, max: 1}\n")
    with pytest.raises(ConfigError, match="audits.curvature .*eps must be a finite number"):
        load_policy(pol)


def test_non_utf8_policy(tmp_path):
    pol = _policy(tmp_path, b"name: \xff\xfe\nchecks: []\n")
    one_line_error(invoke("gate", pol, "--results", _result(tmp_path)), "not UTF-8")


def test_oversized_policy(tmp_path):
    pol = _policy(tmp_path, "# " + "x" * (1 << 20) + "\nchecks: []\n")
    one_line_error(invoke("gate", pol, "--results", _result(tmp_path)), "a policy is at most")


BOMB = "".join(f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi", strict=True))


def test_yaml_alias_bomb_is_refused_quickly(tmp_path):
    """9 levels of 9 aliases: 9^9 (387 million) values. Composing it is linear; walking it
    (line numbers, validation) was not, and hung the gate."""
    pol = _policy(tmp_path, "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + BOMB + "checks: [*i]\n")
    one_line_error(invoke("gate", pol, "--results", _result(tmp_path)), "expands to more than", "aliases")


def test_a_few_aliases_are_fine(tmp_path):
    pol = _policy(tmp_path, "name: x\nchecks:\n  - &c {metric: curvature.curvature.mean, max: 10}\n"
                            "  - {metric: curvature.curvature.max, max: 10}\n")
    assert len(load_policy(pol, compute=False).checks) == 2


# --------------------------------------------------------------------------- result files


BAD_RESULTS = {
    "a list": [1, 2],
    "summary a list": {"command": "curvature", "config": {}, "summary": [], "per_sample": {}},
    "per_sample a number": {"command": "curvature", "config": {}, "summary": {}, "per_sample": 3},
    "command a number": {"command": 3, "config": {}, "summary": {}, "per_sample": {}},
    "complete a string": {"command": "curvature", "config": {}, "summary": {}, "per_sample": {}, "complete": "no"},
}


@pytest.mark.parametrize("case", list(BAD_RESULTS))
def test_gate_results_of_the_wrong_structure(tmp_path, case):
    pol = _policy(tmp_path, "checks:\n  - {metric: curvature.curvature.mean, max: 10}\n")
    r = tmp_path / "r.json"
    r.write_text(json.dumps(BAD_RESULTS[case]))
    one_line_error(invoke("gate", pol, "--results", r), "--results", str(r), "not an lcnn-audit result")


def test_gate_results_not_utf8_in_a_directory(tmp_path):
    pol = _policy(tmp_path, "checks:\n  - {metric: curvature.curvature.mean, max: 10}\n")
    d = tmp_path / "runs"
    d.mkdir()
    (d / "x.json").write_bytes(b"\xff\xfe\x00")
    one_line_error(invoke("gate", pol, "--results", d), "not a text (JSON) file")


def test_baseline_verdict_of_the_wrong_structure(tmp_path):
    (tmp_path / "base.json").write_text(json.dumps({"kind": "lcnn-audit-verdict", "checks": ["x"]}))
    pol = _policy(tmp_path, "checks:\n  - {metric: curvature.curvature.mean, max: baseline, "
                            "relative_to: base.json}\n")
    one_line_error(invoke("gate", pol, "--results", _result(tmp_path)), "base.json is not a valid gate verdict")


def test_report_of_a_non_utf8_file(tmp_path):
    (tmp_path / "r.json").write_bytes(b"\xff\xfe")
    one_line_error(invoke("report", tmp_path / "r.json", "-o", tmp_path / "r.md"), "not a text (JSON) file")


# --------------------------------------------------------------------------- paths printed literally


@pytest.mark.parametrize("name", ["[exp1]", "[/x]", "[bold red]", "[link=file:///etc]"])
def test_markup_characters_in_paths_print_literally(tmp_path, name):
    pol = tmp_path / name / "p.yaml"
    res = invoke("gate", pol, "--results", tmp_path / "r.json")
    one_line_error(res, f"policy file not found: {pol}")
    (tmp_path / name).mkdir(parents=True)
    (tmp_path / name / "f").write_text("a file in the way")
    res = invoke("curvature", "demo", "--json", tmp_path / name / "f" / "r.json")
    one_line_error(res, f"cannot create the folder {tmp_path / name / 'f'}")
