"""``lcnn-audit gate``: policies that pass and fail, every malformed policy listed at once with
its YAML path, metric paths, statistical and regression checks, JUnit/Markdown outputs, exit codes."""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET

import pytest

from lcnn_audit import gates
from lcnn_audit.attacks.stats import clopper_pearson
from lcnn_audit.errors import CheckFailedError, ConfigError
from lcnn_audit.gates import evaluate, load_policy, policy_from_dict, resolve_metric
from lcnn_audit.report import verdict_junit, verdict_markdown
from lcnn_audit.results import AuditResult
from tests.gate_helpers import demo_run, invoke


@pytest.fixture(scope="session")
def run(tmp_path_factory):
    return demo_run(tmp_path_factory)


def write(tmp_path, text: str, name: str = "policy.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def results_policy(tmp_path, checks: str, name: str = "policy.yaml"):
    """A policy for --results mode: only checks."""
    return write(tmp_path, "name: t\nchecks:\n" + checks, name)


# --------------------------------------------------------------------------- end to end


def test_demo_policy_runs_every_audit_and_passes(run):
    assert run["exit_code"] == 0, run["output"]
    assert sorted(p.name for p in run["results"].iterdir()) == [
        "attack.json", "bound.json", "curvature.json", "discrepancy.json", "grad-robustness.json"]
    v = json.loads(run["verdict"].read_text())
    assert v["kind"] == "lcnn-audit-verdict" and v["status"] == "pass" and v["exit_code"] == 0
    assert v["counts"] == {"pass": 7, "fail": 0, "error": 0, "skip": 0}
    assert set(v["sources"].values()) == {"computed"}
    assert "verdict: PASSED" in run["output"]


def test_results_mode_rechecks_saved_results_without_computing(run, tmp_path, monkeypatch):
    for name in gates.AUDITS:
        monkeypatch.setitem(gates.RUNNERS, name, lambda *a: pytest.fail("--results must not run audits"))
    res = invoke("gate", run["policy"], "--results", run["results"], "--json", tmp_path / "v.json")
    assert res.exit_code == 0, res.output
    v = json.loads((tmp_path / "v.json").read_text())
    assert v["sources"]["curvature"].endswith("curvature.json")
    before = {c["name"]: c["value"] for c in json.loads(run["verdict"].read_text())["checks"]}
    assert {c["name"]: c["value"] for c in v["checks"]} == before


def test_results_as_several_positional_files(run):
    files = sorted(run["results"].glob("*.json"))
    res = invoke("gate", run["policy"], "--results", *files)  # as the shell expands --results runs/*.json
    assert res.exit_code == 0, res.output


def test_failing_policy_exits_1_and_junit_has_the_failure(run, tmp_path):
    policy = results_policy(tmp_path, """\
  - {name: flat enough, metric: curvature.curvature.mean, max: 1.0e-9}
  - {name: accurate, metric: attack.clean_accuracy, min: 0}
""")
    res = invoke("gate", policy, "--results", run["results"], "--junit", tmp_path / "j.xml",
                 "--markdown", tmp_path / "s.md", "--json", tmp_path / "v.json")
    assert res.exit_code == 1, res.output
    assert "FAILED" in res.output
    root = ET.fromstring((tmp_path / "j.xml").read_text())
    cases = root.findall(".//testcase")
    assert [c.get("name") for c in cases] == ["flat enough", "accurate"]
    assert cases[0].find("failure") is not None and cases[1].find("failure") is None
    assert root.get("failures") == "1" and root.find("testsuite").get("tests") == "2"
    md = (tmp_path / "s.md").read_text()
    assert "❌ fail" in md and "✅ pass" in md and "| flat enough |" in md


def test_junit_parses_with_one_testcase_per_check(run):
    root = ET.fromstring(run["junit"].read_text())
    suite = root.find("testsuite")
    names = [c["name"] for c in json.loads(run["verdict"].read_text())["checks"]]
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == names
    assert {c.get("classname") for c in cases} == {f"lcnn_audit.gate.{a}" for a in gates.AUDITS}
    assert suite.get("tests") == str(len(names)) and suite.get("failures") == "0" and suite.get("errors") == "0"
    assert all(c.find("failure") is None and c.find("error") is None for c in cases)
    assert suite.find("properties/property[@name='policy']") is not None


def test_markdown_summary_for_github(run):
    md = run["markdown"].read_text()
    assert md.startswith("## ✅ lcnn-audit gate: demo-tiny")
    assert "| status | check | value | bound | detail |" in md
    assert md.count("✅ pass") == 7


# --------------------------------------------------------------------------- exit codes


def test_exit_code_2_for_policy_errors_usage_errors_and_unevaluable_checks(run, tmp_path):
    bad = write(tmp_path, "checks: [", "bad.yaml")
    res = invoke("gate", bad)
    assert res.exit_code == 2 and "not valid YAML" in res.output and "Traceback" not in res.output
    assert invoke("gate").exit_code == 2  # Typer usage error: no POLICY
    res = invoke("gate", run["policy"], "--results", tmp_path / "missing.json")
    assert res.exit_code == 2 and "result file not found" in res.output
    res = invoke("gate", run["policy"], "--results", run["results"], "--save-results", tmp_path / "x")
    assert res.exit_code == 2 and "--save-results" in res.output
    typo = results_policy(tmp_path, "  - {metric: curvature.curvatur.mean, max: 1}\n", "typo.yaml")
    res = invoke("gate", typo, "--results", run["results"], "--json", tmp_path / "v.json",
                 "--junit", tmp_path / "j.xml")
    assert res.exit_code == 2, res.output
    v = json.loads((tmp_path / "v.json").read_text())
    assert v["status"] == "error" and "did you mean curvature?" in v["checks"][0]["message"]
    assert ET.fromstring((tmp_path / "j.xml").read_text()).find(".//testcase/error") is not None


def test_exit_code_3_when_an_audit_validity_check_fails(tmp_path, monkeypatch):
    def broken(*args):
        raise CheckFailedError("pgd l2 eps=0.1: an adversarial example lies outside its eps-ball")

    monkeypatch.setitem(gates.RUNNERS, "curvature", broken)
    policy = write(tmp_path, "model: {checkpoint: demo}\ndata: {name: demo, n: 2}\naudits: {curvature: {}}\n"
                             "checks: [{metric: curvature.curvature.mean, max: 1}]\n")
    res = invoke("gate", policy)
    assert res.exit_code == 3 and "outside its eps-ball" in res.output


def test_exit_code_130_when_interrupted(tmp_path, monkeypatch):
    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setitem(gates.RUNNERS, "curvature", interrupted)
    policy = write(tmp_path, "model: {checkpoint: demo}\ndata: {name: demo, n: 2}\naudits: {curvature: {}}\n"
                             "checks: [{metric: curvature.curvature.mean, max: 1}]\n")
    assert invoke("gate", policy).exit_code == 130


# --------------------------------------------------------------------------- malformed policies

BASE = """\
model: {checkpoint: demo}
data: {name: demo, n: 4}
audits:
  curvature: {}
  attack: {attacks: [pgd], norms: [l2], eps: [0.1, 0.5]}
"""

CHECK_CASES = {
    "bound not a number": ("- {metric: curvature.curvature.mean, max: high}", "checks[0].max", "must be a number"),
    "two bounds": ("- {metric: curvature.curvature.mean, max: 1, min: 0}", "checks[0]", "exactly one of max"),
    "no bound": ("- {metric: curvature.curvature.mean}", "checks[0]", "exactly one of max, min, equals"),
    "no metric": ("- {max: 1}", "checks[0].metric", "missing"),
    "unknown audit": ("- {metric: curvatur.curvature.mean, max: 1}", "checks[0].metric",
                      "unknown audit 'curvatur' in curvatur.curvature.mean (did you mean curvature?)"),
    "not a dotted path": ("- {metric: curvature, max: 1}", "checks[0].metric", "is not a dotted path"),
    "unknown check key": ("- {metric: curvature.curvature.mean, max: 1, tolerence: 1}", "checks[0].tolerence",
                          "unknown key (did you mean tolerance?)"),
    "baseline without relative_to": ("- {metric: curvature.curvature.mean, max: baseline}", "checks[0].relative_to",
                                     "max: baseline needs relative_to"),
    "relative_to with a number": ("- {metric: curvature.curvature.mean, max: 3, relative_to: b.json}",
                                  "checks[0].max", "write max: baseline"),
    "baseline file missing": ("- {metric: curvature.curvature.mean, max: baseline, relative_to: nothere.json}",
                              "checks[0].relative_to", "baseline file not found"),
    "tolerance without relative_to": ("- {metric: curvature.curvature.mean, max: 3, tolerance: 1}",
                                      "checks[0].tolerance", "applies to relative_to"),
    "bad tolerance": ("- {metric: curvature.curvature.mean, equals: 3, tolerance: lots}", "checks[0].tolerance",
                      "must be a number >= 0 or a percentage"),
    "statistical on a non-accuracy": ("- {metric: curvature.curvature.mean, max: 3, statistical: true}",
                                      "checks[0].statistical", "applies to accuracies only"),
    "statistical not a bool": ("- {metric: curvature.accuracy, min: 0.5, statistical: yes please}",
                               "checks[0].statistical", "must be true or false"),
    "eps not in the sweep": ("- {metric: attack.pgd.l2.0.3.robust_accuracy, min: 0.5}", "checks[0].metric",
                             "eps 0.3 is not in the l2 sweep of audits.attack (0.1, 0.5)"),
    "norm not attacked": ("- {metric: attack.pgd.linf.0.1.robust_accuracy, min: 0.5}", "checks[0].metric",
                          "norm 'linf' is not in audits.attack.norms"),
    "attack not run": ("- {metric: attack.fgsm.l2.0.1.robust_accuracy, min: 0.5}", "checks[0].metric",
                       "attack 'fgsm' is not in audits.attack.attacks"),
    "unknown attack field": ("- {metric: attack.pgd.l2.0.1.robust_acc, min: 0.5}", "checks[0].metric",
                             "unknown field 'robust_acc'"),
    "unknown flag": ("- {metric: attack.flags.masking, equals: false}", "checks[0].metric",
                     "attack.flags.masking is not a flag; use one of gradient_masking"),
    "audit not configured": ("- {metric: grad_robustness.delta, max: 3}", "checks[0].metric",
                             "needs the grad_robustness audit: add audits.grad_robustness"),
    "duplicate names": ("- {name: a, metric: curvature.accuracy, min: 0}\n- {name: a, metric: curvature.accuracy, "
                        "max: 1}", "checks[1]", "duplicate check name 'a' (also checks[0])"),
    "check not a mapping": ("- just words", "checks[0]", "must be a mapping"),
}


@pytest.mark.parametrize("case", list(CHECK_CASES))
def test_each_malformed_check_gets_a_clear_error_with_its_yaml_path(tmp_path, case):
    check, path, message = CHECK_CASES[case]
    policy = write(tmp_path, BASE + "checks:\n" + "\n".join("  " + ln for ln in check.splitlines()) + "\n")
    with pytest.raises(ConfigError) as info:
        load_policy(policy)
    assert len(info.value.problems) == 1, info.value.problems
    problem = info.value.problems[0]
    assert problem.startswith(path + " (line "), problem
    assert message in problem


POLICY_CASES = {
    "YAML syntax": ("checks: [\n", "policy.yaml: not valid YAML", "line 2"),
    "not a mapping": ("- a\n- b\n", "policy.yaml: the policy must be a YAML mapping", ""),
    "unknown top-level key": (BASE + "chekcs: []\n", "chekcs (line 6): unknown key (did you mean checks?)", ""),
    "no checks": (BASE, "checks: missing: a policy needs at least one check", ""),
    "empty checks": (BASE + "checks: []\n", "checks (line 6): must be a non-empty list", ""),
    "unknown option": (BASE.replace("curvature: {}", "curvature: {mehtod: auto}") + "checks: []\n",
                       "audits.curvature.mehtod (line 4): unknown key (did you mean method?)", ""),
    "option of the wrong type": (BASE.replace("eps: [0.1, 0.5]", "eps: [0.1, 0.5], steps: many") + "checks: []\n",
                                 "audits.attack.steps (line 5): must be an integer, got 'many'", ""),
    "options the audit rejects": (BASE.replace("curvature: {}", "curvature: {tol: 2}") + "checks: []\n",
                                  "audits.curvature (line 4): tol must lie in (0, 1), got 2.0", ""),
    "attack options rejected": (BASE.replace("[pgd]", "[pgd, fgsn]") + "checks: []\n",
                                "audits.attack (line 5): unknown attack 'fgsn' (did you mean fgsm?)", ""),
    "unknown audit": (BASE.replace("curvature: {}", "curvatur: {}") + "checks: []\n",
                      "audits.curvatur (line 4): unknown audit (did you mean curvature?)", ""),
    "data name and path": (BASE.replace("name: demo,", "name: demo, path: x.pt,") + "checks: []\n",
                           "data (line 2): give exactly one of name", ""),
    "no model": (BASE.replace("model: {checkpoint: demo}\n", "") + "checks: []\n", "model: missing", ""),
    "unsupported version": ("version: 2\n" + BASE + "checks: []\n", "version (line 1): unsupported policy version",
                            ""),
    "duplicate key": (BASE + "checks:\n  - {metric: curvature.accuracy, min: 0, min: 1}\n",
                      "checks[0].min (line 7): duplicate key", ""),
}


@pytest.mark.parametrize("case", list(POLICY_CASES))
def test_each_malformed_policy_gets_a_clear_error(tmp_path, case):
    text, message, extra = POLICY_CASES[case]
    with pytest.raises(ConfigError) as info:
        load_policy(write(tmp_path, text))
    assert message in str(info.value), str(info.value)
    assert extra in str(info.value)


def test_every_problem_is_listed_at_once_in_reading_order(tmp_path):
    policy = write(tmp_path, """\
nme: x
model: {checkpoint: demo, trust_checkpoint: maybe}
data: {name: demo, n: 0, split: val}
audits:
  attack: {attacks: [pgd, fgsn], norms: [l2], eps: [0.1], steps: "many"}
  grad_robustness: {draws: 0, curvature: {tol: 2}}
checks:
  - {metric: curvature.curvature.mean, max: high}
  - {metric: attack.flags.masking, equals: false}
  - {metric: curvature.accuracy, max: 1, min: 0, statistical: maybe}
""")
    with pytest.raises(ConfigError) as info:
        load_policy(policy)
    paths = [p.split(" (line")[0] for p in info.value.problems]
    assert paths == ["nme", "model.trust_checkpoint", "data.split", "data.n", "audits.attack.steps", "audits.attack",
                     "audits.grad_robustness.curvature", "audits.grad_robustness", "checks[0].max",
                     "checks[1].metric", "checks[2]", "checks[2].statistical"]
    assert str(info.value).startswith(f"{policy}: 12 problem(s): nme (line 1): unknown key")
    res = invoke("gate", policy)
    assert res.exit_code == 2
    text = " ".join(res.output.split())
    assert "error:" in text and "12 problem(s)" in text and "draws must be at least 1" in text


def test_results_mode_needs_no_model_but_every_checked_audit(run, tmp_path):
    policy = results_policy(tmp_path, "  - {metric: curvature.accuracy, min: 0}\n"
                                      "  - {metric: bound.theorem1, max: 1}\n")
    assert load_policy(policy, compute=False).model is None
    with pytest.raises(ConfigError, match="model: missing"):
        load_policy(policy)
    res = invoke("gate", policy, "--results", run["results"] / "curvature.json")
    assert res.exit_code == 2
    assert "checks[1].metric: bound.theorem1 needs a bound result" in " ".join(res.output.split())


def test_result_files_problems_are_listed_together(run, tmp_path):
    inc = json.loads((run["results"] / "curvature.json").read_text()) | {"complete": False}
    (tmp_path / "partial.json").write_text(json.dumps(inc))
    (tmp_path / "convert.json").write_text(json.dumps({"command": "convert", "config": {}, "summary": {},
                                                       "per_sample": {}}))
    with pytest.raises(ConfigError) as info:
        gates.load_results([run["results"] / "curvature.json", run["results"] / "curvature.json",
                            tmp_path / "partial.json", tmp_path / "convert.json"])
    text = str(info.value)
    assert "3 problem(s)" in text and "both hold a curvature result" in text and "interrupted" in text
    assert "holds a convert result" in text


# --------------------------------------------------------------------------- metric paths


def test_metric_paths_resolve_keys_with_dots_numbers_and_rows():
    s = {"pgd": {"l2": {"0.1": {"robust_accuracy": 0.5}, "1": {"robust_accuracy": 0.2},
                        "1.5": {"robust_accuracy": 0.1}},
                 "linf": {"0.0313725": {"robust_accuracy": 0.3}}},
         "curves": [{"radius": 0.01, "mean": 1.0}, {"radius": 0.1, "mean": 2.0}],
         "layers": [{"name": "conv1", "lipschitz": 3.0}], "vals": [7, 8]}
    assert resolve_metric(s, "pgd.l2.0.1.robust_accuracy")[0] == 0.5
    assert resolve_metric(s, "pgd.l2.0.10.robust_accuracy")[0] == 0.5  # numbers match by value
    assert resolve_metric(s, "pgd.l2.1e-1.robust_accuracy")[0] == 0.5
    assert resolve_metric(s, "pgd.l2.1.robust_accuracy")[0] == 0.2  # "1" and "1.5" both exist
    assert resolve_metric(s, "pgd.l2.1.5.robust_accuracy")[0] == 0.1
    assert resolve_metric(s, "pgd.linf.8/255.robust_accuracy")[0] == 0.3  # eps_key(8/255) == "0.0313725"
    assert resolve_metric(s, "curves.0.1.mean")[0] == 2.0  # rows by radius
    assert resolve_metric(s, "curves.1e-2.mean")[0] == 1.0
    assert resolve_metric(s, "layers.conv1.lipschitz")[0] == 3.0  # rows by name
    assert resolve_metric(s, "vals.1")[0] == 8  # rows by position
    value, holder = resolve_metric(s, "pgd.l2.0.1.robust_accuracy")
    assert holder == {"robust_accuracy": 0.5}
    with pytest.raises(Exception, match=r"no key 'pdg' under the summary \(did you mean pgd\?\)"):
        resolve_metric(s, "pdg.l2.0.1.robust_accuracy")
    with pytest.raises(Exception, match=r"no row '0.5' in curves \(rows by radius: 0.01, 0.1\)"):
        resolve_metric(s, "curves.0.5.mean")
    with pytest.raises(Exception, match="no key '0.2' under pgd.l2"):
        resolve_metric(s, "pgd.l2.0.2.robust_accuracy")


def test_issue_metric_examples_resolve_on_real_results(run):
    results, _ = gates.load_results([run["results"]])
    assert gates.metric_value(results, "attack.pgd.l2.0.1.robust_accuracy")[0] == next(
        e["robust_accuracy"] for e in results["attack"].summary["results"]
        if (e["attack"], e["norm"], e["eps"]) == ("pgd", "l2", 0.1))
    assert gates.metric_value(results, "attack.flags.gradient_masking")[0] is False
    assert gates.metric_value(results, "curvature.curvature.mean")[0] == results["curvature"].summary["curvature"][
        "mean"]
    assert gates.metric_value(results, "grad-robustness.delta")[0] == results["grad_robustness"].summary["delta"]


# --------------------------------------------------------------------------- checks


def _attack_result(**summary) -> AuditResult:
    base = {"n": 20, "clean_accuracy": 0.5, "clean_ci_low": 0.3, "clean_ci_high": 0.7,
            "pgd": {"l2": {"0.1": {"robust_accuracy": 0.4, "ci_low": 0.2, "ci_high": 0.6, "n": 20, "robust": 8}}},
            "flags": {"gradient_masking": True, "black_box_stronger": None}}
    return AuditResult(command="attack", config={"checkpoint": "demo"}, summary=base | summary)


def _check(results, **check):
    policy = policy_from_dict({"checks": [check]}, compute=False)
    return evaluate(policy, results).checks[0]


@pytest.mark.parametrize("check, status", [
    ({"min": 0.5}, "fail"),
    ({"min": 0.5, "statistical": True}, "pass"),  # 0.4 < 0.5, but the interval [0.2, 0.6] reaches 0.5
    ({"min": 0.65, "statistical": True}, "fail"),  # the whole interval lies below 0.65
    ({"max": 0.3}, "fail"),
    ({"max": 0.3, "statistical": True}, "pass"),
    ({"max": 0.1, "statistical": True}, "fail"),  # the whole interval lies above 0.1
    ({"equals": 0.3, "statistical": True}, "pass"),
    ({"equals": 0.7, "statistical": True}, "fail"),
])
def test_statistical_mode_fails_only_when_the_95_interval_is_beyond(check, status):
    got = _check({"attack": _attack_result()}, metric="attack.pgd.l2.0.1.robust_accuracy", **check)
    assert got.status == status, got.message
    assert got.interval == ((0.2, 0.6) if check.get("statistical") else None)


def test_statistical_intervals_come_from_the_result_or_clopper_pearson():
    clean = _check({"attack": _attack_result()}, metric="attack.clean_accuracy", min=0.6, statistical=True)
    assert clean.interval == (0.3, 0.7) and clean.status == "pass"
    curv = AuditResult(command="curvature", config={}, summary={"accuracy": 0.75, "n": 8})
    got = _check({"curvature": curv}, metric="curvature.accuracy", min=0.9, statistical=True)
    assert got.interval == clopper_pearson(6, 8) and got.status == "pass"
    no_n = AuditResult(command="curvature", config={}, summary={"accuracy": 0.75})
    assert _check({"curvature": no_n}, metric="curvature.accuracy", min=0.9, statistical=True).status == "error"


def test_equals_null_and_type_mismatches():
    results = {"attack": _attack_result()}
    masking = _check(results, metric="attack.flags.gradient_masking", equals=False)
    assert masking.status == "fail" and masking.message == "true != false"
    assert _check(results, metric="attack.flags.gradient_masking", equals=True).status == "pass"
    unchecked = _check(results, metric="attack.flags.black_box_stronger", equals=False)
    assert unchecked.status == "error" and "not computed in this run" in unchecked.message
    assert _check(results, metric="attack.flags.gradient_masking", max=1).status == "error"
    assert _check(results, metric="attack.pgd.l2.0.1", max=1).status == "error"  # a mapping, not a value
    assert _check(results, metric="attack.n", equals=20).status == "pass"
    assert _check(results, metric="attack.n", equals=21, tolerance=1).status == "pass"
    nan = _check({"attack": _attack_result(clean_accuracy=float("nan"))}, metric="attack.clean_accuracy", min=0)
    assert nan.status == "fail" and "NaN" in nan.message


# --------------------------------------------------------------------------- regression


def _scaled_baseline(run, tmp_path, factor: float):
    d = json.loads((run["results"] / "curvature.json").read_text())
    d["summary"]["curvature"]["mean"] *= factor
    path = tmp_path / f"baseline-{factor}.json"
    path.write_text(json.dumps(d))
    return path


@pytest.mark.parametrize("factor, tolerance, code", [
    (1.0, "0%", 0),  # unchanged
    (0.5, "10%", 1),  # curvature doubled against the baseline: more than 10% worse
    (0.95, "10%", 0),  # 5% worse: within the tolerance
    (0.95, "0", 1),
    (2.0, "0", 0),  # better than the baseline
])
def test_regression_check_against_a_baseline_result(run, tmp_path, factor, tolerance, code):
    base = _scaled_baseline(run, tmp_path, factor)
    policy = results_policy(tmp_path, f"  - {{metric: curvature.curvature.mean, max: baseline, "
                                      f"relative_to: {base.name}, tolerance: '{tolerance}'}}\n")
    res = invoke("gate", policy, "--results", run["results"], "--json", tmp_path / "v.json")
    assert res.exit_code == code, res.output
    c = json.loads((tmp_path / "v.json").read_text())["checks"][0]
    assert c["baseline"] == pytest.approx(json.loads(base.read_text())["summary"]["curvature"]["mean"])
    if tolerance.endswith("%"):
        assert c["threshold"] == pytest.approx(c["baseline"] * (1 + float(tolerance[:-1]) / 100))


def test_verdict_as_baseline_and_no_regression_bootstrap(run, tmp_path):
    text = """\
  - {name: acc, metric: attack.clean_accuracy, min: baseline, relative_to: base.json, tolerance: 0.05}
  - {name: curv, metric: curvature.curvature.mean, max: baseline, relative_to: base.json, tolerance: 5%}
"""
    policy = results_policy(tmp_path, text)
    res = invoke("gate", policy, "--results", run["results"])
    assert res.exit_code == 2 and "baseline file not found" in res.output  # no baseline yet
    res = invoke("gate", policy, "--results", run["results"], "--no-regression", "--json", tmp_path / "base.json",
                 "--junit", tmp_path / "j.xml")
    assert res.exit_code == 0, res.output
    first = json.loads((tmp_path / "base.json").read_text())
    assert [c["status"] for c in first["checks"]] == ["skip", "skip"] and first["counts"]["skip"] == 2
    assert len(ET.fromstring((tmp_path / "j.xml").read_text()).findall(".//testcase/skipped")) == 2
    res = invoke("gate", policy, "--results", run["results"], "--json", tmp_path / "v.json")
    assert res.exit_code == 0, res.output
    v = json.loads((tmp_path / "v.json").read_text())
    assert [c["baseline"] for c in v["checks"]] == [c["value"] for c in first["checks"]]
    # a later model that lost 10 points of accuracy fails the regression check
    worse = tmp_path / "worse"
    shutil.copytree(run["results"], worse)
    att = json.loads((worse / "attack.json").read_text())
    att["summary"]["clean_accuracy"] -= 0.1
    (worse / "attack.json").write_text(json.dumps(att))
    res = invoke("gate", policy, "--results", worse, "--json", tmp_path / "v2.json")
    assert res.exit_code == 1
    assert [c["status"] for c in json.loads((tmp_path / "v2.json").read_text())["checks"]] == ["fail", "pass"]


def test_baseline_problems_are_found_up_front(run, tmp_path):
    shutil.copy(run["results"] / "attack.json", tmp_path / "attack.json")
    policy = results_policy(tmp_path, """\
  - {metric: curvature.curvature.mean, max: baseline, relative_to: attack.json}
  - {metric: attack.pgd.l2.0.2.robust_accuracy, min: baseline, relative_to: attack.json}
  - {metric: attack.flags.gradient_masking, max: baseline, relative_to: attack.json}
""")
    with pytest.raises(ConfigError) as info:
        load_policy(policy, compute=False)
    p = info.value.problems
    assert len(p) == 3
    assert "holds the result of the attack command, but curvature.curvature.mean reads the curvature audit" in p[0]
    assert "no key '0.2' under pgd.l2" in p[1]
    assert "max: baseline needs a number" in p[2]


def test_verdict_round_trips_and_renders(run):
    v = gates.Verdict.from_dict(json.loads(run["verdict"].read_text()))
    assert v.to_dict() == json.loads(run["verdict"].read_text())
    assert verdict_junit(v) == run["junit"].read_text()
    assert verdict_markdown(v) == run["markdown"].read_text()
