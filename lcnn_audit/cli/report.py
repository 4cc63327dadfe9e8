"""``lcnn-audit report``: result files side by side as a self-contained HTML page or Markdown."""

from pathlib import Path
from typing import Annotated

import typer

from . import app
from .common import THREADS, VERBOSE_HELP, console, handle_errors, set_threads


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
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help=VERBOSE_HELP)] = False,
    threads: THREADS = None,
) -> None:
    """Tables in the style of LCNN Tables 1-3 (one row per model), curvature histograms,
    gradient-robustness curves and robust accuracy against eps."""
    set_threads(threads)
    from ..io import check_outputs
    from ..report import check_report_path, load_inputs, write_report

    check_report_path(output)
    check_outputs({"-o": output}, {"RUN.json": inputs})
    runs, verdicts = load_inputs(inputs, label)
    path = write_report(runs, output, verdicts, title=title, plots=plots)
    if not quiet:
        console.print(f"wrote {path}")
