"""CLI output in CI logs: heartbeats without a TTY, --quiet/--verbose, full-width tables, --version."""

import json
import re

import pytest
import torch
from rich.console import Console
from typer.testing import CliRunner

from lcnn_audit import __version__
from lcnn_audit.cli import app
from lcnn_audit.cli.progress import Heartbeat, clock
from lcnn_audit.formatting import num
from tests.conftest import relu_cnn, softplus_cnn

runner = CliRunner()
FAST = ["--method", "lanczos", "--max-iter", "5", "--fro-probes", "0", "--jacobian", "off"]


def invoke(*args, env=None):
    return runner.invoke(app, [str(a) for a in args], env=env)


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def _heartbeat(interval=10.0):
    clk = FakeClock()
    con = Console(record=True, width=200, force_terminal=False)
    return Heartbeat("attack", con, interval, now=clk), clk, con


def test_heartbeat_lines_every_interval_with_rate_and_eta():
    hb, clk, con = _heartbeat(10.0)
    hb(0, 100)
    for done in range(1, 101):
        clk.t += 1.0
        hb(done, 100)
    lines = con.export_text().splitlines()
    # one line per 10 s plus the final one; no line per update
    assert len(lines) == 10, lines
    assert lines[0] == "attack: 10/100 (10%)  1 samples/s  elapsed 0:00:10  ETA 0:01:30"
    assert lines[-1].startswith("attack: 100/100 (100%)") and "ETA 0:00:00" in lines[-1]


def test_heartbeat_reset_restarts_the_rate_and_eta():
    """finetune resets the task per epoch: epoch 2's ETA is its own, not 0:00:00."""
    hb, clk, con = _heartbeat(0.0)
    for step in range(1, 11):
        clk.t += 1.0
        hb(step, 10)
    hb.reset("epoch 2/2")
    clk.t += 1.0
    hb(1, 10)
    clk.t += 1.0
    hb(2, 10)
    last = con.export_text().splitlines()[-1]
    assert last.startswith("epoch 2/2: 2/10 (20%)"), last
    assert "ETA 0:00:08" in last, last


def test_clock_formats():
    assert clock(3725) == "1:02:05" and clock(None) == "?" and clock(float("inf")) == "?"


def test_curvature_heartbeat_without_a_tty(tmp_path):
    res = invoke("curvature", "demo", "--n", "8", "--batch-size", "4", *FAST, env={"LCNN_AUDIT_HEARTBEAT": "0"})
    assert res.exit_code == 0, res.output
    beats = [ln for ln in res.output.splitlines() if ln.startswith("curvature: ")]
    assert any(ln.startswith("curvature: 8/8 (100%)") for ln in beats), res.output
    assert any(ln.startswith("curvature: 4/8 (50%)") for ln in beats), res.output
    assert "samples/s" in beats[-1] and "ETA" in beats[-1]


def test_quiet_silences_progress_and_tables_and_verbose_shows_logs(tmp_path):
    env = {"LCNN_AUDIT_HEARTBEAT": "0"}
    out = tmp_path / "c.json"
    quiet = invoke("curvature", "demo", "--n", "4", *FAST, "--quiet", "--json", out, env=env)
    assert quiet.exit_code == 0, quiet.output
    lines = quiet.output.splitlines()
    assert not any(ln.startswith(("curvature: ", "┃")) for ln in lines), quiet.output
    assert f"wrote {out}" in quiet.output
    loud = invoke("curvature", "demo", "--n", "4", *FAST, "--verbose", env=env)
    assert loud.exit_code == 0, loud.output
    assert re.search(r"debug: batch of 4 sample\(s\) in [0-9.]+ s \(4/4 done\)", loud.output), loud.output


@pytest.mark.parametrize("cmd", ["curvature", "attack", "grad-robustness", "discrepancy", "bound", "convert",
                                 "finetune", "gate", "report", "info", "demo"])
def test_every_command_has_quiet_and_verbose(cmd):
    res = invoke(cmd, "--help", env={"COLUMNS": "200"})
    assert res.exit_code == 0
    assert "--quiet" in res.output and "--verbose" in res.output, res.output


def test_help_states_the_default_n():
    res = invoke("curvature", "--help", env={"COLUMNS": "250"})
    assert "Default: all samples" in " ".join(res.output.split())


def test_version_option():
    res = invoke("--version")
    assert res.exit_code == 0 and res.output.strip() == f"lcnn-audit {__version__}"


def _no_cut(output: str) -> None:
    assert "…" not in output, output


def test_tables_are_not_cut_at_80_columns(tmp_path):
    """Without a TTY (CliRunner) every number of the summary is printed in full."""
    out = tmp_path / "c.json"
    res = invoke("curvature", "demo", "--n", "8", *FAST, "--profile", "2", "--json", out)
    assert res.exit_code == 0, res.output
    _no_cut(res.output)
    s = json.loads(out.read_text())["summary"]
    for field in ("grad_norm", "hessian_norm", "curvature"):
        row = next(ln for ln in res.output.splitlines() if f" {field} " in ln)
        for stat in ("mean", "std", "median", "p5", "p95", "max"):
            assert f" {num(s[field][stat])} " in row, (field, stat, row)


def test_grad_robustness_table_is_full_width(tmp_path):
    out = tmp_path / "g.json"
    res = invoke("grad-robustness", "demo", "--n", "4", "--radii", "0.001,0.01", "--draws", "1", "--json", out)
    assert res.exit_code == 0, res.output
    _no_cut(res.output)
    s = json.loads(out.read_text())["summary"]
    for c in s["curves"]:
        assert num(c["bound"]) in res.output and num(c["loss_change_quadratic_mean"]) in res.output


def test_columns_fixes_the_width():
    res = invoke("curvature", "demo", "--n", "4", *FAST, env={"COLUMNS": "60"})
    table = [ln for ln in res.output.splitlines() if ln.startswith(("┃", "│"))]
    assert table and max(len(ln) for ln in table) <= 60


def test_compact_numbers():
    assert num(6.592e-05) == "6.592e-5" and num(-3.4e-4) == "-3.4e-4" and num(1.2e7) == "1.2e+7"
    assert num(0.5) == "0.5" and num(float("nan")) == "nan" and num(3) == "3"


# ------------------------------------------------------------ progress from the library


class Record:
    def __init__(self):
        self.calls = []

    def __call__(self, done, total):
        self.calls.append((done, total))


def test_attack_progress_moves_within_a_batch():
    from lcnn_audit import AttackOptions, attack_audit

    x, y = torch.rand(8, 1, 8, 8), torch.randint(0, 10, (8,))
    rec = Record()
    attack_audit(softplus_cnn(), (x, y), AttackOptions(attacks=("pgd", "fgsm"), eps=[0.5], steps=2),
                 batch_size=8, progress=rec)
    done = [d for d, _ in rec.calls]
    assert done[0] == 0 and done[-1] == 8 and all(t == 8 for _, t in rec.calls)
    # per stage (pgd, fgsm, the two masking checks), not once per batch
    assert done == [0, 2, 4, 6, 8], done


def test_convert_progress_has_a_total():
    from lcnn_audit import convert_model

    rec = Record()
    convert_model(relu_cnn(), input_shape=(1, 8, 8), progress=rec)
    assert rec.calls[0] == (0, 2) and rec.calls[-1] == (2, 2), rec.calls


def test_bound_progress_reaches_its_total():
    from lcnn_audit import bound_audit

    rec = Record()
    bound_audit(softplus_cnn(), (1, 8, 8), progress=rec)
    total = rec.calls[-1][1]
    assert total and rec.calls[-1] == (total, total) and rec.calls[0][0] == 0


def test_finetune_heartbeat_resets_per_epoch(tmp_path):
    res = invoke("finetune", "demo", "--out", tmp_path / "m.safetensors", "--epochs", "2", "--n", "64",
                 "--batch-size", "16", "--curvature-n", "0", "--eval-n", "16", "--lr", "0.001",
                 env={"LCNN_AUDIT_HEARTBEAT": "0"})
    assert res.exit_code == 0, res.output
    e2 = [ln for ln in res.output.splitlines() if ln.startswith("epoch 2/2: ")]
    assert e2 and e2[0].startswith("epoch 2/2: 1/4"), res.output
    assert any(ln.startswith("epoch 2/2: 4/4 (100%)") for ln in e2)
    mid = next(ln for ln in e2 if ln.startswith("epoch 2/2: 2/4"))
    assert "ETA" in mid and "steps/s" in mid


def test_gate_table_rows_do_not_wrap_without_a_tty(tmp_path_factory):
    from tests.gate_helpers import demo_run

    run = demo_run(tmp_path_factory)
    res = invoke("gate", run["policy"], "--results", run["results"], "--no-regression")
    assert res.exit_code in (0, 1), res.output
    _no_cut(res.output)
    rows = [ln for ln in res.output.splitlines() if ln.startswith("│")]
    n_checks = int(re.search(r"(\d+) check\(s\)", res.output).group(1))
    assert len(rows) == n_checks, res.output  # one line per check: no cell wrapped


@pytest.mark.parametrize("args, line", [
    (["attack", "demo", "--n", "8", "--steps", "2", "--eps", "0.1"], r"^attack: 8/8 \(100%\)"),
    (["grad-robustness", "demo", "--n", "4", "--radii", "0.01", "--draws", "1"],
     r"^grad-robustness demo: 4/4 \(100%\)"),
    (["discrepancy", "demo", "--n", "4"], r"^discrepancy \(test\): 4/4 \(100%\)"),
    (["bound", "demo", "--input-shape", "1,28,28"], r"^bound: layers: (\d+)/\1 \(100%\)"),
    (["convert", "demo", "--input-shape", "1,28,28", "-o", "{tmp}/c.safetensors"],
     r"^convert: spectral norms: (\d+)/\1 \(100%\)"),
])
def test_every_long_loop_has_a_heartbeat(args, line, tmp_path):
    res = invoke(*[a.format(tmp=tmp_path) for a in args], env={"LCNN_AUDIT_HEARTBEAT": "0"})
    assert res.exit_code == 0, res.output
    assert any(re.match(line, ln) for ln in res.output.splitlines()), res.output
