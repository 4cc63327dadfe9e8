"""``lcnn-audit attack``: outputs, one-line errors (exit 2), Ctrl-C and --resume, --plot, --save-adv."""

import json

import pytest
from typer.testing import CliRunner

from lcnn_audit.attacks import audit as audit_mod
from lcnn_audit.cli import app

runner = CliRunner()


FAST = ["demo", "--n", "12", "--batch-size", "6", "--eps", "0.1,0.3", "--steps", "2", "--no-masking-checks"]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def assert_one_line_error(res, match: str, code: int = 2):
    assert res.exit_code == code, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    text = " ".join(ln for ln in res.output.splitlines() if ln.strip())
    assert "error:" in text and match in text and "Traceback" not in text, res.output


def test_attack_writes_json_plot_and_adv(tmp_path):
    out, plot, adv = tmp_path / "r.json", tmp_path / "fig.png", tmp_path / "adv.safetensors"
    res = invoke("attack", *FAST, "--attack", "pgd,fgsm", "--norm", "l2,linf", "--eps", "linf=1/255,4/255",
                 "--json", out, "--plot", plot, "--save-adv", adv)
    assert res.exit_code == 0, res.output
    assert "robust acc" in res.output and "worst_case" in res.output and "4/255" in res.output
    d = json.loads(out.read_text())
    assert d["command"] == "attack" and d["complete"] is True
    s = d["summary"]
    assert {(e["attack"], e["norm"]) for e in s["results"]} == {
        (a, n) for a in ("pgd", "fgsm", "worst_case") for n in ("l2", "linf")}
    assert s["pgd"]["l2"]["0.1"]["n"] == 12 and "ci_low" in s["pgd"]["linf"]["0.0156863"]
    assert "gradient_masking" in s["flags"] and len(d["per_sample"]["robust_pgd_l2_0.3"]) == 12
    assert plot.stat().st_size > 1000 and plot.read_bytes()[:4] == b"\x89PNG"
    assert adv.is_file() and not (tmp_path / "adv.safetensors.partial").exists()


@pytest.mark.parametrize("args,match", [
    (["--attack", "pgdd"], "did you mean pgd"),
    (["--norm", "l3"], "unknown norm"),
    (["--eps", "abc"], "not a number"),
    (["--attack", "deepfool", "--norm", "linf"], "deepfool supports"),
    (["--resume"], "--resume needs --json"),
    (["--plot", "out.txt"], "unknown image type"),
    (["--version", "fast", "--attack", "autoattack"], "version"),
])
def test_bad_input_is_a_one_line_error(args, match):
    assert_one_line_error(invoke("attack", *FAST, *args), match)


def test_ctrl_c_then_resume_matches_an_uninterrupted_run(tmp_path, monkeypatch):
    ref = tmp_path / "ref.json"
    assert invoke("attack", *FAST, "--json", ref).exit_code == 0

    out, adv = tmp_path / "r.json", tmp_path / "adv.safetensors"
    real = audit_mod._BatchAudit.__call__
    calls = {"n": 0}

    def interrupt_second(self, batch):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(self, batch)

    monkeypatch.setattr(audit_mod._BatchAudit, "__call__", interrupt_second)
    res = invoke("attack", *FAST, "--json", out, "--save-adv", adv)
    assert res.exit_code == 130 and "interrupted" in res.output
    part = json.loads(out.read_text())
    assert part["complete"] is False and len(part["per_sample"]["index"]) == 6
    assert (tmp_path / "r.json.partial").exists() and not adv.exists()

    monkeypatch.setattr(audit_mod._BatchAudit, "__call__", real)
    res = invoke("attack", *FAST, "--json", out, "--save-adv", adv, "--resume")
    assert res.exit_code == 0, res.output
    done, want = json.loads(out.read_text()), json.loads(ref.read_text())
    assert done["complete"] is True and done["per_sample"] == want["per_sample"]
    assert done["summary"]["results"] == want["summary"]["results"]
    assert adv.is_file() and not (tmp_path / "r.json.partial").exists()


def test_resume_with_other_options_is_refused(tmp_path, monkeypatch):
    out = tmp_path / "r.json"
    real = audit_mod._BatchAudit.__call__

    calls = {"n": 0}

    def interrupt(self, batch):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(self, batch)

    monkeypatch.setattr(audit_mod._BatchAudit, "__call__", interrupt)
    assert invoke("attack", *FAST, "--json", out).exit_code == 130
    monkeypatch.setattr(audit_mod._BatchAudit, "__call__", real)
    assert_one_line_error(invoke("attack", *FAST, "--steps", "3", "--json", out, "--resume"), "different options")


def test_demo_has_an_attack_step():
    from lcnn_audit.demo import DEMO_STEPS

    assert "attack" in [s.name for s in DEMO_STEPS]
