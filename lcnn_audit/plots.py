"""Matplotlib figures (Agg backend, written atomically in the format the file name's
extension names: .png, .pdf, .svg, .jpg). They draw, never compute."""

from __future__ import annotations

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


def grad_robustness_figure(models: list[tuple[str, dict]], path, title: str | None = None) -> Path:
    """Relative gradient change against ‖ε‖ on log-log axes, one colour per model; the
    quadratic approximation r·E[C_f] dashed and the bound r·δ·exp(rδ) dotted (LCNN Fig. 2)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.2))
    for k, (name, summary) in enumerate(models):
        curves = summary["curves"]
        r = [c["radius"] for c in curves]
        color = f"C{k}"
        ax.plot(r, [c["mean"] for c in curves], "o-", color=color, label=f"{name}: measured (mean)")
        ax.fill_between(r, [c["median"] for c in curves], [c["p95"] for c in curves], color=color, alpha=0.15)
        if "adv_mean" in curves[0]:
            ax.plot(r, [c["adv_mean"] for c in curves], "^-", color=color, alpha=0.7, label=f"{name}: adversarial")
        ax.plot(r, [c["quadratic"] for c in curves], "--", color=color, label=f"{name}: r·E[C_f] (Prop. 1)")
        ax.plot(r, [c["bound"] for c in curves], ":", color=color, label=f"{name}: rδ·exp(rδ) bound")
    lo = min(c["mean"] for _, s in models for c in s["curves"] if c["mean"] > 0) / 3
    hi = max(max(c["p95"], c["quadratic"]) for _, s in models for c in s["curves"]) * 3
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_ylim(max(lo, 1e-12), hi)
    ax.set_xlabel("noise norm ‖ε‖₂")
    ax.set_ylabel("‖∇f(x+ε) − ∇f(x)‖ / ‖∇f(x)‖")
    ax.set_title(title or "gradient robustness (band: median to p95)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path)


def histogram_figure(series: list[tuple[str, list[float]]], path, xlabel: str, log: bool = True) -> Path:
    """Overlaid histograms of a per-sample measure (e.g. curvature), log-spaced bins if ``log``."""
    import numpy as np

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    vals = [np.asarray([v for v in vs if v == v and (v > 0 or not log)], dtype=float) for _, vs in series]
    allv = np.concatenate([v for v in vals if v.size]) if any(v.size for v in vals) else np.array([1.0])
    bins = (np.logspace(np.log10(allv.min()), np.log10(allv.max()), 40) if log and allv.min() > 0
            else np.linspace(allv.min(), allv.max(), 40))
    for (name, _), v in zip(series, vals, strict=True):
        ax.hist(v, bins=bins, alpha=0.5, label=name)
    if log:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("samples")
    ax.legend(fontsize=8)
    ax.grid(True, alpha=0.3)
    return _save(fig, path)
