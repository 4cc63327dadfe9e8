"""``lcnn_audit._version`` is the one place the version is read from at run time."""

import re
from pathlib import Path

import lcnn_audit
from lcnn_audit import _version
from lcnn_audit.gates.verdict import Verdict
from lcnn_audit.results import AuditResult


def test_version_module_matches_the_package_metadata_and_every_reader():
    text = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    declared = re.search(r'^version = "([^"]+)"', text, re.M).group(1)  # tomllib is Python >= 3.11 only
    assert _version.__version__ == declared == lcnn_audit.__version__
    assert AuditResult.__dataclass_fields__["lcnn_audit_version"].default == _version.__version__
    assert Verdict.__dataclass_fields__["lcnn_audit_version"].default == _version.__version__
