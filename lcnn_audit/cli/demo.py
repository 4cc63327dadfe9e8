"""``lcnn-audit demo``: the main audits on the bundled model and Fashion-MNIST sample."""

from pathlib import Path

from ..audits.registry import AUDITS, resolve
from . import app
from . import options as o
from .common import Ctx, OutputArgs, command, console, styled


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
def demo(
    out: o.DemoOut = Path("lcnn-audit-demo"),
    n: o.DemoN = 256,
    quiet: o.Quiet = False,
    verbose: o.Verbose = False,
    threads: o.Threads = None,
) -> None:
    """Run the audits on the bundled demo CNN and Fashion-MNIST sample (no downloads)."""
    ctx = Ctx(OutputArgs(quiet=quiet, verbose=verbose), threads=threads)
    with command(ctx, locals(), check_outputs=False):
        _demo(ctx, out, n)


def _demo(ctx: Ctx, out: Path, n: int) -> None:
    from ..demo import demo_steps, run_demo
    from ..io import check_outputs

    check_outputs({}, dirs={"--out": out})
    render = renderers()
    for step in demo_steps():
        with ctx.progress(step.title) as bar:
            result, path = run_demo(step, out, n=n, progress=bar)
        if render.get(step.name) is not None:
            render[step.name](ctx, result)
        console.print(styled("[bold]{}[/]: wrote {}", step.title, path), markup=True)
    console.print(f"demo results are in {out.resolve()}")
