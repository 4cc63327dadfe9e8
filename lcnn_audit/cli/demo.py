"""``lcnn-audit demo``: the main audits on the bundled model and Fashion-MNIST sample."""

from pathlib import Path
from typing import Annotated

import typer

from ..audits.registry import AUDITS, resolve
from . import app
from .common import THREADS, VERBOSE_HELP, Ctx, console, handle_errors, set_threads, styled


def renderers() -> dict:
    """How each demo step is shown: the registry's CLI renderer of each audit with demo
    settings (the library computes, the CLI renders). A step without one prints its path only."""
    return {name: resolve(spec.renderer) if spec.renderer is not None else None
            for name, spec in AUDITS.items() if spec.demo is not None}


def __getattr__(name: str):
    if name == "RENDERERS":  # audit name -> renderer, for every demo step (see renderers)
        return renderers()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
    from ..demo import demo_steps, run_demo
    from ..io import check_outputs

    check_outputs({}, dirs={"--out": out})
    set_threads(threads)
    ctx = Ctx({"quiet": quiet})
    render = renderers()
    for step in demo_steps():
        with ctx.progress(step.title) as bar:
            result, path = run_demo(step, out, n=n, progress=bar)
        if render.get(step.name) is not None:
            render[step.name](ctx, result)
        console.print(styled("[bold]{}[/]: wrote {}", step.title, path), markup=True)
    console.print(f"demo results are in {out.resolve()}")
