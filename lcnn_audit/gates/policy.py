"""Reading a policy: YAML into the dataclasses of :mod:`.spec`, with validation that collects every
problem with its YAML path and line."""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from string import Formatter
from typing import Any, get_type_hints

import yaml

from ..audits.discrepancy import DiscrepancyOptions  # noqa: F401  (re-exported: gates.DiscrepancyOptions)
from ..audits.registry import AUDITS as REGISTRY
from ..audits.registry import resolve
from ..bound.options import BoundOptions  # noqa: F401  (re-exported: gates.BoundOptions)
from ..data import DATASETS
from ..errors import ConfigError, UsageError
from ..options import OptionsError, Problem, key_label
from .metrics import AUDITS, audit_name, baseline_metric, number
from .schema import MAX_POLICY_BYTES, check_expansion, coerce, describe, join, line_map
from .spec import BASELINE, BOUNDS, CHECK_KEYS, TOP_KEYS, Check, DataSpec, ModelSpec, Policy  # noqa: F401  (re-exported)
from .verdict import read_baseline


def _option_classes() -> dict[str, type]:
    """Audit name -> its options class, from the audit registry (imported on first use)."""
    return {name: spec.options_class for name, spec in REGISTRY.items()}


#: option fields that are not settings (filled in by the code)
HIDDEN_FIELDS = ("notices",)


def load_policy(path: str | Path, *, compute: bool = True, regression: bool = True, trust: bool = False) -> Policy:
    """Read and validate a YAML policy. ``compute=False`` (the gate's ``--results`` mode) does
    not require the model, data and audits sections that running the audits needs.
    ``regression=False`` (``--no-regression``, to create the first baseline) reads no baseline
    and marks the ``relative_to`` checks as skipped. A policy is untrusted input: a
    ``model.arch`` that names code or ``model.trust_checkpoint: true`` is refused unless
    ``trust=True`` (``gate --trust-policy``)."""
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"policy file not found: {p}")
    size = p.stat().st_size
    if size > MAX_POLICY_BYTES:
        raise ConfigError(f"the file is {size} bytes; a policy is at most {MAX_POLICY_BYTES} bytes", str(p))
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"not UTF-8 text (byte {err.start}); save the policy as UTF-8", str(p)) from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        check_expansion(node, str(p))
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        what = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"not valid YAML: {what}{where}", str(p)) from None
    lines: dict[str, int] = {}
    dups: list[str] = []
    if node is not None:
        line_map(node, "", lines, dups)
    return policy_from_dict(raw, source=str(p), base_dir=p.parent, compute=compute, regression=regression,
                            lines=lines, _dups=dups, trust=trust)


def policy_from_dict(raw: Any, *, source: str = "policy", base_dir: str | Path = ".", compute: bool = True,
                     regression: bool = True, lines: Mapping[str, int] | None = None,
                     _dups: Sequence[str] = (), trust: bool = False) -> Policy:
    """Validate a policy given as a mapping; relative file paths resolve against ``base_dir``.
    ``trust`` allows a ``model.arch`` that names code and ``model.trust_checkpoint``."""
    v = _Validator(source, Path(base_dir), lines or {}, regression, trust)
    for d in _dups:
        v.problem(d, "duplicate key (YAML keeps only the last one)")
    if not isinstance(raw, dict):
        raise ConfigError("the policy must be a YAML mapping with a checks: list", source)
    v.unknown(raw, "", TOP_KEYS)
    if "version" in raw and raw["version"] != 1:
        v.problem("version", f"unsupported policy version {raw['version']!r}; this lcnn-audit reads version 1")
    name = raw.get("name", Path(source).stem)
    if not isinstance(name, str):
        v.problem("name", "must be a string")
        name = str(name)
    model = v.model(raw.get("model"), required=compute)
    data = v.data(raw.get("data"))
    audits = v.audits(raw.get("audits"), data)
    checks = v.checks(raw.get("checks"), audits)
    if compute:
        v.coverage(checks, audits, model, data)
    if v.problems:
        raise ConfigError(v.sorted_problems(), source)
    return Policy(source=source, name=name, checks=tuple(checks), model=model, data=data, audits=audits)


class _Validator:
    """Collects every problem with its YAML path; builds the policy's parts."""

    def __init__(self, source: str, base_dir: Path, lines: Mapping[str, int], regression: bool = True,
                 trust: bool = False):
        self.source, self.base_dir, self.lines, self.regression = source, base_dir, lines, regression
        self.trust = trust
        self.problems: list[tuple[int, str]] = []
        self.baselines: dict[Path, Any] = {}
        self.configured: set[str] = set()  # audits named in audits:, valid or not

    def problem(self, path: str, msg: str, at: str | None = None) -> None:
        """Record ``msg`` about ``path``, at the YAML line of ``at`` (default: of ``path``)."""
        probe = at or path
        while probe and probe not in self.lines:
            probe = probe.rsplit(".", 1)[0] if "." in probe else probe.split("[", 1)[0] if "[" in probe else ""
        line = self.lines.get(probe)
        where = f" (line {line})" if line is not None else ""
        self.problems.append((line or 0, f"{path or 'policy'}{where}: {msg}"))

    def sorted_problems(self) -> list[str]:
        """In reading order: by line, problems without a line (whole sections) first."""
        return [msg for _, msg in sorted(self.problems, key=lambda p: p[0])]

    def unknown(self, d: dict, path: str, allowed: Sequence[str]) -> None:
        for k in d:
            if k not in allowed:
                hint = difflib.get_close_matches(str(k), allowed, n=1)
                self.problem(join(path, str(k)), "unknown key" + (f" (did you mean {hint[0]}?)" if hint else "")
                             + f"; use {', '.join(allowed)}")

    def resolve(self, p: str) -> str:
        q = Path(p).expanduser()
        return str(q if q.is_absolute() else self.base_dir / q)

    # ---------------------------------------------------------------- sections

    def section(self, raw: Any, path: str, cls: type, required: bool):
        if raw is None:
            if required:
                self.problem(path, "missing" if path not in self.lines else "is empty")
            return None
        obj = self.build(cls, raw, path)
        return obj

    def model(self, raw: Any, required: bool) -> ModelSpec | None:
        spec = self.section(raw, "model", ModelSpec, required=required)
        if spec is None:
            return None
        if not self.trust:
            if isinstance(spec.arch, str) and ":" in spec.arch:
                self.problem("model.arch", f"{spec.arch!r} names code to import and run; a policy file is untrusted "
                                           "input: pass gate --trust-policy if you wrote or reviewed it, or name a "
                                           "built-in or torchvision architecture")
            if spec.trust_checkpoint is True:
                self.problem("model.trust_checkpoint", "lets the checkpoint run code; a policy file is untrusted "
                                                       "input: pass gate --trust-policy if you wrote or reviewed it")
        kw = {}
        if spec.checkpoint != "demo":
            kw["checkpoint"] = self.resolve(spec.checkpoint)
        if spec.arch and ".py:" in spec.arch:
            file, _, fn = spec.arch.rpartition(":")
            kw["arch"] = f"{self.resolve(file)}:{fn}"
        return dataclasses.replace(spec, **kw)

    def data(self, raw: Any) -> DataSpec | None:
        spec = self.section(raw, "data", DataSpec, required=False)
        if spec is None:
            return None
        names = ("demo", *DATASETS)
        if (spec.name is None) == (spec.path is None):
            self.problem("data", f"give exactly one of name ({', '.join(names)}) and path (an ImageFolder "
                                 "directory or a .pt/.npz tensor file)")
        elif spec.name is not None and spec.name.lower() not in names:
            hint = difflib.get_close_matches(spec.name.lower(), names, n=1)
            self.problem("data.name", f"unknown dataset {spec.name!r}" + (f" (did you mean {hint[0]}?)" if hint
                                                                          else "")
                         + f"; use one of {', '.join(names)}, or path: for a file or folder")
        if spec.split not in ("train", "test"):
            self.problem("data.split", f"must be train or test, got {spec.split!r}")
        if spec.n is not None and spec.n < 1:
            self.problem("data.n", f"must be >= 1, got {spec.n}")
        if spec.batch_size < 1:
            self.problem("data.batch_size", f"must be >= 1, got {spec.batch_size}")
        kw = {k: self.resolve(getattr(spec, k)) for k in ("path", "root") if getattr(spec, k) is not None}
        return dataclasses.replace(spec, **kw)

    def audits(self, raw: Any, data: DataSpec | None) -> dict[str, Any]:
        if raw is None:
            return {}
        if not isinstance(raw, dict):
            self.problem("audits", f"must be a mapping of audit name to options ({', '.join(AUDITS)})")
            return {}
        classes = _option_classes()
        out: dict[str, Any] = {}
        seen: dict[str, str] = {}
        for key, opts in raw.items():
            name = audit_name(str(key))
            path = join("audits", str(key))
            if name not in AUDITS:
                hint = difflib.get_close_matches(str(key), AUDITS, n=1)
                self.problem(path, "unknown audit" + (f" (did you mean {hint[0]}?)" if hint else "")
                             + f"; use {', '.join(AUDITS)}")
                continue
            if name in seen:
                self.problem(path, f"the {name} audit is already configured at audits.{seen[name]}")
                continue
            seen[name] = str(key)
            if opts is False:  # switched off
                continue
            self.configured.add(name)
            seed = data.seed if data is not None else 0
            obj = self.build(classes[name], {} if opts is None or opts is True else opts, path, seed=seed)
            paths = {f: self.resolve(getattr(obj, f)) for f in REGISTRY[name].path_fields
                     if obj is not None and getattr(obj, f) is not None}
            if paths:
                obj = dataclasses.replace(obj, **paths)
            if obj is not None:
                out[name] = obj
        return out

    def checks(self, raw: Any, audits: Mapping[str, Any]) -> list[Check]:
        if raw is None:
            self.problem("checks", "missing: a policy needs at least one check")
            return []
        if not isinstance(raw, list) or not raw:
            self.problem("checks", "must be a non-empty list of checks (- metric: ..., max/min/equals: ...)")
            return []
        out: list[Check] = []
        names: dict[str, str] = {}
        for i, item in enumerate(raw):
            check = self.check(item, f"checks[{i}]", audits)
            if check is None:
                continue
            if check.name in names:
                self.problem(f"checks[{i}]", f"duplicate check name {check.name!r} (also {names[check.name]}); "
                                             "give each check its own name")
            names[check.name] = check.path
            out.append(check)
        return out

    def check(self, item: Any, path: str, audits: Mapping[str, Any]) -> Check | None:
        if not isinstance(item, dict):
            self.problem(path, "must be a mapping with metric: and one of max, min, equals")
            return None
        n0 = len(self.problems)
        self.unknown(item, path, CHECK_KEYS)
        metric = item.get("metric")
        if isinstance(metric, str) and metric.strip():
            metric = metric.strip()
            self.metric(metric, join(path, "metric"), audits)
        else:
            self.problem(join(path, "metric"), "missing" if metric is None else
                         "must be a dotted path such as curvature.curvature.mean")
        ops = [b for b in BOUNDS if b in item]
        if len(ops) != 1:
            self.problem(path, "needs exactly one of max, min, equals" + (
                f", got {', '.join(ops)}: write one check per bound" if ops else ""))
        op = ops[0] if ops else "max"
        bound = item.get(op)
        rel = item.get("relative_to")
        if rel is not None and not isinstance(rel, str):
            self.problem(join(path, "relative_to"), "must be the path of a result or verdict JSON file")
        tol, tol_rel = self.tolerance(item, path, op, rel)
        if ops and rel is not None and bound != BASELINE:
            self.problem(join(path, op), f"with relative_to the bound is the baseline: write {op}: baseline")
        elif ops and rel is None and bound == BASELINE:
            self.problem(join(path, "relative_to"), f"missing: {op}: baseline needs relative_to: BASELINE.json")
        elif ops and bound != BASELINE:
            bound = self.bound_value(bound, op, join(path, op))
        statistical = item.get("statistical", False)
        if not isinstance(statistical, bool):
            self.problem(join(path, "statistical"), "must be true or false")
        elif statistical and isinstance(metric, str) and not metric.rsplit(".", 1)[-1].endswith("accuracy"):
            self.problem(join(path, "statistical"), "applies to accuracies only (a metric whose last key ends in "
                                                     f"'accuracy'), not {metric}")
        name = item.get("name")
        if name is not None and not isinstance(name, str):
            self.problem(join(path, "name"), "must be a string")
        if len(self.problems) > n0:
            return None
        check = Check(name=name or _default_name(metric, op, bound, tol, tol_rel), metric=metric, op=op,
                      bound=bound, path=path, relative_to=self.resolve(rel) if rel else None, tolerance=tol,
                      tolerance_relative=tol_rel, statistical=statistical)
        if check.relative_to and not self.regression:
            return dataclasses.replace(check, skip=True)
        if check.relative_to:
            base = self.baseline_value(check, join(path, "relative_to"))
            if base is None:
                return None
            check = dataclasses.replace(check, baseline=base)
        return check

    def tolerance(self, item: dict, path: str, op: str, rel) -> tuple[float, bool]:
        if "tolerance" not in item:
            return 0.0, False
        raw, p = item["tolerance"], join(path, "tolerance")
        if rel is None and op != "equals":
            self.problem(p, f"a tolerance applies to relative_to (regression) checks and equals, not to {op}: "
                            "move the threshold instead")
            return 0.0, False
        relative = isinstance(raw, str) and raw.strip().endswith("%")
        try:
            val = number(raw.strip()[:-1]) / 100 if relative else number(raw)
        except ValueError:
            self.problem(p, f"must be a number >= 0 or a percentage such as 5%, got {raw!r}")
            return 0.0, False
        if not (val >= 0 and math.isfinite(val)):
            self.problem(p, f"must be >= 0, got {raw!r}")
            return 0.0, False
        return val, relative

    def bound_value(self, bound: Any, op: str, path: str) -> Any:
        if op == "equals":
            if isinstance(bound, (bool, str)) or bound is None:
                return bound
        try:
            value = number(bound)
        except (ValueError, ZeroDivisionError):
            self.problem(path, ("must be a number, true/false or a string" if op == "equals" else
                                "must be a number") + f", got {bound!r}")
            return None
        if not math.isfinite(value):  # 1.0e+400 reads as inf: a check that always passes
            self.problem(path, f"must be a finite number, got {bound!r} (a number beyond ±1.8e308 reads as "
                               "infinity, and a check against it always passes)")
            return None
        return value

    def metric(self, metric: str, path: str, audits: Mapping[str, Any]) -> None:
        segs = metric.split(".")
        if any(not s for s in segs) or len(segs) < 2:
            self.problem(path, f"{metric!r} is not a dotted path AUDIT.KEY[.KEY...] such as curvature.curvature.mean")
            return
        audit = audit_name(segs[0])
        if audit not in AUDITS:
            hint = difflib.get_close_matches(segs[0], AUDITS, n=1)
            self.problem(path, f"unknown audit {segs[0]!r} in {metric}"
                         + (f" (did you mean {hint[0]}?)" if hint else "")
                         + f"; a metric starts with one of {', '.join(AUDITS)}")
            return
        check = REGISTRY[audit].metric_check
        if check is not None:
            for msg in resolve(check)(segs[1:], audits.get(audit)):
                self.problem(path, msg)

    def coverage(self, checks: list[Check], audits: Mapping[str, Any], model, data) -> None:
        for c in checks:
            if c.audit not in self.configured:
                self.problem(join(c.path, "metric"), f"needs the {c.audit} audit: add audits.{c.audit} (or check "
                                                      "existing results with --results)")
        needs_data = [a for a in audits if REGISTRY[a].requires_data(audits[a])]
        if needs_data and data is None:
            self.problem("data", f"missing: the {', '.join(needs_data)} audit(s) need data (data.name: demo, "
                                 "cifar10, ... or data.path)")

    def baseline_value(self, check: Check, path: str) -> Any:
        p = Path(check.relative_to)
        if p not in self.baselines:
            try:
                self.baselines[p] = read_baseline(p)
            except UsageError as err:
                self.baselines[p] = err
        base = self.baselines[p]
        if isinstance(base, UsageError):
            self.problem(path, str(base))
            return None
        try:
            val = baseline_metric(base, check.metric)
        except UsageError as err:
            self.problem(path, f"{p.name}: {err}")
            return None
        if val is None or (check.op != "equals" and (isinstance(val, bool) or not isinstance(val, (int, float)))):
            self.problem(path, f"{p.name} holds {val!r} for {check.metric}; {check.op}: baseline needs a number")
            return None
        return val

    # ---------------------------------------------------------------- dataclasses

    def build(self, cls: type, raw: Any, path: str, seed: int | None = None):
        """``cls(**raw)`` checked field by field, then by ``cls.validate()``; None if anything is wrong.

        Fields that are wrong are left at their defaults so that ``validate`` still runs and its
        problems are reported too."""
        if not isinstance(raw, dict):
            self.problem(path, f"must be a mapping of {cls.__name__} settings")
            return None
        hints = get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls) if f.init and f.name not in HIDDEN_FIELDS}
        n0 = len(self.problems)
        self.unknown(raw, path, list(fields))
        kw: dict[str, Any] = {}
        for name, f in fields.items():
            p, hint = join(path, name), hints[name]
            if name not in raw:
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                    self.problem(p, "missing")
                elif name == "seed" and seed is not None:
                    kw[name] = seed
                elif dataclasses.is_dataclass(hint):
                    kw[name] = self.build(hint, {}, p, seed)
            elif dataclasses.is_dataclass(hint):
                kw[name] = self.build(hint, {} if raw[name] is None else raw[name], p, seed)
            else:
                try:
                    kw[name] = coerce(raw[name], hint)
                except ValueError:
                    self.problem(p, f"must be {describe(hint)}, got {raw[name]!r}")
        kw = {k: v for k, v in kw.items() if v is not None or not dataclasses.is_dataclass(hints[k])}
        missing = [k for k, f in fields.items() if k not in kw and f.default is dataclasses.MISSING
                   and f.default_factory is dataclasses.MISSING]
        if missing:
            return None
        try:
            obj = cls(**kw)
            if hasattr(obj, "validate"):
                obj.validate()
        except OptionsError as err:  # each problem names its field: a policy key, at that key's line
            for p in err.problems:
                self.problem(path, p.render(key_label), at=join(path, f) if (f := _field_of(p)) else None)
            return None
        except UsageError as err:
            self.problem(path, str(err))
            return None
        except (TypeError, ValueError) as err:
            self.problem(path, f"invalid settings: {err}")
            return None
        return None if len(self.problems) > n0 else obj


def _field_of(problem: Problem) -> str | None:
    """The field a problem is about: its own, else the first ``{field}`` its message names."""
    if problem.field:
        return problem.field
    return next((name for _, name, _, _ in Formatter().parse(problem.message) if name), None)


def _default_name(metric: str, op: str, bound: Any, tol: float, tol_rel: bool) -> str:
    """``curvature.curvature.mean <= 40``, ``... >= baseline - 5%``, ``attack.flags.gradient_masking == false``."""
    sym = {"max": "<=", "min": ">=", "equals": "=="}[op]
    if bound == BASELINE:
        val = BASELINE
    elif isinstance(bound, float):
        val = f"{bound:g}"
    else:
        val = json.dumps(bound)
    if tol:
        sign = {"max": "+", "min": "-", "equals": "±"}[op]
        val += f" {sign} " + (f"{tol * 100:g}%" if tol_rel else f"{tol:g}")
    return f"{metric} {sym} {val}"


def _attack_metric_problems(segs: list[str], opts) -> list[str]:
    """Static checks of ``attack.flags.<flag>`` and of ``attack.<attack>.<norm>.<eps>.<field>``
    against the policy's own attack options (when it has valid ones), before anything runs."""
    from ..attacks.options import WORST

    head = segs[0]
    if head in ("indicators", "flags"):
        return _attack_flag_problems(segs)
    if opts is None:
        return []
    if head not in (*opts.attacks, WORST):
        from ..attacks.options import ATTACKS

        if head in ATTACKS:
            return [f"attack {head!r} is not in audits.attack.attacks ({', '.join(opts.attacks)})"]
        return []
    return _attack_field_problems(segs, opts)


def _attack_flag_problems(segs: list[str]) -> list[str]:
    """``attack.indicators.NAME.count|checked|share`` and ``attack.flags.FLAG``."""
    from ..attacks.flags import FLAG_NAMES

    if segs[0] == "indicators":
        from ..attacks.indicators import INDICATORS

        if len(segs) != 3 or segs[1] not in INDICATORS or segs[2] not in ("count", "checked", "share"):
            return [f"write attack.indicators.NAME.count|checked|share with NAME one of {', '.join(INDICATORS)}"]
        return []
    if len(segs) != 2 or segs[1] not in FLAG_NAMES:
        return [f"attack.flags.{'.'.join(segs[1:])} is not a flag; use one of {', '.join(FLAG_NAMES)}"]
    return []


def _attack_field_problems(segs: list[str], opts) -> list[str]:
    """``attack.<attack>.<norm>.<eps>.<field>`` against the policy's norms and eps sweep."""
    from ..attacks.options import eps_key

    head = segs[0]
    if len(segs) < 4:
        return [f"write attack.{head}.NORM.EPS.FIELD (e.g. attack.{head}.{opts.norms[0]}.0.1.robust_accuracy)"]
    norm, eps_text, fld = segs[1], ".".join(segs[2:-1]), segs[-1]
    if norm not in opts.norms:
        return [f"norm {norm!r} is not in audits.attack.norms ({', '.join(opts.norms)})"]
    sweep = [eps_key(e) for e in opts.eps_for(norm)]
    try:
        key = eps_key(number(eps_text))
    except ValueError:
        return [f"eps {eps_text!r} is not a number or a fraction like 8/255"]
    if key not in sweep:
        return [f"eps {eps_text} is not in the {norm} sweep of audits.attack ({', '.join(sweep)})"]
    fields = ("robust_accuracy", "ci_low", "ci_high", "n", "robust")
    if fld not in fields:
        return [f"unknown field {fld!r}; an attack result has {', '.join(fields)}"]
    return []
