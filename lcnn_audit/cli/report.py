"""``lcnn-audit report``: result files side by side as a self-contained HTML page or Markdown."""

from pathlib import Path

from . import app
from . import options as o
from .common import Ctx, OutputArgs, command, console


@app.command()
def report(
    inputs: o.ReportInputs,
    output: o.ReportOutput,
    label: o.ReportLabel = None,
    title: o.ReportTitle = "lcnn-audit report",
    plots: o.Plots = True,
    quiet: o.Quiet = False,
    verbose: o.Verbose = False,
    threads: o.Threads = None,
) -> None:
    """Tables in the style of LCNN Tables 1-3 (one row per model), curvature histograms,
    gradient-robustness curves and robust accuracy against eps."""
    with command(Ctx(OutputArgs(quiet=quiet, verbose=verbose), threads=threads), locals(), check_outputs=False):
        _report(inputs, output, label, title, plots)


def _report(inputs: list[Path], output: Path, label: list[str] | None, title: str, plots: bool) -> None:
    from ..io import check_outputs
    from ..report import check_report_path, load_inputs, write_report

    check_report_path(output)
    check_outputs({"-o": output}, {"RUN.json": inputs})
    runs, verdicts = load_inputs(inputs, label)
    path = write_report(runs, output, verdicts, title=title, plots=plots)
    console.print(f"wrote {path}")  # the result path: printed also with --quiet
