"""Metric paths: reading one value out of an audit's summary, a result file or a baseline.

``AUDIT.KEY.KEY...`` walks the audit's ``summary``. Keys may contain dots: at each level the
longest run of segments that names a key wins, falling back to shorter runs. A number
(``0.10``, ``1e-1``, ``8/255``) matches a numeric key when both print alike with
``f"{x:g}"`` (the attack audit's ``eps_key``). A list of rows is indexed by the rows'
``radius`` or ``name`` field, else by position.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from typing import Any

from ..audits import registry
from ..errors import UsageError
from ..results import AuditResult

#: the audit names, in registry order (a live view of :data:`lcnn_audit.audits.registry.AUDITS`)
AUDITS = registry.NAMES
#: result ``command`` -> audit name in policies and metric paths (live, from the registry)
COMMANDS = registry.COMMANDS
#: list rows are addressed by these fields (in order) when they have them
ROW_KEYS = ("radius", "name")
VERDICT_KIND = "lcnn-audit-verdict"


def audit_name(text: str) -> str:
    """``grad-robustness`` (the command) and ``grad_robustness`` name the same audit."""
    return text.strip().replace("-", "_")


def number(x: Any) -> float:
    """A YAML number, or a string such as ``1e-3`` (YAML 1.1 reads it as a string) or ``8/255``."""
    if isinstance(x, bool):
        raise ValueError(x)
    if isinstance(x, (int, float)):
        return float(x)
    if isinstance(x, str):
        text = x.strip()
        if "/" in text:
            num, den = text.split("/", 1)
            return float(num) / float(den)
        return float(text)
    raise ValueError(x)


def resolve_metric(summary: Any, path: str | Sequence[str]) -> tuple[Any, Any]:
    """The value at the dotted ``path`` (keys after the audit name) in ``summary``, and the
    mapping that holds it. See the module docstring for the rules. Raises UsageError."""
    segs = path.split(".") if isinstance(path, str) else list(path)
    found = _walk(summary, segs, 0, summary)
    if isinstance(found, _Miss):
        raise UsageError(found.message)
    return found


class _Miss:
    def __init__(self, depth: int, message: str):
        self.depth, self.message = depth, message


def _num_key(text: str) -> str | None:
    try:
        v = number(text)
    except (ValueError, ZeroDivisionError):
        return None
    return f"{v:g}"


def _wanted(segs: list[str], i: int) -> str:
    """The key the path asks for at ``i``: the longest run of segments that reads as a number
    (an eps such as ``0.2``), else the next segment."""
    for j in range(len(segs), i + 1, -1):
        if _num_key(".".join(segs[i:j])) is not None:
            return ".".join(segs[i:j])
    return segs[i]


def _walk(node: Any, segs: list[str], i: int, parent: Any) -> tuple[Any, Any] | _Miss:
    if i == len(segs):
        return node, parent
    where = ".".join(segs[:i]) or "the summary"
    best: _Miss | None = None
    if isinstance(node, dict):
        keys = {str(k): k for k in node}
        numeric = {nk: k for k in keys if (nk := _num_key(k)) is not None}
        for j in range(len(segs), i, -1):
            text = ".".join(segs[i:j])
            key = keys.get(text)
            if key is None and (nk := _num_key(text)) is not None:
                key = keys.get(numeric.get(nk, ""))
            if key is None:
                continue
            found = _walk(node[key], segs, j, node)
            if not isinstance(found, _Miss):
                return found
            best = found if best is None or found.depth > best.depth else best
        if best is not None:
            return best
        want = _wanted(segs, i)
        hint = difflib.get_close_matches(want, list(keys), n=1)
        have = ", ".join(list(keys)[:25]) + (", ..." if len(keys) > 25 else "")
        return _Miss(i, f"no key {want!r} under {where}" + (f" (did you mean {hint[0]}?)" if hint else "")
                     + f"; it has: {have}")
    if isinstance(node, list):
        rk = next((k for k in ROW_KEYS if node and all(isinstance(r, dict) and k in r for r in node)), None)
        for j in range(len(segs), i, -1):
            text = ".".join(segs[i:j])
            if rk is not None:
                want = _num_key(text) if rk == "radius" else text
                rows = [r for r in node if (f"{r[rk]:g}" if rk == "radius" else str(r[rk])) == want]
                row = rows[0] if rows else None
            else:
                row = node[int(text)] if text.isdigit() and int(text) < len(node) else None
            if row is not None:
                found = _walk(row, segs, j, node)
                if not isinstance(found, _Miss):
                    return found
                best = found if best is None or found.depth > best.depth else best
        if best is not None:
            return best
        have = (", ".join(str(r[rk]) for r in node) if rk else f"0..{len(node) - 1}") if node else "nothing"
        return _Miss(i, f"no row {_wanted(segs, i)!r} in {where} (rows by {rk or 'position'}: {have})")
    return _Miss(i, f"{where} is a value ({node!r}), it has no key {segs[i]!r}")


def metric_value(results: Mapping[str, AuditResult], metric: str) -> tuple[Any, Any]:
    """(value, holding mapping) of ``metric`` in ``results`` (audit name -> result)."""
    audit, _, rest = metric.partition(".")
    audit = audit_name(audit)
    if audit not in results:
        raise UsageError(f"no {audit} result to read {metric} from")
    return resolve_metric(results[audit].summary, rest)


def baseline_metric(base: AuditResult | dict, metric: str) -> Any:
    """The baseline's value of ``metric``: from a result of the metric's audit, or from the
    ``value`` a previous verdict recorded for a check on the same metric."""
    if isinstance(base, dict):
        for c in base.get("checks", []):
            if c.get("metric") == metric and c.get("status") != "error":
                return c.get("value")
        raise UsageError(f"the verdict has no check on {metric}")
    audit = audit_name(metric.split(".", 1)[0])
    got = COMMANDS.get(base.command)
    if got != audit:
        raise UsageError(f"holds the result of the {base.command} command, but {metric} reads the {audit} audit")
    return resolve_metric(base.summary, metric.split(".", 1)[1])[0]
