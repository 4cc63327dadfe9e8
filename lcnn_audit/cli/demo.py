"""``lcnn-audit demo``: the main audits on the bundled model and Fashion-MNIST sample."""

from pathlib import Path
from typing import Annotated

import typer

from . import app
from .attack import render_attack
from .common import THREADS, VERBOSE_HELP, Ctx, console, handle_errors, set_threads, styled
from .curvature import render_curvature
from .robustness import render_discrepancy, render_grad_robustness

#: how each step of :data:`lcnn_audit.demo.DEMO_STEPS` is shown (the library computes, the CLI renders)
RENDERERS = {"curvature": render_curvature, "grad_robustness": render_grad_robustness,
             "discrepancy": render_discrepancy, "attack": render_attack}


@app.command()
@handle_errors
def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory for the results.")] = Path("lcnn-audit-demo"),
    n: Annotated[int, typer.Option(help="Samples of the bundled test sample to audit.")] = 256,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the result paths.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help=VERBOSE_HELP)] = False,
    threads: THREADS = None,
) -> None:
    """Run the audits on the bundled demo CNN and Fashion-MNIST sample (no downloads)."""
    from ..demo import DEMO_STEPS, run_demo
    from ..io import check_outputs

    check_outputs({}, dirs={"--out": out})
    set_threads(threads)
    ctx = Ctx({"quiet": quiet})
    for step in DEMO_STEPS:
        with ctx.progress(step.title) as bar:
            result, path = run_demo(step, out, n=n, progress=bar)
        RENDERERS[step.name](ctx, result)
        console.print(styled("[bold]{}[/]: wrote {}", step.title, path), markup=True)
    console.print(f"demo results are in {out.resolve()}")
