"""Reports: audit results side by side, and gate verdicts, rendered (never computed).

* :func:`build_report` turns result files (and gate verdicts) into sections: tables in the
  style of the LCNN paper's Tables 1-3 with one row per model, and figures (curvature
  histograms, gradient-robustness curves, robust accuracy against eps) drawn by
  :mod:`lcnn_audit.plots` and :mod:`lcnn_audit.attacks.plot`;
* :func:`render_html` writes one self-contained page (inline CSS, images as base64 data URIs,
  no scripts, no network) and :func:`render_markdown` GitHub-flavoured Markdown with the
  images beside it;
* :func:`verdict_markdown` (for ``$GITHUB_STEP_SUMMARY``) and :func:`verdict_junit` (one
  testcase per check) render a :class:`~lcnn_audit.gates.Verdict`.
"""

from __future__ import annotations

import base64
import html
import json
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ._version import __version__
from .errors import UsageError
from .formatting import eps_text, num
from .gates import VERDICT_KIND, CheckResult, Verdict
from .io import read_json, write_bytes, write_text
from .results import AuditResult

FORMATS = {".html": "html", ".htm": "html", ".md": "markdown", ".markdown": "markdown"}
STATUS_MARK = {"pass": "✅ pass", "fail": "❌ fail", "error": "⚠️ error", "skip": "⏭️ skip"}
#: result commands with a section, in report order
SECTIONS = ("curvature", "attack", "grad-robustness", "discrepancy", "bound")


# --------------------------------------------------------------------------- document model


@dataclass(frozen=True)
class Run:
    """One result file, with the label its model gets in the tables."""

    label: str
    path: str
    result: AuditResult


@dataclass(frozen=True)
class Badge:
    """A check status cell: an emoji in Markdown, a coloured word in HTML (no emoji font needed)."""

    status: str


@dataclass
class Table:
    header: list[str]
    rows: list[list[str | Badge]]
    caption: str = ""
    row_classes: list[str] = field(default_factory=list)
    align: str = ""  # one of l/r per column; default: first column left, the others right


@dataclass
class Figure:
    name: str
    png: bytes
    alt: str
    caption: str = ""


@dataclass
class Section:
    title: str
    anchor: str
    blocks: list = field(default_factory=list)  # str paragraphs, list[str] bullets, Table, Figure
    status: str | None = None  # a gate verdict's status, shown before the title


# --------------------------------------------------------------------------- loading


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


# --------------------------------------------------------------------------- formatting


def pct(v, lo=None, hi=None) -> str:
    """An accuracy in %, with its interval in brackets when given."""
    if v is None or v != v:
        return "–"
    out = f"{100 * v:.2f}"
    if lo is not None and hi is not None:
        out += f" [{100 * lo:.1f}, {100 * hi:.1f}]"
    return out


def _mean_std(stats: dict | None) -> str:
    if not isinstance(stats, dict) or "mean" not in stats:
        return "–"
    return f"{num(stats['mean'])} ± {num(stats.get('std'))}"


def eps_label(norm: str, eps: float) -> str:
    sub = {"l2": "₂", "linf": "∞", "l1": "₁"}.get(norm, norm)
    return f"‖ε‖{sub} = {eps_text(eps, norm)}"


class Footnotes:
    """Notices and flags beside the numbers they qualify: ``mark(label, notes)`` returns the
    table cell ``label [1, 2]`` and :meth:`block` the numbered list printed under the tables."""

    def __init__(self):
        self.items: list[tuple[str, str]] = []

    def mark(self, label: str, notes) -> str:
        keys = []
        for text in dict.fromkeys(n for n in notes if n):
            item = (label, text)
            if item not in self.items:
                self.items.append(item)
            keys.append(str(self.items.index(item) + 1))
        return f"{label} [{', '.join(keys)}]" if keys else label

    def block(self) -> list:
        if not self.items:
            return []
        return ["Notices and flags (numbers in brackets beside a model refer to these):",
                [f"[{k}] {label}: {text}" for k, (label, text) in enumerate(self.items, 1)]]


def run_notes(result: AuditResult) -> list[str]:
    """Every notice and flag of a result that a reader of its numbers must see."""
    s = result.summary
    notes = [*s.get("notices", []), *s.get("flag_messages", [])]
    if result.command == "bound":
        notes += s.get("notes", [])[1:]  # the first note explains the bound (in the caption)
    if result.command == "discrepancy":
        for split in ("train", "test"):
            notes += [f"{split} split: {n}" for n in (s.get(split) or {}).get("notices", [])]
    if s.get("not_converged"):
        notes.append(f"{s['not_converged']} sample(s) did not converge within --max-iter (their Hessian norms are "
                     "lower bounds)")
    if not result.complete:
        notes.append("interrupted run: the numbers cover only the samples done")
    return notes


# --------------------------------------------------------------------------- figures


def _figure(name: str, alt: str, draw: Callable[[Path], object], caption: str = "") -> Figure:
    """Run one of the plotting functions into a temporary PNG and keep its bytes."""
    with tempfile.TemporaryDirectory(prefix="lcnn-audit-report-") as tmp:
        path = Path(tmp) / f"{name}.png"
        draw(path)
        return Figure(name=name, png=path.read_bytes(), alt=alt, caption=caption)


def _robust_comparison(runs: list[Run], path: Path) -> Path:
    """Worst-case robust accuracy against eps, one line per model and one panel per norm."""
    from matplotlib.figure import Figure as MplFigure

    from .io import write_with

    norms = list(dict.fromkeys(e["norm"] for r in runs for e in r.result.summary.get("results", [])))
    fig = MplFigure(figsize=(5 * len(norms), 3.8))
    axes = fig.subplots(1, len(norms), squeeze=False)[0]
    for ax, norm in zip(axes, norms, strict=True):
        for k, run in enumerate(runs):
            s = run.result.summary
            pts = sorted((e["eps"], e["robust_accuracy"], e["ci_low"], e["ci_high"]) for e in s.get("results", [])
                         if e["norm"] == norm and e["attack"] == "worst_case")
            if not pts:
                continue
            eps = [0.0] + [p[0] for p in pts]
            ax.plot(eps, [s.get("clean_accuracy")] + [p[1] for p in pts], marker="o", color=f"C{k}",
                    label=run.label)
            ax.fill_between(eps, [s.get("clean_ci_low")] + [p[2] for p in pts],
                            [s.get("clean_ci_high")] + [p[3] for p in pts], color=f"C{k}", alpha=0.12)
        ax.set_xlabel(f"eps ({norm})")
        ax.set_ylabel("robust accuracy (worst case)")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        ax.set_title(f"{norm}: models compared (band: 95% interval)", fontsize=10)
    fig.tight_layout()
    return write_with(path, lambda tmp: fig.savefig(str(tmp), format="png", dpi=120))


# --------------------------------------------------------------------------- sections


def build_report(runs: Sequence[Run], verdicts: Sequence[Verdict] = (), plots: bool = True) -> list[Section]:
    """Every section for ``runs`` and ``verdicts``, in a fixed order."""
    by_cmd: dict[str, list[Run]] = {}
    for r in runs:
        by_cmd.setdefault(r.result.command, []).append(r)
    sections = [verdict_section(v) for v in verdicts]
    if runs:
        sections.append(_inputs_section(runs))
    builders = {"curvature": _curvature_section, "attack": _attack_section, "grad-robustness": _grad_section,
                "discrepancy": _discrepancy_section, "bound": _bound_section}
    for cmd in SECTIONS:
        if cmd in by_cmd:
            sections.append(builders[cmd](by_cmd[cmd], plots))
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
    other = sorted({r.result.command for r in runs} - set(SECTIONS))
    if other:
        blocks.append(f"No section for the command(s) {', '.join(other)}; they are listed here only.")
    return Section("Inputs", "inputs", blocks)


def _curvature_section(runs: list[Run], plots: bool) -> Section:
    notes = Footnotes()
    marked = {r.label: notes.mark(r.label, run_notes(r.result)) for r in runs}
    t1 = Table(["model", "n", "E‖∇f‖₂", "E‖∇²f‖₂", "E C_f", "accuracy (%)", "method", "not converged"], [
        [marked[r.label], num(s.get("n")), _mean_std(s.get("grad_norm")), _mean_std(s.get("hessian_norm")),
         _mean_std(s.get("curvature")), pct(s.get("accuracy")), _method(s.get("method")), num(s.get("not_converged"))]
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
        from .plots import histogram_figure

        for fld, xlabel in (("curvature", "normalised curvature C_f"), ("hessian_norm", "‖∇²f‖₂"),
                            ("grad_norm", "‖∇f‖₂")):
            series = [(r.label, r.result.per_sample.get(fld, [])) for r in runs]
            if any(vals for _, vals in series):
                blocks.append(_figure(f"hist_{fld}", f"histogram of {xlabel}",
                                      lambda p, s=series, x=xlabel: histogram_figure(s, p, x),
                                      f"Histogram of {xlabel} per sample (log-spaced bins)."))
        blocks += _example_figures(runs, "curvature_examples", "the most curved samples",
                                   "{label}: the {k} most curved samples: input, input gradient ∇f and the top Hessian "
                                   "eigenvector u₁ (blue negative, red positive, scaled per image) with its eigenvalue "
                                   "λ₁ and C_f.")
    return Section("Curvature (Table 1)", "curvature", blocks)


def _example_figures(runs: list[Run], name: str, title: str, caption: str) -> list[Figure]:
    """One grid per run that stored ``summary["examples"]`` (``--examples``)."""
    from .examples import Examples
    from .plots import examples_figure

    out = []
    for k, r in enumerate(runs):
        d = r.result.summary.get("examples")
        if not d:
            continue
        ex = Examples.from_dict(d)
        out.append(_figure(f"{name}_{k}", f"{title} ({r.label})",
                           lambda p, e=ex, t=f"{r.label}: {title}": examples_figure(e, p, t),
                           caption.format(label=r.label, k=len(ex))))
    return out


def _method(m) -> str:
    return ", ".join(m) if isinstance(m, list) else num(m)


def _attack_section(runs: list[Run], plots: bool) -> Section:
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
        from .attacks.plot import plot_robustness

        drawable = [r for r in runs if r.result.summary.get("results")]
        if len(drawable) > 1:
            blocks.append(_figure("robust_compare", "worst-case robust accuracy against eps, all models",
                                  lambda p: _robust_comparison(drawable, p),
                                  "Worst-case robust accuracy against eps, models side by side."))
        for k, r in enumerate(drawable):
            blocks.append(_figure(f"robust_{k}", f"robust accuracy against eps for {r.label}",
                                  lambda p, res=r.result: plot_robustness(res, p),
                                  f"{r.label}: robust accuracy against eps per attack (eps 0: clean accuracy)."))
        blocks += _example_figures(runs, "attack_examples", "adversarial examples of the most curved broken samples",
                                   "{label}: of the samples the attack broke, the {k} most curved: input, ∇f, top "
                                   "Hessian eigenvector u₁, the adversarial example at the smallest eps that broke it "
                                   "and the perturbation δ.")
    return Section("Adversarial robustness (Table 2)", "attack", blocks)


def _grad_section(runs: list[Run], plots: bool) -> Section:
    from .geometry.robustness import model_summaries

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
        from .plots import grad_robustness_figure

        drawable = [(n, s) for n, s in models if s.get("curves")]
        blocks.append(_figure("grad_robustness", "gradient robustness curves",
                              lambda p: grad_robustness_figure(drawable, p),
                              "Gradient robustness (LCNN Fig. 2): measured mean with median-p95 band, quadratic "
                              "approximation dashed, bound rδ·exp(rδ) dotted."))
    return Section("Gradient robustness (Fig. 2)", "grad-robustness", blocks)


def _discrepancy_section(runs: list[Run], plots: bool) -> Section:
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


def _bound_section(runs: list[Run], plots: bool) -> Section:
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
    text = _plain(c.value)
    if c.interval:
        text += f" [{num(c.interval[0])}, {num(c.interval[1])}]"
    return text


def bound_text(c: CheckResult) -> str:
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


# --------------------------------------------------------------------------- renderers


CSS = """
body{font:15px/1.5 -apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;color:#1b1f24;margin:0;background:#f6f7f9}
main{max-width:1180px;margin:0 auto;padding:24px 32px 48px;background:#fff}
h1{font-size:26px;margin:8px 0 4px}h2{font-size:20px;margin:32px 0 8px;border-bottom:2px solid #e3e6ea;
padding-bottom:4px}
nav{font-size:14px;color:#555}nav a{margin-right:14px;color:#0b5cad;text-decoration:none}
table{border-collapse:collapse;margin:10px 0 4px;font-size:13.5px}
th,td{border:1px solid #d6dae0;padding:4px 9px;text-align:right;white-space:nowrap}
th{background:#eef1f5;font-weight:600}td.l,th.l{text-align:left}
tbody tr:nth-child(even){background:#fafbfc}
td{font-variant-numeric:tabular-nums}
caption{caption-side:bottom;text-align:left;font-size:12.5px;color:#59636e;padding-top:4px;white-space:normal}
.scroll{overflow-x:auto}
.badge{display:inline-block;padding:1px 7px;border-radius:4px;font-size:12px;font-weight:700;color:#fff;
letter-spacing:.03em;vertical-align:middle}
.badge.pass{background:#1a7f37}.badge.fail{background:#cf222e}.badge.error{background:#bf8700}
.badge.skip{background:#6e7781}h2 .badge{font-size:14px}
tr.fail{background:#fff1f0!important}tr.error{background:#fff8e5!important}
td.wrap{white-space:normal;text-align:left;min-width:220px;max-width:420px}
.figures{display:flex;flex-wrap:wrap;gap:12px 20px;align-items:flex-start;margin:16px 0}
figure{margin:0;flex:0 1 540px;min-width:0}figure img{max-width:100%;border:1px solid #e3e6ea}
figcaption{font-size:12.5px;color:#59636e}
ul{margin:6px 0 10px;padding-left:22px;font-size:13.5px}
footer{margin-top:36px;font-size:12px;color:#7a838c}
code{background:#f0f2f4;padding:1px 4px;border-radius:3px}
"""


def _inline(text: str) -> str:
    """Escape for HTML; **bold** and `code` as in the Markdown form."""
    out, parts = [], text.split("`")
    for i, part in enumerate(parts):
        esc = html.escape(part)
        if i % 2:
            out.append(f"<code>{esc}</code>")
        else:
            bits = esc.split("**")
            out.append("".join(f"<strong>{b}</strong>" if j % 2 else b for j, b in enumerate(bits)))
    return "".join(out)


def render_html(sections: Sequence[Section], title: str = "lcnn-audit report") -> str:
    """One self-contained HTML page: inline CSS, images as data URIs, no scripts or remote links."""
    body = [f"<h1>{html.escape(title)}</h1>",
            "<nav>" + "".join(f'<a href="#{_attr(s.anchor)}">{html.escape(s.title)}</a>' for s in sections)
            + "</nav>"]
    for s in sections:
        badge = _html_badge(s.status) + " " if s.status else ""
        body.append(f'<section id="{_attr(s.anchor)}"><h2>{badge}{html.escape(s.title)}</h2>')
        figures: list[str] = []
        for b in [*s.blocks, None]:
            if isinstance(b, Figure):
                data = base64.b64encode(b.png).decode("ascii")
                figures.append(f'<figure><img src="data:image/png;base64,{data}" alt="{_attr(b.alt)}">'
                               f"<figcaption>{_inline(b.caption)}</figcaption></figure>")
                continue
            if figures:  # consecutive figures share a wrapping row
                body.append('<div class="figures">' + "".join(figures) + "</div>")
                figures = []
            if isinstance(b, str):
                body.append(f"<p>{_inline(b)}</p>")
            elif isinstance(b, list):
                body.append("<ul>" + "".join(f"<li>{_inline(x)}</li>" for x in b) + "</ul>")
            elif isinstance(b, Table):
                body.append(_html_table(b))
        body.append("</section>")
    body.append(f"<footer>Generated by lcnn-audit {__version__}. Self-contained: viewable offline.</footer>")
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{html.escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n"
            + "\n".join(body) + "\n</main>\n</body>\n</html>\n")


def _attr(text: str) -> str:
    """An attribute value: every quote and angle bracket escaped (html.escape with quote=True)."""
    return html.escape(str(text), quote=True)


def _status(status: str) -> str:
    """Only the known check statuses reach the output (a verdict file is untrusted input)."""
    if status not in STATUS_MARK:
        raise UsageError(f"unknown check status {status!r}; one of {', '.join(STATUS_MARK)}")
    return status


def _html_badge(status: str) -> str:
    status = _status(status)
    return f'<span class="badge {_attr(status)}">{html.escape(status.upper())}</span>'


def _html_cell(c: str | Badge) -> str:
    return _html_badge(c.status) if isinstance(c, Badge) else _inline(c)


def _html_table(t: Table) -> str:
    align = t.align or "l" + "r" * (len(t.header) - 1)

    def cls(j: int, text: str = "") -> str:
        names = (["l"] if j < len(align) and align[j] == "l" else []) + (["wrap"] if len(text) > 60 else [])
        return f' class="{" ".join(names)}"' if names else ""

    head = "".join(f"<th{cls(j)}>{html.escape(h)}</th>" for j, h in enumerate(t.header))
    rows = []
    for i, row in enumerate(t.rows):
        rc = f' class="{_attr(_status(t.row_classes[i]))}"' if i < len(t.row_classes) else ""
        rows.append(f"<tr{rc}>" + "".join(f"<td{cls(j, str(c))}>{_html_cell(c)}</td>" for j, c in enumerate(row))
                    + "</tr>")
    cap = f"<caption>{_inline(t.caption)}</caption>" if t.caption else ""
    return f'<div class="scroll"><table>{cap}<thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>'


def render_markdown(sections: Sequence[Section], title: str | None = "lcnn-audit report",
                    image_dir: str | Path | None = None, image_prefix: str = "", level: int = 2) -> str:
    """GitHub-flavoured Markdown. Figures are written as PNG files into ``image_dir`` and linked
    as ``image_prefix + name.png``; without ``image_dir`` they are left out."""
    out = [f"# {md_text(title)}", ""] if title else []
    for s in sections:
        mark = STATUS_MARK[_status(s.status)].split()[0] + " " if s.status else ""
        out += [f"{'#' * level} {mark}{md_text(s.title)}", ""]
        for b in s.blocks:
            if isinstance(b, str):
                out += [md_text(b), ""]
            elif isinstance(b, list):
                out += [f"- {md_text(x)}" for x in b] + [""]
            elif isinstance(b, Table):
                out += _md_table(b) + [""]
            elif isinstance(b, Figure) and image_dir is not None:
                write_bytes(Path(image_dir) / f"{b.name}.png", b.png)
                out += [f"![{md_text(b.alt, code=False)}]({image_prefix}{b.name}.png)", "",
                        f"*{md_text(b.caption)}*" if b.caption else "", ""]
    out.append(f"<sub>Generated by lcnn-audit {__version__}.</sub>")
    return "\n".join(out) + "\n"


#: characters that Markdown (or the HTML it may contain) would interpret, with their escapes;
#: ``&`` first so that the entities added for < and > are not escaped again
_MD_ESCAPES = (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ("[", "\\["), ("]", "\\]"), ("|", "\\|"))


def _one_line(text: str) -> str:
    """Line breaks (and other control characters) become spaces: a value never starts a new line."""
    return "".join(" " if ch in "\r\n\t\f\v\x85\u2028\u2029" or (ord(ch) < 32 or 127 <= ord(ch) < 160)
                   else ch for ch in str(text))


def md_text(text: str, code: bool = True) -> str:
    """Markdown for a line of report text: no raw HTML (``<script>``, ``<img onerror>``), no links
    and no table-cell or line breaks from the data. The report's own ``**bold**`` keeps working,
    and its ```code``` spans become ``<code>`` elements whose content is escaped the same way (a
    Markdown code span cannot hold an escaped ``<``). ``code=False`` escapes backticks too."""
    parts = _one_line(text).split("`") if code else [_one_line(text).replace("`", "\\`")]
    if len(parts) % 2 == 0:  # an unpaired backtick: treat it as text
        parts[-2:] = [parts[-2] + "\\`" + parts[-1]]
    out = []
    for i, part in enumerate(parts):
        for ch, esc in _MD_ESCAPES:
            part = part.replace(ch, esc)
        out.append(f"<code>{part}</code>" if i % 2 else part)
    return "".join(out)


def _md_cell(c: str | Badge) -> str:
    return STATUS_MARK[_status(c.status)] if isinstance(c, Badge) else md_text(c)


def _md_table(t: Table) -> list[str]:
    align = t.align or "l" + "r" * (len(t.header) - 1)
    lines = ["| " + " | ".join(_md_cell(h) for h in t.header) + " |",
             "|" + "|".join(":---" if a == "l" else "---:" for a in align) + "|"]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in t.rows]
    if t.caption:
        lines += ["", f"*{md_text(t.caption)}*"]
    return lines


def check_report_path(out: str | Path) -> str:
    """``html`` or ``markdown`` for ``out``'s extension; a one-line error for any other."""
    fmt = FORMATS.get(Path(out).suffix.lower())
    if fmt is None:
        raise UsageError(f"-o {out}: unknown report type {Path(out).suffix!r}; use .html or .md")
    return fmt


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


def write_report(runs: Sequence[Run | AuditResult | Verdict | str | Path], out: str | Path,
                 verdicts: Sequence[Verdict] = (), title: str | None = None, plots: bool = True, *,
                 labels: Sequence[str] | None = None) -> Path:
    """Write ``out`` as HTML (``.html``) or Markdown (``.md``; figures go to ``<stem>_files/``).

    ``runs`` may mix :class:`Run` (from :func:`load_inputs`), the
    :class:`~lcnn_audit.results.AuditResult` objects the audits return, gate verdicts and
    result JSON paths; ``labels`` name the models (see :func:`as_runs`)."""
    runs, more = as_runs(list(runs), labels)
    verdicts = [*verdicts, *more]
    out = Path(out)
    fmt = check_report_path(out)
    if not runs and not verdicts:
        raise UsageError("nothing to report: give result files (--json of any command) or gate verdicts")
    sections = _build_checked(runs, verdicts, plots)
    title = title or "lcnn-audit report"
    if fmt == "html":
        return write_text(out, render_html(sections, title))
    img_dir = out.with_name(f"{out.stem}_files")
    return write_text(out, render_markdown(sections, title, image_dir=img_dir, image_prefix=f"{img_dir.name}/"))


#: what a result file of the right top-level shape but a wrong inner structure raises while its
#: tables are built (a value of the wrong type, a missing key, a list that is too short)
_STRUCTURE_ERRORS = (KeyError, TypeError, ValueError, AttributeError, IndexError)


def _build_checked(runs: Sequence[Run], verdicts: Sequence[Verdict], plots: bool) -> list[Section]:
    """:func:`build_report`, with a one-line error naming the file whose structure is wrong."""
    try:
        return build_report(runs, verdicts, plots=plots)
    except _STRUCTURE_ERRORS as err:
        culprit = next((r.path for r in runs if not _builds(r)), None)
        where = f"{culprit}: " if culprit else ""
        raise UsageError(f"{where}the result file has an unexpected structure ({type(err).__name__}: "
                         f"{str(err)[:80]}); pass result files written by lcnn-audit --json") from None


def _builds(run: Run) -> bool:
    try:
        build_report([run], plots=False)
    except _STRUCTURE_ERRORS:
        return False
    return True


# --------------------------------------------------------------------------- verdict outputs


def verdict_markdown(verdict: Verdict) -> str:
    """A Markdown summary of the verdict, suitable for ``$GITHUB_STEP_SUMMARY``."""
    return render_markdown([verdict_section(verdict)], title=None, level=2)


def xml_text(text) -> str:
    """``text`` with every character XML 1.0 forbids (control characters other than tab, line
    feed and carriage return, lone surrogates, U+FFFE/U+FFFF) written visibly as ``\\xNN`` /
    ``\\uNNNN``; ElementTree escapes the rest (``<``, ``&``, quotes)."""
    out = []
    for ch in str(text):
        o = ord(ch)
        if o in (0x9, 0xA, 0xD) or 0x20 <= o <= 0xD7FF or 0xE000 <= o <= 0xFFFD or 0x10000 <= o <= 0x10FFFF:
            out.append(ch)
        else:
            out.append(f"\\x{o:02x}" if o < 0x100 else f"\\u{o:04x}")
    return "".join(out)


def verdict_junit(verdict: Verdict) -> str:
    """JUnit XML: one ``<testcase>`` per check; a failed check is a ``<failure>``, a check that
    could not be evaluated an ``<error>``. Every attribute and text passes :func:`xml_text`."""
    verdict = _xml_safe_verdict(verdict)
    suites = ET.Element("testsuites", name="lcnn-audit gate", tests=str(len(verdict.checks)),
                        failures=str(verdict.count("fail")), errors=str(verdict.count("error")),
                        time=f"{verdict.seconds:.3f}")
    suite = ET.SubElement(suites, "testsuite", name=verdict.name, tests=str(len(verdict.checks)),
                          failures=str(verdict.count("fail")), errors=str(verdict.count("error")),
                          skipped=str(verdict.count("skip")),
                          time=f"{verdict.seconds:.3f}")
    props = ET.SubElement(suite, "properties")
    for k, v in (("policy", verdict.policy), ("lcnn_audit_version", verdict.lcnn_audit_version),
                 *((f"source.{a}", s) for a, s in verdict.sources.items())):
        ET.SubElement(props, "property", name=k, value=str(v))
    for c in verdict.checks:
        case = ET.SubElement(suite, "testcase", classname=f"lcnn_audit.gate.{c.audit}", name=c.name, time="0")
        detail = (f"metric: {c.metric}\nvalue: {value_text(c)}\nbound: {bound_text(c)}\n"
                  f"policy: {verdict.policy} {c.path}")
        if c.status == "fail":
            ET.SubElement(case, "failure", message=c.message, type="ThresholdFailed").text = detail
        elif c.status == "error":
            ET.SubElement(case, "error", message=c.message, type="PolicyError").text = detail
        elif c.status == "skip":
            ET.SubElement(case, "skipped", message=c.message)
        ET.SubElement(case, "system-out").text = f"{c.message}\n{detail}"
    ET.indent(suites)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"


def _xml_safe_verdict(verdict: Verdict) -> Verdict:
    """The verdict with every string that reaches the XML passed through :func:`xml_text`."""
    import dataclasses

    def fix(v):
        return xml_text(v) if isinstance(v, str) else v

    checks = tuple(dataclasses.replace(c, **{f.name: fix(getattr(c, f.name)) for f in dataclasses.fields(c)
                                            if f.name not in ("status", "op", "interval")})
                   for c in verdict.checks)
    return dataclasses.replace(verdict, policy=fix(verdict.policy), name=fix(verdict.name), checks=checks,
                               sources={fix(k): fix(v) for k, v in verdict.sources.items()},
                               notices=tuple(fix(n) for n in verdict.notices),
                               lcnn_audit_version=fix(verdict.lcnn_audit_version))


__all__ = ["Figure", "Footnotes", "Run", "Section", "Table", "as_runs", "bound_text", "build_report", "load_inputs",
           "render_html", "render_markdown", "value_text", "verdict_junit", "verdict_markdown", "verdict_section",
           "write_report"]
