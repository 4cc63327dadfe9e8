"""Checks evaluated against results, and the verdict with its JSON form."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._version import __version__
from ..errors import UsageError
from ..io import read_json, write_json
from ..results import AuditResult
from .metrics import VERDICT_KIND, metric_value

if TYPE_CHECKING:
    from .policy import Check, Policy

STATUSES = ("pass", "fail", "error", "skip")
OPS = ("max", "min", "equals")


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_scalar(v: Any) -> bool:
    return v is None or isinstance(v, (bool, int, float, str))


def _short(v: Any) -> str:
    """A value from an untrusted file, shortened and quoted for an error message."""
    text = json.dumps(v, ensure_ascii=True, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check. ``status`` is pass, fail, error (the check could not be
    evaluated: the metric is missing, null or of the wrong type) or skip (``--no-regression``)."""

    name: str
    metric: str
    audit: str
    op: str
    bound: Any
    threshold: Any
    value: Any
    status: str
    message: str
    path: str
    statistical: bool = False
    interval: tuple[float, float] | None = None
    baseline: Any = None
    relative_to: str | None = None
    tolerance: str | None = None

    def to_dict(self) -> dict:
        """JSON form."""
        d = dataclasses.asdict(self)
        d["interval"] = list(self.interval) if self.interval else None
        return d

    @classmethod
    def from_dict(cls, d: dict, where: str = "check") -> CheckResult:
        """Read a check back from a verdict file; every field is type-checked (a verdict file is
        untrusted input that ends up in HTML, Markdown and XML), and ``status``/``op`` must be
        known values. Raises UsageError naming ``where``."""
        if not isinstance(d, dict):
            raise UsageError(f"{where} must be a mapping, got {type(d).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in d.items() if k in names}
        missing = [k for k in ("name", "metric", "op", "status") if k not in kw]
        if missing:
            raise UsageError(f"{where} lacks {', '.join(missing)}")
        if kw["status"] not in STATUSES:
            raise UsageError(f"{where}.status is {_short(kw['status'])}; a check's status is one of "
                             f"{', '.join(STATUSES)}")
        if kw["op"] not in OPS:
            raise UsageError(f"{where}.op is {_short(kw['op'])}; one of {', '.join(OPS)}")
        kw.setdefault("audit", str(kw["metric"]).split(".", 1)[0])
        for k in ("bound", "threshold", "value", "baseline"):
            kw.setdefault(k, None)
            if not _is_scalar(kw[k]):
                raise UsageError(f"{where}.{k} must be a number, string, true/false or null")
        kw.setdefault("message", "")
        kw.setdefault("path", "")
        for k in ("name", "metric", "audit", "message", "path"):
            if not isinstance(kw[k], str):
                raise UsageError(f"{where}.{k} must be a string, got {type(kw[k]).__name__}")
        for k in ("relative_to", "tolerance"):
            if kw.get(k) is not None and not isinstance(kw[k], str):
                raise UsageError(f"{where}.{k} must be a string or null")
        if not isinstance(kw.get("statistical", False), bool):
            raise UsageError(f"{where}.statistical must be true or false")
        iv = kw.get("interval")
        if iv:
            if not (isinstance(iv, list) and len(iv) == 2 and all(_is_number(v) for v in iv)):
                raise UsageError(f"{where}.interval must be a list of two numbers")
            kw["interval"] = tuple(iv)
        else:
            kw["interval"] = None
        return cls(**kw)


@dataclass(frozen=True)
class Verdict:
    """Every check's outcome. ``exit_code``: 0 every check passed (or was skipped), 1 a check
    failed, 2 a check could not be evaluated (a policy error)."""

    policy: str
    name: str
    checks: tuple[CheckResult, ...]
    sources: dict[str, str] = field(default_factory=dict)
    notices: tuple[str, ...] = ()
    seconds: float = 0.0
    lcnn_audit_version: str = __version__

    def count(self, status: str) -> int:
        """How many checks have ``status``."""
        return sum(c.status == status for c in self.checks)

    @property
    def status(self) -> str:
        """``error`` if any check errored, else ``fail`` if any failed, else ``pass``."""
        return "error" if self.count("error") else "fail" if self.count("fail") else "pass"

    @property
    def passed(self) -> bool:
        """Every check passed."""
        return self.status == "pass"

    @property
    def exit_code(self) -> int:
        """0 pass, 1 fail, 2 error."""
        return {"pass": 0, "fail": 1, "error": 2}[self.status]

    def to_dict(self) -> dict:
        """JSON form, with the result schema version."""
        from ..results import SCHEMA_VERSION  # noqa: PLC0415

        return {"kind": VERDICT_KIND, "schema_version": SCHEMA_VERSION,
                "lcnn_audit_version": self.lcnn_audit_version, "policy": self.policy,
                "name": self.name, "status": self.status, "exit_code": self.exit_code,
                "counts": {s: self.count(s) for s in STATUSES}, "checks": [c.to_dict() for c in self.checks],
                "sources": dict(self.sources), "notices": list(self.notices), "seconds": self.seconds}

    @classmethod
    def from_dict(cls, d: dict) -> Verdict:
        """Read a verdict file back, checking every field's type (see :meth:`CheckResult.from_dict`)."""
        if not isinstance(d, dict) or d.get("kind") != VERDICT_KIND:
            raise UsageError("not an lcnn-audit gate verdict (no kind: lcnn-audit-verdict)")
        policy, name, version = d.get("policy", ""), d.get("name", ""), d.get("lcnn_audit_version", "unknown")
        for key, v in (("policy", policy), ("name", name), ("lcnn_audit_version", version)):
            if not isinstance(v, str):
                raise UsageError(f"verdict {key} must be a string, got {type(v).__name__}")
        if "status" in d and d["status"] not in ("pass", "fail", "error"):
            raise UsageError(f"verdict status is {_short(d['status'])}; one of pass, fail, error")
        checks, sources, notices = d.get("checks", []), d.get("sources", {}), d.get("notices", [])
        if not isinstance(checks, list):
            raise UsageError("verdict checks must be a list")
        if not (isinstance(sources, dict) and all(isinstance(v, str) for v in sources.values())):
            raise UsageError("verdict sources must map audit names to strings")
        if not (isinstance(notices, list) and all(isinstance(n, str) for n in notices)):
            raise UsageError("verdict notices must be a list of strings")
        seconds = d.get("seconds", 0.0)
        if not _is_number(seconds):
            raise UsageError("verdict seconds must be a number")
        return cls(policy=policy, name=name,
                   checks=tuple(CheckResult.from_dict(c, f"checks[{i}]") for i, c in enumerate(checks)),
                   sources={str(k): v for k, v in sources.items()}, notices=tuple(notices),
                   seconds=float(seconds), lcnn_audit_version=version)

    def save_json(self, path: str | Path) -> Path:
        """Write the JSON form atomically to ``path``."""
        return write_json(path, self.to_dict())


def evaluate(policy: Policy, results: Mapping[str, AuditResult], sources: Mapping[str, str] | None = None,
             seconds: float = 0.0) -> Verdict:
    """Check every metric of ``policy`` against ``results`` (audit name -> result)."""
    checks = tuple(evaluate_check(c, results) for c in policy.checks)
    notices: list[str] = []
    for audit, res in results.items():
        s = res.summary
        notices += [f"{audit}: {n}" for n in [*s.get("notices", []), *s.get("flag_messages", [])]]
        ck = res.config.get("checkpoint")
        if policy.model is not None and ck and Path(str(ck)).name != Path(policy.model.checkpoint).name:
            notices.append(f"{audit}: the result is for checkpoint {ck}, the policy names {policy.model.checkpoint}")
    srcs = dict(sources) if sources is not None else dict.fromkeys(results, "computed")
    return Verdict(policy=policy.source, name=policy.name, checks=checks, sources=srcs,
                   notices=tuple(dict.fromkeys(notices)), seconds=seconds)


def evaluate_check(check: Check, results: Mapping[str, AuditResult]) -> CheckResult:
    """One check: pass or fail against its bound, error when its metric cannot be read as needed."""
    threshold = check.threshold()
    base = dict(name=check.name, metric=check.metric, audit=check.audit, op=check.op, bound=check.bound,
                threshold=threshold, path=check.path, statistical=check.statistical, baseline=check.baseline,
                relative_to=check.relative_to, tolerance=check.tolerance_text)

    def error(msg: str, value: Any = None) -> CheckResult:
        return CheckResult(value=value, status="error", message=msg, **base)

    try:
        value, holder = metric_value(results, check.metric)
    except UsageError as err:
        return error(str(err))
    if value is None:
        return error(f"{check.metric} is null: it was not computed in this run")
    if isinstance(value, (dict, list)):
        return error(f"{check.metric} is a {type(value).__name__}, not a value; name one of its entries")
    if check.skip:
        return CheckResult(value=value, status="skip", message="regression check skipped (--no-regression)", **base)
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    if check.op == "equals" and not (numeric and isinstance(threshold, (int, float))
                                     and not isinstance(threshold, bool)):
        return _equals_exactly(check, value, threshold, base)
    if not numeric:
        return error(f"{check.metric} is {json.dumps(value)}, not a number; use equals: for it", value)
    interval = None
    if check.statistical:
        interval = _interval(value, holder, check.metric)
        if interval is None:
            return error(f"{check.metric} has no 95% interval (no ci_low/ci_high and no n beside it)", value)
    status, msg = _compare(check, float(value), threshold, interval)
    return CheckResult(value=value, status=status, message=msg, interval=interval, **base)


def _equals_exactly(check: Check, value: Any, threshold: Any, base: dict) -> CheckResult:
    """``equals:`` on a non-numeric value: same type and value (a type mismatch is an error)."""
    ok = value == threshold and type(value) is type(threshold)
    if not ok and type(value) is not type(threshold):
        return CheckResult(value=value, status="error",
                           message=f"{check.metric} is {json.dumps(value)}, which cannot equal "
                                   f"{json.dumps(threshold)}", **base)
    return CheckResult(value=value, status="pass" if ok else "fail",
                       message=f"{_show(value)} {'==' if ok else '!='} {_show(threshold)}", **base)


def _compare(check: Check, v: float, t: float, interval) -> tuple[str, str]:
    if math.isnan(v):
        return "fail", "the value is NaN"
    if check.op == "equals":
        tol = check.equals_tolerance()
        if interval is not None:
            ok = interval[0] - tol <= t <= interval[1] + tol
            return ("pass" if ok else "fail"), (f"95% interval [{_show(interval[0])}, {_show(interval[1])}] "
                                                + ("contains " if ok else "excludes ") + _show(t))
        ok = abs(v - t) <= tol
        return ("pass" if ok else "fail"), f"{_show(v)} {'==' if ok else '!='} {_show(t)}" + (
            f" (± {_show(tol)})" if tol else "")
    above = check.op == "max"
    sym_ok, sym_bad = ("<=", ">") if above else (">=", "<")
    if interval is not None:
        lo, hi = interval
        beyond = lo > t if above else hi < t
        iv = f"95% interval [{_show(lo)}, {_show(hi)}]"
        if beyond:
            return "fail", f"{iv} lies entirely {'above' if above else 'below'} {_show(t)}"
        point_ok = v <= t if above else v >= t
        return "pass", (f"{_show(v)} {sym_ok} {_show(t)}" if point_ok else
                        f"{_show(v)} {sym_bad} {_show(t)}, but the {iv} reaches it: not significant")
    ok = v <= t if above else v >= t
    return ("pass" if ok else "fail"), f"{_show(v)} {sym_ok if ok else sym_bad} {_show(t)}"


def _interval(value: float, holder: Any, metric: str) -> tuple[float, float] | None:
    if not isinstance(holder, dict):
        return None
    leaf = metric.rsplit(".", 1)[-1]
    prefix = leaf.removesuffix("accuracy")
    for lo_key, hi_key in ((f"{prefix}ci_low", f"{prefix}ci_high"), ("ci_low", "ci_high")):
        if lo_key in holder and hi_key in holder:
            return float(holder[lo_key]), float(holder[hi_key])
    n = holder.get("n")
    if isinstance(n, int) and n > 0 and 0 <= value <= 1:
        from ..attacks.stats import clopper_pearson

        return clopper_pearson(round(value * n), n)
    return None


def _show(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return json.dumps(v)
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def read_baseline(path: Path) -> AuditResult | dict:
    """A baseline file: an audit result, or a gate verdict (as its dict). Raises UsageError."""
    d = read_json(path, "baseline file")
    if isinstance(d, dict) and d.get("kind") == VERDICT_KIND:
        try:
            Verdict.from_dict(d)  # every field checked before a check reads one
        except UsageError as err:
            raise UsageError(f"baseline {path.name} is not a valid gate verdict: {err}") from None
        return d
    try:
        return AuditResult.from_dict(d if isinstance(d, dict) else {})
    except UsageError:
        raise UsageError(f"baseline {path.name} is neither an lcnn-audit result nor a gate verdict "
                         "(gate --json)") from None
