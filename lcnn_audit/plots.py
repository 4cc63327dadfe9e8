"""Matplotlib figures (Agg backend, written atomically in the format the file name's
extension names: .png, .pdf, .svg, .jpg). They draw, never compute."""

from __future__ import annotations

import math
from pathlib import Path

from .errors import UsageError
from .io import write_with

#: extension -> matplotlib savefig format
IMAGE_FORMATS = {".png": "png", ".pdf": "pdf", ".svg": "svg", ".jpg": "jpeg", ".jpeg": "jpeg"}


def check_image_path(path, option: str = "--plot") -> str:
    """The savefig format for ``path``'s extension; a one-line error for any other extension."""
    fmt = IMAGE_FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise UsageError(f"{option} {path}: unknown image type {Path(path).suffix!r}; use one of "
                         + ", ".join(IMAGE_FORMATS))
    return fmt


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path) -> Path:
    plt = _pyplot()
    fmt = check_image_path(path)
    out = write_with(path, lambda tmp: fig.savefig(tmp, format=fmt, dpi=120, bbox_inches="tight"))
    plt.close(fig)
    return out


#: line style of each quantity in the gradient-robustness figure (one legend for styles, one for models)
STYLES = {"measured": ("-", "o", "measured mean (band: median–p95)"), "adversarial": ("-", "^", "adversarial mean"),
          "quadratic": ("--", None, "r·E[C_f] (Prop. 1, quadratic)"), "bound": (":", None, "rδ·exp(rδ) bound")}


def _theory_limits(measured: list[float], theory: list[float], span: float = 1e3) -> tuple[float, float]:
    """Log y-limits that show every measured value, and the theory lines unless they lie more
    than ``span`` beyond the measured range (those are marked off-scale instead)."""
    pos = [v for v in measured if v > 0 and not math.isnan(v)]
    lo, hi = (min(pos) / 3, max(pos) * 3) if pos else (1e-6, 1.0)
    for v in theory:
        if v > 0 and not math.isnan(v) and lo / span <= v <= hi * span:
            lo, hi = min(lo, v / 2), max(hi, v * 2)
    return max(lo, 1e-300), hi


def grad_robustness_figure(models: list[tuple[str, dict]], path, title: str | None = None) -> Path:
    """Relative gradient change against ‖ε‖ on log-log axes (LCNN Fig. 2): one colour per model,
    one line style per quantity (measured mean with its median–p95 band, adversarial mean, the
    quadratic approximation r·E[C_f] and the bound r·δ·exp(rδ)). The legends sit outside the
    axes; a theory line entirely outside the y-range is drawn as arrows on the edge it lies
    beyond and listed as off-scale, so the legend never names a line that cannot be seen."""
    from matplotlib.lines import Line2D

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.8, 4.4))
    measured = [v for _, s in models for c in s["curves"] for v in (c["mean"], c["median"], c["p95"],
                                                                   c.get("adv_mean", c["mean"]))]
    theory = [c[k] for _, s in models for c in s["curves"] for k in ("quadratic", "bound")]
    lo, hi = _theory_limits(measured, theory)
    off: list[str] = []
    styles_used = {"measured"}
    for k, (name, summary) in enumerate(models):
        curves = summary["curves"]
        r = [c["radius"] for c in curves]
        color = f"C{k % 10}"
        ax.plot(r, [c["mean"] for c in curves], linestyle="-", marker="o", color=color, ms=4)
        ax.fill_between(r, [c["median"] for c in curves], [c["p95"] for c in curves], color=color, alpha=0.13,
                        lw=0)
        if "adv_mean" in curves[0]:
            ax.plot(r, [c["adv_mean"] for c in curves], linestyle="-", marker="^", color=color, alpha=0.7, ms=4)
            styles_used.add("adversarial")
        for key in ("quadratic", "bound"):
            vals = [c[key] for c in curves]
            finite = [v for v in vals if not math.isnan(v) and v > 0]
            if finite and min(finite) > hi:
                side = "above"
            elif finite and max(finite) < lo:
                side = "below"
            else:
                ax.plot(r, vals, linestyle=STYLES[key][0], color=color, lw=1.2)
                styles_used.add(key)
                continue
            y_edge = hi / 1.25 if side == "above" else lo * 1.25
            ax.plot(r, [y_edge] * len(r), linestyle="none", marker="^" if side == "above" else "v", color=color,
                    ms=6, alpha=0.8, clip_on=False)
            off.append(f"{name}: {STYLES[key][2].split(' (')[0]} off scale ({side}, from {min(finite):.2g})")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_ylim(lo, hi)
    ax.set_xlabel("noise norm ‖ε‖₂")
    ax.set_ylabel("‖∇f(x+ε) − ∇f(x)‖ / ‖∇f(x)‖")
    ax.set_title(title or "gradient robustness (LCNN Fig. 2)", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    model_handles = [Line2D([], [], color=f"C{k % 10}", lw=2.5, label=name) for k, (name, _) in enumerate(models)]
    leg = ax.legend(handles=model_handles, title="model", fontsize=8, title_fontsize=8, loc="upper left",
                    bbox_to_anchor=(1.02, 1.0), frameon=False)
    ax.add_artist(leg)
    style_handles = [Line2D([], [], color="0.25", linestyle=STYLES[k][0], marker=STYLES[k][1], label=STYLES[k][2])
                     for k in STYLES if k in styles_used]
    if off:
        style_handles.append(Line2D([], [], color="0.25", linestyle="none", marker="^", label="off-scale theory line"))
    ax.legend(handles=style_handles, title="line", fontsize=8, title_fontsize=8, loc="lower left",
              bbox_to_anchor=(1.02, 0.0), frameon=False)
    if off:
        fig.text(0.01, -0.02, "\n".join(off), fontsize=7, va="top", color="0.3")
    return _save(fig, path)


def _log_ticks(ax, values) -> None:
    """Readable log-axis ticks when the data span less than two decades (matplotlib then labels
    minor ticks in long scientific form, and the labels overlap): majors at 1..9 × 10^k (under
    one decade) or 1, 2, 5 × 10^k, in the compact number format, no minor labels."""
    import math

    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    from .formatting import num

    pos = [v for v in values if v > 0]
    if not pos or math.log10(max(pos) / min(pos)) >= 2:
        return
    decades = math.log10(max(pos) / min(pos))
    subs = tuple(float(k) for k in range(1, 10)) if decades < 1 else (1.0, 2.0, 5.0)
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=subs))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: num(float(v))))
    ax.xaxis.set_minor_formatter(NullFormatter())


def histogram_figure(series: list[tuple[str, list[float]]], path, xlabel: str, log: bool = True) -> Path:
    """Overlaid histograms of a per-sample measure (e.g. curvature), log-spaced bins if ``log``."""
    import numpy as np

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    vals = [np.asarray([v for v in vs if not math.isnan(v) and (v > 0 or not log)], dtype=float) for _, vs in series]
    allv = np.concatenate([v for v in vals if v.size]) if any(v.size for v in vals) else np.array([1.0])
    bins = (np.logspace(np.log10(allv.min()), np.log10(allv.max()), 40) if log and allv.min() > 0
            else np.linspace(allv.min(), allv.max(), 40))
    for (name, _), v in zip(series, vals, strict=True):
        ax.hist(v, bins=bins, alpha=0.5, label=name)
    if log:
        ax.set_xscale("log")
        _log_ticks(ax, allv.tolist())
    ax.set_xlabel(xlabel)
    ax.set_ylabel("samples")
    ax.legend(fontsize=8)
    ax.grid(True, alpha=0.3)
    return _save(fig, path)


_NORM_SUB = {"l2": "₂", "linf": "∞", "l1": "₁"}


def _signed(t):
    """A signed map (C, H, W) -> (H, W): the channel mean, for a diverging colour map."""
    return t.float().mean(0).numpy()


def examples_figure(ex, path, title: str | None = None) -> Path:
    """A grid of :class:`~lcnn_audit.examples.Examples`: one row per sample; columns input,
    input gradient ∇f, top Hessian eigenvector u₁ (with λ₁ and C_f) and, for attacks, the
    adversarial example and the perturbation. Signed maps use a diverging colour map centred
    on 0, scaled per image (channel mean for colour images)."""
    from .formatting import num

    plt = _pyplot()
    cols = [("x", "input"), ("gradient", "input gradient ∇f"), ("top_vector", "top Hessian eigenvector u₁")]
    if "x_adv" in ex.images:
        cols += [("x_adv", "adversarial example"), ("perturbation", "perturbation δ")]
    k = len(ex)
    fig, axes = plt.subplots(k, len(cols), figsize=(1.9 * len(cols), 1.95 * k + 0.5), squeeze=False)
    adv = ex.adversarial or {}
    for i in range(k):
        for j, (key, head) in enumerate(cols):
            ax = axes[i][j]
            t = ex.images[key][i]
            if key in ("x", "x_adv"):
                img = t.clamp(0, 1).permute(1, 2, 0).numpy()
                ax.imshow(img[..., 0] if img.shape[2] == 1 else img, cmap="gray", vmin=0, vmax=1)
            else:
                m = _signed(t)
                lim = float(abs(m).max()) or 1.0
                ax.imshow(m, cmap="RdBu_r", vmin=-lim, vmax=lim)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(head, fontsize=8, fontweight="bold", pad=14)
            sub = {"x": f"#{ex.index[i]}: label {ex.label[i]}, pred {ex.pred[i]}",
                   "gradient": f"‖∇f‖ = {num(ex.grad_norm[i])}",
                   "top_vector": f"λ₁ = {num(ex.eigenvalue[i])}, C = {num(ex.curvature[i])}"}
            if adv:
                found = adv.get("found", [True] * k)[i]
                sub["x_adv"] = f"pred {adv['adv_pred'][i]}" + ("" if found else " (not reproduced)")
                eps = adv["eps"][i] if isinstance(adv["eps"], list) else adv["eps"]
                sub["perturbation"] = (f"‖δ‖{_NORM_SUB.get(adv.get('norm'), '')} = {num(adv['distance'][i])} "
                                       f"(ε {num(eps)})")
            ax.text(0.5, 1.02, sub[key], transform=ax.transAxes, ha="center", va="bottom", fontsize=6.5)
    fig.suptitle(title or f"the {k} most curved samples", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


# --------------------------------------------------------------------------- robust accuracy against eps


def _robust_curve(summary: dict, norm: str, attack: str) -> tuple[list, list, list, list] | None:
    """(eps, accuracy, interval low, interval high) of one attack (or ``worst_case``) under one
    norm, sorted by eps, with eps 0 the clean accuracy; None if the result has no such entries."""
    pts = sorted((e["eps"], e["robust_accuracy"], e["ci_low"], e["ci_high"]) for e in summary.get("results", [])
                 if e["norm"] == norm and e["attack"] == attack)
    if not pts:
        return None
    clean = summary.get("clean_accuracy")
    return ([0.0] + [p[0] for p in pts], [clean] + [p[1] for p in pts],
            [summary.get("clean_ci_low", clean)] + [p[2] for p in pts],
            [summary.get("clean_ci_high", clean)] + [p[3] for p in pts])


def _robust_panels(norms: list[str], lines, path, ylabel: str, *, title, suptitle: str | None = None) -> Path:
    """One panel per norm; ``lines(norm)`` yields (label, curve, line style) and each curve is
    drawn with its 95 % interval as a band of the line's colour. No pyplot (no global figure
    state, no GUI backend); written atomically in the format of ``path``'s extension."""
    from matplotlib.figure import Figure

    fmt = check_image_path(path)
    fig = Figure(figsize=(5 * len(norms), 3.8))
    axes = fig.subplots(1, len(norms), squeeze=False)[0]
    for ax, norm in zip(axes, norms, strict=True):
        for label, (eps, acc, lo, hi), style in lines(norm):
            line, = ax.plot(eps, acc, marker="o", label=label, **style)
            ax.fill_between(eps, lo, hi, alpha=0.12, color=line.get_color())
        ax.set_xlabel(f"eps ({norm})")
        ax.set_ylabel(ylabel)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        ax.set_title(title(norm), fontsize=10)
    if suptitle:
        fig.suptitle(suptitle, color="darkred", fontsize=10)
    fig.tight_layout()
    return write_with(path, lambda tmp: fig.savefig(str(tmp), format=fmt, dpi=120))


def _norms(summaries) -> list[str]:
    return list(dict.fromkeys(e["norm"] for s in summaries for e in s.get("results", [])))


def robustness_figure(summary: dict, path) -> Path:
    """Each attack's (and the worst case's, bold black) robust accuracy against eps for one
    attack result, one panel per norm (as in CURE's Fig. 6); eps = 0 is the clean accuracy and
    the bands are the Clopper-Pearson 95 % intervals. A gradient-masking flag is the title."""
    norms = _norms([summary])
    if not norms:
        raise UsageError("the result holds no robust accuracies to plot")

    def lines(norm):
        for attack in dict.fromkeys(e["attack"] for e in summary["results"] if e["norm"] == norm):
            worst = attack == "worst_case"
            yield (attack.replace("_", " "), _robust_curve(summary, norm, attack),
                   {"lw": 2.2 if worst else 1.4, "ls": "-" if worst else "--", "color": "black" if worst else None})

    masking = summary.get("flags", {}).get("gradient_masking")
    return _robust_panels(norms, lines, path, "robust accuracy",
                          title=lambda norm: f"{norm}: robust accuracy vs eps (n = {summary.get('n')})",
                          suptitle="warning: possible gradient masking (see flags)" if masking else None)


def robust_comparison_figure(models: list[tuple[str, dict]], path) -> Path:
    """Worst-case robust accuracy against eps of several attack results (``(label, summary)``),
    one line per model and one panel per norm, with 95 % interval bands."""
    norms = _norms([s for _, s in models])
    if not norms:
        raise UsageError("the results hold no robust accuracies to plot")

    def lines(norm):
        for k, (label, s) in enumerate(models):
            curve = _robust_curve(s, norm, "worst_case")
            if curve is not None:
                yield label, curve, {"color": f"C{k}"}

    return _robust_panels(norms, lines, path, "robust accuracy (worst case)",
                          title=lambda norm: f"{norm}: models compared (band: 95% interval)")
