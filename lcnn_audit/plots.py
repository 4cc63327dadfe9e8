"""Matplotlib figures (Agg backend, written atomically as PNG). They draw, never compute."""

from __future__ import annotations

from pathlib import Path

from .io import write_with


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path) -> Path:
    plt = _pyplot()
    out = write_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight"))
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
