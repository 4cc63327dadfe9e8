"""Robust accuracy against eps, one panel per norm (as in CURE's Fig. 6), with 95 % intervals
(drawn by :func:`lcnn_audit.plots.robustness_figure`, which the report shares)."""

from __future__ import annotations

from pathlib import Path

from ..plots import check_image_path, robustness_figure
from ..results import AuditResult

FORMATS = ("png", "pdf", "svg", "jpg", "jpeg")


def check_plot_path(path: str | Path) -> Path:
    """``path`` if its extension names an image format (``--plot``), else a one-line error."""
    check_image_path(path, "--plot")
    return Path(path)


def plot_robustness(result: AuditResult, path: str | Path) -> Path:
    """Draw each attack's (and the worst case's) robust accuracy against eps; eps = 0 is the
    clean accuracy. Shaded bands are the Clopper-Pearson 95 % intervals. Written atomically."""
    path = check_plot_path(path)
    robustness_figure(result.summary, path)
    return path
