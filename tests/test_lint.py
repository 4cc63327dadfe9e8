"""The ruff rules of ``pyproject.toml`` (complexity <= 15, PLR, docstrings) hold (issue 13).

README's test command is ``python -m pytest`` and does not run ruff, so this test does: a
violation fails the suite. ruff checks the whole tree in well under a second. Skipped where
ruff is not installed, or where the package is not run from a source checkout.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import lcnn_audit

ROOT = Path(lcnn_audit.__file__).resolve().parent.parent
PATHS = ("lcnn_audit", "tests", "benchmarks", "scripts", "experiments")


def _ruff() -> list[str]:
    if importlib.util.find_spec("ruff") is not None:
        return [sys.executable, "-m", "ruff"]
    exe = shutil.which("ruff")
    if exe is None:
        pytest.skip("ruff is not installed (pip install -e '.[test]')")
    return [exe]


@pytest.fixture(scope="module")
def ruff() -> list[str]:
    if not (ROOT / "pyproject.toml").is_file():
        pytest.skip("not a source checkout: no pyproject.toml next to the package")
    return _ruff()


def _check(ruff: list[str], *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*ruff, "check", "--no-cache", "--output-format", "concise", *args],
                          cwd=ROOT, input=stdin, capture_output=True, text=True, timeout=120)


def test_tree_is_ruff_clean(ruff):
    paths = [p for p in PATHS if (ROOT / p).exists()]
    proc = _check(ruff, *paths)
    assert proc.returncode == 0, proc.stdout + proc.stderr


COMPLEX = "\n".join(
    ["def f(x):", '    """Sixteen branches."""', "    n = 0"]
    + [f"    if x == {i}:\n        n += {i}" for i in range(15)]
    + ["    return n", ""]
)


@pytest.mark.parametrize(("source", "code"), [
    (COMPLEX, "C901"),
    ('"""Module."""\n\n\ndef public(x):\n    return x\n', "D103"),
    ('"""Module."""\n\n\ndef g(a, b, c, d, e, f):\n    """Six positional."""\n    return a\n', "PLR0917"),
])
def test_library_rules_are_enforced(ruff, source, code):
    """The configuration flags each rule in library code (so the clean run above can fail)."""
    proc = _check(ruff, "--stdin-filename", "lcnn_audit/lint_probe.py", "-", stdin=source)
    assert proc.returncode == 1 and code in proc.stdout, proc.stdout + proc.stderr


def test_complexity_fifteen_is_allowed(ruff):
    """The mccabe limit is 15, not ruff's default 10."""
    source = "\n".join(
        ['"""Module."""', "", "", "def f(x):", '    """Fifteen paths."""', "    n = 0"]
        + [f"    if x == {i}:\n        n += {i}" for i in range(14)]
        + ["    return n", ""]
    )
    proc = _check(ruff, "--select", "C901", "--stdin-filename", "lcnn_audit/lint_probe.py", "-", stdin=source)
    assert proc.returncode == 0, proc.stdout + proc.stderr
