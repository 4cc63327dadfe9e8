"""Report inputs: result files and gate verdicts read from disk (:func:`load_inputs`), or the
objects a notebook holds (:func:`as_runs`), each result labelled with its model's name."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..errors import UsageError
from ..gates import VERDICT_KIND, Verdict
from ..io import read_json
from ..results import AuditResult
from .document import Run


def load_inputs(paths: Sequence[str | Path], labels: Sequence[str] | None = None) -> tuple[list[Run], list[Verdict]]:
    """Read result files and gate verdict files; ``labels`` name the result files' models in order."""
    runs: list[tuple[str, AuditResult]] = []
    verdicts: list[Verdict] = []
    for p in map(Path, paths):
        d = read_json(p, "report input")
        if isinstance(d, dict) and d.get("kind") == VERDICT_KIND:
            try:
                verdicts.append(Verdict.from_dict(d))
            except UsageError as err:
                raise UsageError(f"{p}: not a valid gate verdict: {err}") from None
        else:
            try:
                runs.append((str(p), AuditResult.from_dict(d if isinstance(d, dict) else {})))
            except UsageError as err:
                raise UsageError(f"{p}: {err}") from None
    if labels and len(labels) != len(runs):
        raise UsageError(f"--label was given {len(labels)} time(s) for {len(runs)} result file(s); give one per file")
    return _label(runs, labels), verdicts


def _label(runs: list[tuple[str, AuditResult]], labels: Sequence[str] | None) -> list[Run]:
    """The model's checkpoint name; the file name where two runs of one command share it."""
    if labels:
        return [Run(lab, p, r) for lab, (p, r) in zip(labels, runs, strict=True)]

    names = [Path(str(r.config["checkpoint"])).stem if r.config.get("checkpoint") else Path(p).stem
             for p, r in runs]
    out: list[Run] = []
    for i, (p, r) in enumerate(runs):
        shared = sum(r2.command == r.command and names[j] == names[i] for j, (_, r2) in enumerate(runs)) > 1
        name = f"{names[i]} ({Path(p).stem})" if shared else names[i]
        taken = {o.label for o in out if o.result.command == r.command}
        label, k = name, 2
        while label in taken:
            label, k = f"{name} #{k}", k + 1
        out.append(Run(label, p, r))
    return out


def as_runs(items, labels: Sequence[str] | None = None) -> tuple[list[Run], list[Verdict]]:
    """Report inputs from a notebook: :class:`Run`, :class:`~lcnn_audit.results.AuditResult`,
    :class:`~lcnn_audit.gates.Verdict` objects or result-file paths, in any mix. ``labels`` name
    the results' models in order (default: the checkpoint's name, else ``model 1``, ``model 2``...)."""
    if isinstance(items, (Run, AuditResult, Verdict, str, Path)):
        items = [items]
    pairs: list[tuple[str, AuditResult]] = []
    given: list[Run | None] = []
    verdicts: list[Verdict] = []
    for k, item in enumerate(items, 1):
        if isinstance(item, Verdict):
            verdicts.append(item)
        elif isinstance(item, Run):
            pairs.append((item.path, item.result))
            given.append(item)
        elif isinstance(item, AuditResult):
            pairs.append((item.config.get("checkpoint") and str(item.config["checkpoint"]) or f"model {k}", item))
            given.append(None)
        elif isinstance(item, (str, Path)):
            runs, vs = load_inputs([item])
            verdicts += vs
            pairs += [(r.path, r.result) for r in runs]
            given += [None] * len(runs)
        else:
            raise UsageError(f"cannot report a {type(item).__name__}: pass AuditResult objects (what the audits "
                             "return), gate verdicts or result JSON paths")
    if labels is not None and len(labels) != len(pairs):
        raise UsageError(f"labels: {len(labels)} given for {len(pairs)} result(s); give one per result")
    runs = _label(pairs, labels)
    if labels is None:
        runs = [g if g is not None else r for g, r in zip(given, runs, strict=True)]
    return runs, verdicts
