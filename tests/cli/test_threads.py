"""``--threads`` on every command, and its default."""

import pytest
import torch
from typer.testing import CliRunner

from lcnn_audit.cli import app, common

runner = CliRunner()
COMMANDS = ("attack", "convert", "bound", "curvature", "demo", "finetune", "gate", "info", "report",
            "grad-robustness", "discrepancy")


@pytest.fixture
def restore_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def test_every_command_has_threads():
    registered = {c.name or c.callback.__name__.replace("_", "-") for c in app.registered_commands}
    assert registered == set(COMMANDS)  # a new command must be added here (and get --threads)
    for cmd in COMMANDS:
        res = runner.invoke(app, [cmd, "--help"], env={"COLUMNS": "200"})
        assert res.exit_code == 0, res.output
        assert "--threads" in res.output, cmd


def test_threads_is_applied(restore_threads):
    res = runner.invoke(app, ["info", "demo", "--n", "4", "--threads", "2"])
    assert res.exit_code == 0, res.output
    assert torch.get_num_threads() == 2
    res = runner.invoke(app, ["info", "demo", "--n", "4", "--threads", "1"])
    assert res.exit_code == 0 and torch.get_num_threads() == 1


def test_threads_zero_is_a_usage_error():
    res = runner.invoke(app, ["info", "demo", "--threads", "0"])
    assert res.exit_code == 2 and "Traceback" not in res.output


def test_default_threads(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert common.default_threads() == 3
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setattr(__import__("os"), "getloadavg", lambda: (1.7, 0, 0))
    monkeypatch.setattr(__import__("os"), "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    assert common.default_threads() == 3  # 4 usable CPUs, 1 busy
    monkeypatch.setattr(__import__("os"), "getloadavg", lambda: (9.0, 0, 0))
    assert common.default_threads() == 1  # never below one
