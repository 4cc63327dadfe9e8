"""``lcnn-audit report``: result files side by side as a self-contained HTML page or Markdown."""

from pathlib import Path
from typing import Annotated

import typer

from . import app
from .common import THREADS, console, handle_errors, set_threads


@app.command()
@handle_errors
def report(
    inputs: Annotated[list[Path], typer.Argument(
        help="Result files (--json of curvature, attack, grad-robustness, discrepancy, bound) and gate verdicts "
             "(gate --json). Several runs of one command are compared side by side.", metavar="RUN.json",
        show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="report.html (self-contained, images embedded) or "
                                                                "report.md (images in report_files/).",
                                         show_default=False)],
    label: Annotated[list[str] | None, typer.Option(
        "--label", help="Name of each result file's model in the tables, in order (default: the checkpoint name).",
        show_default=False)] = None,
    title: Annotated[str, typer.Option(help="Report title.")] = "lcnn-audit report",
    plots: Annotated[bool, typer.Option("--plots/--no-plots", help="Draw the figures.")] = True,
    threads: THREADS = None,
) -> None:
    """Tables in the style of LCNN Tables 1-3 (one row per model), curvature histograms,
    gradient-robustness curves and robust accuracy against eps."""
    set_threads(threads)
    from ..report import load_inputs, write_report

    runs, verdicts = load_inputs(inputs, label)
    console.print(f"wrote {write_report(runs, output, verdicts, title=title, plots=plots)}")
