"""Section builders: result files (and gate verdicts) as tables in the style of the LCNN
paper's Tables 1-3, one row per model, and figures drawn by :mod:`lcnn_audit.plots`.

Every audit's builder has the signature ``(runs, plots) -> Section`` (``runs``: the
:class:`~.document.Run` s of that command; ``plots``: draw figures); :data:`SECTION_BUILDERS`
maps each result command to its builder, in report order."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, MutableMapping, Sequence
from pathlib import Path

from ..audits.registry import AUDITS, BUILTIN, resolve
from ..formatting import num
from ..gates import CheckResult, Verdict
from ..plots import (
    examples_figure,
    grad_robustness_figure,
    histogram_figure,
    robust_comparison_figure,
    robustness_figure,
)
from .document import (
    STATUS_MARK,
    Badge,
    Figure,
    Footnotes,
    Run,
    Section,
    Table,
    draw_figure,
    eps_label,
    mean_std,
    pct,
    run_notes,
)


def build_report(runs: Sequence[Run], verdicts: Sequence[Verdict] = (), plots: bool = True) -> list[Section]:
    """Every section for ``runs`` and ``verdicts``, in a fixed order."""
    by_cmd: dict[str, list[Run]] = {}
    for r in runs:
        by_cmd.setdefault(r.result.command, []).append(r)
    sections = [verdict_section(v) for v in verdicts]
    if runs:
        sections.append(_inputs_section(runs))
    for cmd, builder in SECTION_BUILDERS.items():
        if cmd in by_cmd:
            sections.append(builder(by_cmd[cmd], plots))
    return sections


def _data_text(cfg: dict) -> str:
    d = cfg.get("data") or cfg.get("test_data")
    if isinstance(d, dict):
        return f"{d.get('data')} [{d.get('split')}], n={d.get('n')}"
    if "input_shape" in cfg:
        return f"input {tuple(cfg['input_shape'])}"
    return "–"


def _inputs_section(runs: Sequence[Run]) -> Section:
    rows = [[r.label, r.result.command, Path(r.path).name, str(r.result.config.get("checkpoint", "–")),
             _data_text(r.result.config), r.result.lcnn_audit_version, num(r.result.timing.get("seconds")),
             "yes" if r.result.complete else "no (interrupted)"] for r in runs]
    table = Table(["model", "command", "file", "checkpoint", "data", "lcnn-audit", "seconds", "complete"], rows,
                  align="lllllrrl")
    blocks: list = [table]
    other = sorted({r.result.command for r in runs} - set(SECTION_BUILDERS))
    if other:
        blocks.append(f"No section for the command(s) {', '.join(other)}; they are listed here only.")
    return Section("Inputs", "inputs", blocks)


def curvature_section(runs: list[Run], plots: bool) -> Section:
    """LCNN Table 1 (gradient and Hessian norms, curvature), the C_f distribution, histograms and examples."""
    notes = Footnotes()
    marked = {r.label: notes.mark(r.label, run_notes(r.result)) for r in runs}
    t1 = Table(["model", "n", "E‖∇f‖₂", "E‖∇²f‖₂", "E C_f", "accuracy (%)", "method", "not converged"], [
        [marked[r.label], num(s.get("n")), mean_std(s.get("grad_norm")), mean_std(s.get("hessian_norm")),
         mean_std(s.get("curvature")), pct(s.get("accuracy")), _method(s.get("method")), num(s.get("not_converged"))]
        for r in runs for s in [r.result.summary]],
        caption="Model geometry in the style of LCNN Table 1: mean ± standard deviation over samples "
                "(the paper's ± is over training runs). C_f = ‖∇²f‖₂ / (‖∇f‖₂ + ε).")
    keys = ("p5", "median", "mean", "p95", "max")
    t2 = Table(["model", *[f"C_f {k}" for k in keys]],
               [[marked[r.label], *[num((r.result.summary.get("curvature") or {}).get(k)) for k in keys]]
                for r in runs],
               caption="Distribution of the normalised curvature over samples.")
    blocks: list = [t1, t2, *notes.block()]
    if plots:
        for fld, xlabel in (("curvature", "normalised curvature C_f"), ("hessian_norm", "‖∇²f‖₂"),
                            ("grad_norm", "‖∇f‖₂")):
            series = [(r.label, r.result.per_sample.get(fld, [])) for r in runs]
            if any(vals for _, vals in series):
                blocks.append(draw_figure(f"hist_{fld}", f"histogram of {xlabel}",
                                          lambda p, s=series, x=xlabel: histogram_figure(s, p, x),
                                          f"Histogram of {xlabel} per sample (log-spaced bins)."))
        blocks += _example_figures(runs, "curvature_examples", "the most curved samples",
                                   "{label}: the {k} most curved samples: input, input gradient ∇f and the top Hessian "
                                   "eigenvector u₁ (blue negative, red positive, scaled per image) with its eigenvalue "
                                   "λ₁ and C_f.")
    return Section("Curvature (Table 1)", "curvature", blocks)


def _example_figures(runs: list[Run], name: str, title: str, caption: str) -> list[Figure]:
    """One grid per run that stored ``summary["examples"]`` (``--examples``)."""
    from ..examples import Examples  # torch and the geometry code, only when a result holds examples

    out = []
    for k, r in enumerate(runs):
        d = r.result.summary.get("examples")
        if not d:
            continue
        ex = Examples.from_dict(d)
        out.append(draw_figure(f"{name}_{k}", f"{title} ({r.label})",
                               lambda p, e=ex, t=f"{r.label}: {title}": examples_figure(e, p, t),
                               caption.format(label=r.label, k=len(ex))))
    return out


def _method(m) -> str:
    return ", ".join(m) if isinstance(m, list) else num(m)


def attack_section(runs: list[Run], plots: bool) -> Section:
    """LCNN Table 2 (worst-case robust accuracy with intervals), per attack, minimal norms, plots."""
    cols = list(dict.fromkeys((e["norm"], e["eps"]) for r in runs for e in r.result.summary.get("results", [])
                              if e["attack"] == "worst_case"))

    def cell(s: dict, attack: str, norm: str, eps: float) -> str:
        e = next((e for e in s.get("results", []) if (e["attack"], e["norm"], e["eps"]) == (attack, norm, eps)), None)
        return pct(e["robust_accuracy"], e["ci_low"], e["ci_high"]) if e else "–"

    rows = []
    notes = Footnotes()
    marked = {r.label: notes.mark(r.label, run_notes(r.result)) for r in runs}
    for r in runs:
        s = r.result.summary
        flags = s.get("flags", {})
        masking = num(flags.get("gradient_masking")) if "gradient_masking" in flags else "–"
        rows.append([marked[r.label], num(s.get("n")), pct(s.get("clean_accuracy"), s.get("clean_ci_low"),
                                                   s.get("clean_ci_high")),
                     *[cell(s, "worst_case", n, e) for n, e in cols], masking])
    t2 = Table(["model", "n", "clean acc. (%)", *[eps_label(n, e) for n, e in cols], "gradient masking?"], rows,
               caption="Robust accuracy (%) in the style of LCNN Table 2: the per-sample worst case over every "
                       "attack that ran, divided by all n, with exact (Clopper-Pearson) 95% intervals in brackets.")
    by_attack = Table(["model", "attack", *[eps_label(n, e) for n, e in cols]], [
        [r.label, a, *[cell(r.result.summary, a, n, e) for n, e in cols]]
        for r in runs for a in dict.fromkeys(e["attack"] for e in r.result.summary.get("results", []))
        if a != "worst_case"], caption="Robust accuracy (%) of each attack.", align="ll" + "r" * len(cols))
    blocks: list = [t2, by_attack, *notes.block()]
    mn = [[r.label, name, f"{st.get('found')} / {st.get('attacked')}", num(st.get("median_all")), num(st.get("mean"))]
          for r in runs for name, st in r.result.summary.get("min_norm", {}).items()]
    if mn:
        blocks.append(Table(["model", "attack", "found / attacked", "median norm (all)", "mean norm (found)"], mn,
                            caption="Minimal adversarial L2 perturbations (DeepFool, C&W).", align="llrrr"))
    if plots:
        drawable = [r for r in runs if r.result.summary.get("results")]
        if len(drawable) > 1:
            models = [(r.label, r.result.summary) for r in drawable]
            blocks.append(draw_figure("robust_compare", "worst-case robust accuracy against eps, all models",
                                      lambda p: robust_comparison_figure(models, p),
                                      "Worst-case robust accuracy against eps, models side by side."))
        for k, r in enumerate(drawable):
            blocks.append(draw_figure(f"robust_{k}", f"robust accuracy against eps for {r.label}",
                                      lambda p, res=r.result: robustness_figure(res.summary, p),
                                      f"{r.label}: robust accuracy against eps per attack (eps 0: clean accuracy)."))
        blocks += _example_figures(runs, "attack_examples", "adversarial examples of the most curved broken samples",
                                   "{label}: of the samples the attack broke, the {k} most curved: input, ∇f, top "
                                   "Hessian eigenvector u₁, the adversarial example at the smallest eps that broke it "
                                   "and the perturbation δ.")
    return Section("Adversarial robustness (Table 2)", "attack", blocks)


def grad_robustness_section(runs: list[Run], plots: bool) -> Section:
    """LCNN Fig. 2: relative gradient change against noise, beside r·E[C_f] (Proposition 1)."""
    from ..geometry.robustness import model_summaries  # the geometry code, only for grad-robustness results

    models: list[tuple[str, dict]] = []
    extra: dict[str, list[str]] = {}
    for r in runs:
        if "models" in r.result.summary:  # one --compare result holds several models
            models += [(name if len(runs) == 1 else f"{r.label}: {name}", s) for name, s in model_summaries(r.result)]
        else:
            models.append((r.label, r.result.summary))
        if not r.result.complete:
            extra[models[-1][0]] = ["interrupted run: the numbers cover only the samples done"]
    notes = Footnotes()
    marked = {name: notes.mark(name, [*s.get("notices", []), *extra.get(name, [])]) for name, s in models}
    radii = list(dict.fromkeys(f"{c['radius']:g}" for _, s in models for c in s.get("curves", [])))
    header = ["‖ε‖₂"]
    for name, _ in models:
        header += [f"{name}: measured mean", f"{name}: r·E[C_f]"]
    rows = []
    for rad in radii:
        row = [rad]
        for _, s in models:
            c = next((c for c in s.get("curves", []) if f"{c['radius']:g}" == rad), None)
            row += [num(c["mean"]), num(c["quadratic"])] if c else ["–", "–"]
        rows.append(row)
    summary = Table(["model", "n", "E C_f", "δ = max C_f"], [
        [marked[name], num(s.get("n")), num((s.get("curvature") or {}).get("mean")), num(s.get("delta"))]
        for name, s in models])
    blocks: list = [summary, Table(header, rows, caption=(
        "Relative gradient change ‖∇f(x+ε) − ∇f(x)‖ / ‖∇f(x)‖ under random noise (mean over samples), beside "
        "Proposition 1's quadratic approximation r·E[C_f] (LCNN Fig. 2).")), *notes.block()]
    if plots and any(s.get("curves") for _, s in models):
        drawable = [(n, s) for n, s in models if s.get("curves")]
        blocks.append(draw_figure("grad_robustness", "gradient robustness curves",
                                  lambda p: grad_robustness_figure(drawable, p),
                                  "Gradient robustness (LCNN Fig. 2): measured mean with median-p95 band, quadratic "
                                  "approximation dashed, bound rδ·exp(rδ) dotted."))
    return Section("Gradient robustness (Fig. 2)", "grad-robustness", blocks)


def discrepancy_section(runs: list[Run], plots: bool) -> Section:
    """LCNN Table 3: train-test discrepancy Δtt over test and over train, and the split means."""
    fields = ("grad_norm", "hessian_norm", "curvature")
    notes = Footnotes()
    marked = {r.label: notes.mark(r.label, run_notes(r.result)) for r in runs}
    t3 = Table(["model", "n train", "n test", "Δtt E‖∇f‖₂", "Δtt E‖∇²f‖₂", "Δtt E C_f",
                "/train: E‖∇f‖₂", "/train: E‖∇²f‖₂", "/train: E C_f"], [
        [marked[r.label], num(s.get("n_train")), num(s.get("n_test")),
         *[num(s.get("delta_tt", {}).get(f)) for f in fields],
         *[num(s.get("delta_tt_train", {}).get(f)) for f in fields]]
        for r in runs for s in [r.result.summary]],
        caption="Train-test discrepancy in the style of LCNN Table 3: Δtt g = |g(test) − g(train)| / g(test) of the "
                "split means (the caption's form), and the same over g(train) (the form the printed values need).")
    means = Table(["model", "‖∇f‖₂ train", "‖∇f‖₂ test", "‖∇²f‖₂ train", "‖∇²f‖₂ test", "C_f train", "C_f test"], [
        [r.label, *[num(((r.result.summary.get(split) or {}).get(f) or {}).get("mean")) for f in fields
                    for split in ("train", "test")]] for r in runs], caption="Split means behind Δtt.")
    return Section("Train-test discrepancy (Table 3)", "discrepancy", [t3, means, *notes.block()])


def bound_section(runs: list[Run], plots: bool) -> Section:
    """The data-free bounds (LCNN Theorem 1) and the penalty R_f, one row per model."""
    notes = Footnotes()
    rows = [[notes.mark(r.label, run_notes(r.result)), str(tuple(s.get("input_shape", ()))), num(s.get("lipschitz")),
             num(s.get("hessian_logits")),
             num(s.get("hessian_loss")), num(s.get("theorem1")), num(s.get("penalty")), num(s.get("composition")),
             num(s.get("smooth")), num(s.get("certified"))] for r in runs for s in [r.result.summary]]
    table = Table(["model", "input", "Lipschitz L", "‖∇²ₓ logits‖ ≤", "‖∇²ₓ CE‖ ≤", "Theorem 1 sum", "penalty R_f",
                   "composition", "smooth", "certified"], rows,
                  caption="Data-free bounds (LCNN Theorem 1). L and the Hessian bounds hold at every input; the "
                          "Theorem 1 sum is the paper's curvature budget, not a bound on C_f.")
    return Section("Data-free bound (Theorem 1)", "bound", [table, *notes.block()])


def verdict_section(verdict: Verdict) -> Section:
    """The gate verdict: one row per check, then the sources and notices."""
    rows = [[Badge(c.status), c.name, value_text(c), bound_text(c), c.message] for c in verdict.checks]
    counts = ", ".join(f"{verdict.count(s)} {s}" for s in STATUS_MARK if verdict.count(s))
    head = {"pass": "passed", "fail": "failed", "error": "could not be evaluated"}[verdict.status]
    blocks: list = [f"**{head}** ({counts}); exit code {verdict.exit_code}. Policy: `{verdict.policy}`.",
                    Table(["status", "check", "value", "bound", "detail"], rows,
                          row_classes=[c.status for c in verdict.checks], align="lllll")]
    if verdict.sources:
        blocks.append("Results: " + ", ".join(f"{a} ({s})" for a, s in verdict.sources.items()) + ".")
    if verdict.notices:
        blocks.append(list(verdict.notices))
    anchor = "gate-" + "".join(ch if ch.isalnum() else "-" for ch in verdict.name)
    return Section(f"lcnn-audit gate: {verdict.name}", anchor, blocks, status=verdict.status)


def _plain(v) -> str:
    """A check's value or bound: booleans as in YAML (true/false), numbers compact."""
    if isinstance(v, bool) or v is None:
        return json.dumps(v)
    return v if isinstance(v, str) else num(v)


def value_text(c: CheckResult) -> str:
    """A check's value, with its 95% interval when it has one."""
    text = _plain(c.value)
    if c.interval:
        text += f" [{num(c.interval[0])}, {num(c.interval[1])}]"
    return text


def bound_text(c: CheckResult) -> str:
    """A check's bound: ``≤ 40``, ``≥ baseline − 0.05``, ``(baseline 0.9 + 5%)``..."""
    sym = {"max": "≤", "min": "≥", "equals": "="}[c.op]
    text = f"{sym} {_plain(c.threshold)}"
    if c.relative_to and c.baseline is None:  # skipped: no baseline read
        text = f"{sym} baseline" + (f" {'±' if c.op == 'equals' else '+' if c.op == 'max' else '−'} {c.tolerance}"
                                    if c.tolerance else "")
    elif c.relative_to:
        text += f" (baseline {_plain(c.baseline)}" + (f" {'±' if c.op == 'equals' else '+' if c.op == 'max' else '−'} "
                                                   f"{c.tolerance}" if c.tolerance else "") + ")"
    if c.statistical:
        text += ", 95% interval"
    return text


class _SectionTable(MutableMapping):
    """Result command -> section builder, read live from the audit registry
    (:data:`lcnn_audit.audits.registry.AUDITS`, each entry's ``section``) in registry order,
    then any builder set here for a command that is not an audit (a plug-in's results)."""

    def __init__(self) -> None:
        self._extra: dict[str, Callable[[list[Run], bool], Section]] = {}

    def _registered(self) -> dict[str, Callable[[list[Run], bool], Section]]:
        return {spec.command: resolve(spec.section) for spec in AUDITS.values() if spec.section is not None}

    def __getitem__(self, command: str) -> Callable[[list[Run], bool], Section]:
        if command in self._extra:
            return self._extra[command]
        return self._registered()[command]

    def __setitem__(self, command: str, builder: Callable[[list[Run], bool], Section]) -> None:
        self._extra[command] = builder

    def __delitem__(self, command: str) -> None:
        del self._extra[command]

    def __iter__(self) -> Iterator[str]:
        return iter({**self._registered(), **self._extra})

    def __len__(self) -> int:
        return len({**self._registered(), **self._extra})

    def __repr__(self) -> str:
        return repr(dict(self))


#: result command -> its section's builder ``(runs, plots) -> Section``, in report order (live:
#: the registry's entries, see :class:`_SectionTable`)
SECTION_BUILDERS: MutableMapping[str, Callable[[list[Run], bool], Section]] = _SectionTable()
#: the built-in audits' result commands with a section, in report order
SECTIONS = tuple(AUDITS[name].command for name in BUILTIN if AUDITS[name].section is not None)
