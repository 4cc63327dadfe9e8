"""Getting the results a policy checks: running its audits, or reading result files."""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

from ..audits.registry import AUDITS as REGISTRY
from ..errors import ConfigError, UsageError
from ..results import AuditResult
from .metrics import COMMANDS, VERDICT_KIND
from .policy import DataSpec, Policy, load_policy
from .verdict import Verdict, evaluate

ProgressFactory = Callable[[str], AbstractContextManager]


def run_audits(policy: Policy, progress: ProgressFactory | None = None) -> dict[str, AuditResult]:
    """Load the model and data once and run every audit of the policy (in policy order).

    ``progress(audit_name)`` may return a context manager yielding a ``(done, total)`` callback."""
    from ..model.load import load_model

    if policy.model is None or (not policy.audits):
        raise UsageError(f"{policy.source}: the policy runs no audits (model: and audits: are needed)")
    progress = progress or (lambda name: nullcontext(None))
    m, d = policy.model, policy.data
    dataset = d.name if d is not None else None
    model = load_model(m.checkpoint, arch=m.arch, arch_kwargs=m.arch_kwargs, trust_checkpoint=m.trust_checkpoint,
                       normalize=m.normalize, output_key=m.output_key, device=m.device, dataset=dataset,
                       state_key=m.state_key)
    data = d.load() if d is not None else None
    config = {"checkpoint": m.checkpoint, "model": getattr(model, "recipe", {}), "policy": policy.source}
    out = {}
    for name, opts in policy.audits.items():
        with progress(name) as bar:
            out[name] = RUNNERS[name](model, data, opts, d, bar, config)
    return out


def run_audit(name: str, model, data, options, spec: DataSpec | None, progress=None,  # noqa: PLR0917 - RUNNERS[name](...) calls it positionally
              config: dict | None = None) -> AuditResult:
    """Run the policy's audit ``name`` through its registry entry
    (:meth:`~lcnn_audit.audits.registry.AuditSpec.execute`; ``spec``: the policy's data)."""
    return REGISTRY[name].execute(model, data, options, spec, progress=progress, config=config)


class _Runners(dict):
    """Audit name -> ``runner(model, data, options, data spec, progress, config) -> AuditResult``:
    :func:`run_audit` for every registry entry (also one added later); an item set here
    (a test's stand-in) takes its place."""

    def __missing__(self, name: str) -> Callable[..., AuditResult]:
        if name not in REGISTRY:
            raise KeyError(name)
        return functools.partial(run_audit, name)


RUNNERS: dict[str, Callable[..., AuditResult]] = _Runners({name: functools.partial(run_audit, name)
                                                            for name in REGISTRY})


def load_results(paths: Sequence[str | Path]) -> tuple[dict[str, AuditResult], dict[str, str]]:
    """Read result files (a directory stands for its ``*.json`` files, gate verdicts skipped).

    Returns (audit name -> result, audit name -> file). Every problem is reported at once."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += [f for f in sorted(p.glob("*.json")) if not _is_verdict_file(f)]
        else:
            files.append(p)
    results: dict[str, AuditResult] = {}
    sources: dict[str, str] = {}
    problems: list[str] = []
    for f in files:
        try:
            res = AuditResult.load(f)
        except UsageError as err:
            problems.append(str(err))
            continue
        audit = COMMANDS.get(res.command)
        if audit is None:
            problems.append(f"{f} holds a {res.command} result; the gate reads "
                            f"{', '.join(COMMANDS)} results")
        elif not res.complete:
            problems.append(f"{f} is an interrupted (incomplete) {res.command} run; finish it with --resume first")
        elif "models" in res.summary:
            problems.append(f"{f} holds several models (--compare); gate one model per result file")
        elif audit in results:
            problems.append(f"{f} and {sources[audit]} both hold a {res.command} result; pass one per audit")
        else:
            results[audit], sources[audit] = res, str(f)
    if not files:
        problems.append("no result files given")
    if problems:
        raise ConfigError(problems, "--results")
    return results, sources


def _is_verdict_file(path: Path) -> bool:
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("kind") == VERDICT_KIND
    except (ValueError, OSError, AttributeError):  # ValueError: not JSON, or not UTF-8
        return False


def check_coverage(policy: Policy, results: Mapping[str, AuditResult]) -> None:
    """Raise one ConfigError naming every check whose audit has no result."""
    problems = [f"{c.path}.metric: {c.metric} needs a {c.audit} result, and none was given"
                for c in policy.checks if c.audit not in results]
    if problems:
        raise ConfigError(problems, policy.source)


def gate(policy: Policy | str | Path, results: Sequence[str | Path] | None = None,
         progress: ProgressFactory | None = None) -> tuple[Verdict, dict[str, AuditResult]]:
    """The whole gate: run the policy's audits (or read ``results`` files) and evaluate."""
    t0 = time.perf_counter()
    if not isinstance(policy, Policy):
        policy = load_policy(policy, compute=not results)
    if results:
        found, sources = load_results(results)
    else:
        found, sources = run_audits(policy, progress), None
    check_coverage(policy, found)
    return evaluate(policy, found, sources, seconds=time.perf_counter() - t0), found
