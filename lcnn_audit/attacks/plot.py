"""Robust accuracy against eps, one panel per norm (as in CURE's Fig. 6), with 95 % intervals."""

from __future__ import annotations

from pathlib import Path

from ..errors import UsageError
from ..io import write_with
from ..results import AuditResult

FORMATS = ("png", "pdf", "svg", "jpg", "jpeg")


def check_plot_path(path: str | Path) -> Path:
    from ..plots import check_image_path

    check_image_path(path, "--plot")
    return Path(path)


def plot_robustness(result: AuditResult, path: str | Path) -> Path:
    """Draw each attack's (and the worst case's) robust accuracy against eps; eps = 0 is the
    clean accuracy. Shaded bands are the Clopper-Pearson 95 % intervals. Written atomically."""
    from matplotlib.figure import Figure  # no pyplot: no global figure state, no GUI backend

    path = check_plot_path(path)
    s = result.summary
    norms = list(dict.fromkeys(e["norm"] for e in s.get("results", [])))
    if not norms:
        raise UsageError("the result holds no robust accuracies to plot")
    fig = Figure(figsize=(5 * len(norms), 3.8))
    axes = fig.subplots(1, len(norms), squeeze=False)
    clean = s.get("clean_accuracy")
    for ax, norm in zip(axes[0], norms, strict=True):
        entries = [e for e in s["results"] if e["norm"] == norm]
        for attack in dict.fromkeys(e["attack"] for e in entries):
            pts = sorted((e["eps"], e["robust_accuracy"], e["ci_low"], e["ci_high"])
                         for e in entries if e["attack"] == attack)
            eps = [0.0] + [p[0] for p in pts]
            acc = [clean] + [p[1] for p in pts]
            lo = [s.get("clean_ci_low", clean)] + [p[2] for p in pts]
            hi = [s.get("clean_ci_high", clean)] + [p[3] for p in pts]
            worst = attack == "worst_case"
            line, = ax.plot(eps, acc, marker="o", lw=2.2 if worst else 1.4, ls="-" if worst else "--",
                            color="black" if worst else None, label=attack.replace("_", " "))
            ax.fill_between(eps, lo, hi, alpha=0.12, color=line.get_color())
        ax.set_xlabel(f"eps ({norm})")
        ax.set_ylabel("robust accuracy")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        ax.set_title(f"{norm}: robust accuracy vs eps (n = {s.get('n')})", fontsize=10)
    if s.get("flags", {}).get("gradient_masking"):
        fig.suptitle("warning: possible gradient masking (see flags)", color="darkred", fontsize=10)
    fig.tight_layout()
    from ..plots import check_image_path

    fmt = check_image_path(path, "--plot")
    write_with(path, lambda tmp: fig.savefig(str(tmp), format=fmt, dpi=120))
    return path
