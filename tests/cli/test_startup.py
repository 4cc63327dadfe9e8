"""``lcnn-audit --help`` and ``lcnn-audit COMMAND --help`` do not import torch (issue 13).

Each check runs in a fresh interpreter (the test process has torch loaded already) through
the real entry point, :func:`lcnn_audit.cli.main`, with ``sys.argv`` set as the console
script would. Speed is measured in ``benchmarks/startup.py``, not here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

_PROBE = r"""
import contextlib, io, json, sys
from lcnn_audit.cli import main

def run(argv):
    sys.argv = ["lcnn-audit", *argv]
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            main()
        except SystemExit as e:
            code = e.code
    return {"argv": argv, "code": code, "torch": "torch" in sys.modules, "out": out.getvalue()}

argv_list = json.loads(sys.argv[1])
if argv_list is None:  # every command the app registers, found without importing torch
    import typer.main
    from lcnn_audit.cli._app import app
    names = sorted(typer.main.get_command(app).commands)
    argv_list = [["--help"], ["-h"], [], ["--version"]] + [[n, "--help"] for n in names]
print(json.dumps([run(a) for a in argv_list]))
"""


def _probe(argv_list):
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "100"}
    proc = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(argv_list)], capture_output=True,
                          text=True, env=env, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_help_of_root_and_every_command_imports_no_torch():
    runs = _probe(None)
    commands = [r["argv"][0] for r in runs if len(r["argv"]) == 2]
    assert {"curvature", "attack", "convert", "finetune", "gate", "report", "demo"} <= set(commands)
    for r in runs:
        assert not r["torch"], f"lcnn-audit {' '.join(r['argv'])} imported torch"
        assert r["code"] in (0, 2, None), r  # no arguments: the help, exit 2 (click's no_args_is_help)
        if r["argv"] and r["argv"][-1] in ("--help", "-h"):
            assert r["code"] in (0, None) and "Usage" in r["out"], r
            if len(r["argv"]) == 2:
                assert r["argv"][0] in r["out"], r


@pytest.mark.slow
def test_a_command_that_runs_does_import_torch():
    """The probe can tell: a command that runs (here one that fails on a missing file) has
    imported torch and torchvision before it starts (the Ctrl-C-safe start-up)."""
    (r,) = _probe([["info", str(REPO / "does-not-exist.pt")]])
    assert r["torch"] and r["code"] == 2, r
