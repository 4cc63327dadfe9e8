"""The Fig. 2 plot shared by the experiments (LCNN paper, Fig. 2 and Proposition 1)."""

from __future__ import annotations

from pathlib import Path

from lcnn_audit.io import write_with


def fig2_plot(curves: list[tuple[str, list, list, list, str]], title: str, path: Path, dpi: int = 120) -> Path:
    """One line pair per model: the measured mean relative gradient change (solid, ``marker``)
    and Proposition 1's quadratic approximation r·E[C_f] (dashed), log-log, legend outside.
    ``curves`` holds ``(label, radii, mean, quadratic, marker)``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for k, (label, radii, mean, quadratic, marker) in enumerate(curves):
        ax.plot(radii, mean, f"{marker}-", color=f"C{k}", label=label)
        ax.plot(radii, quadratic, "--", color=f"C{k}", lw=1, alpha=0.7)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("noise norm ‖ε‖₂")
    ax.set_ylabel("‖∇f(x+ε) − ∇f(x)‖ / ‖∇f(x)‖")
    ax.set_title(title, fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    out = write_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight"))
    plt.close(fig)
    return out
