"""``lcnn-audit curvature``: per-sample input gradient, Hessian and curvature."""

from pathlib import Path
from typing import Annotated

import typer

from . import app
from .common import Ctx, command_options
from .render import fmt, stats_table

G = "Geometry"
FIELDS = ["grad_norm", "hessian_norm", "curvature", "alignment", "hessian_fro", "fd_curvature", "jacobian_fro",
          "cross_lipschitz", "iterations"]


@app.command()
@command_options("model", "data", "output", "resume")
def curvature(
    ctx: Ctx,
    target: Annotated[str, typer.Option(help="f = cross-entropy at the label (loss) or the label's logit.",
                                        rich_help_panel=G)] = "loss",
    label: Annotated[str, typer.Option(help="Label for f: the true label or the predicted class.",
                                       rich_help_panel=G)] = "true",
    method: Annotated[str, typer.Option(help="auto, lanczos, power, reference (the LCNN paper's "
                                             "code, biased low; use --iters 10) or gauss-newton (exact for "
                                             "piecewise-linear nets).", rich_help_panel=G)] = "auto",
    tol: Annotated[float, typer.Option(help="Lanczos relative residual tolerance.", rich_help_panel=G)] = 1e-3,
    atol: Annotated[float, typer.Option(help="Absolute residual floor.", rich_help_panel=G)] = 0.0,
    max_iter: Annotated[int, typer.Option(help="Maximum Lanczos steps (HVPs) per sample.",
                                          rich_help_panel=G)] = 40,
    iters: Annotated[int, typer.Option(help="Power-iteration steps (--method power / reference).",
                                       rich_help_panel=G)] = 20,
    profile: Annotated[int, typer.Option(help="Also report the K eigenvalues largest in magnitude (CURE Fig. 2).",
                                         rich_help_panel=G)] = 0,
    fd_h: Annotated[float | None, typer.Option(help="Also report CURE's finite difference "
                                                       "‖∇f(x+hz)−∇f(x)‖ at step h.", rich_help_panel=G)] = None,
    eps: Annotated[float, typer.Option(help="ε in C = ‖∇²f‖/(‖∇f‖+ε).", rich_help_panel=G)] = 1e-6,
    fro_probes: Annotated[int, typer.Option(help="Hutchinson probes for the Frobenius remainder.",
                                            rich_help_panel=G)] = 8,
    jacobian: Annotated[str, typer.Option(help="Jacobian measures: auto (exact up to 32 classes, else "
                                               "estimated), exact, estimate or off.", rich_help_panel=G)] = "auto",
    smooth_relu: Annotated[float | None, typer.Option(help="Measure with ReLUs replaced by softplus(BETA), "
                                                              "as the paper's baseline (1000).",
                                                         rich_help_panel=G)] = None,
    dtype: Annotated[str, typer.Option(help="float32, or float64 for validation.", rich_help_panel=G)] = "float32",
    examples: Annotated[int, typer.Option(help="Keep the K most curved samples' input, gradient and top Hessian "
                                               "eigenvector in the JSON (for the report; 0: off).", min=0,
                                          rich_help_panel="Output")] = 6,
    save_images: Annotated[Path | None, typer.Option(help="Write a PNG grid of the --examples most curved samples "
                                                          "into this directory.", rich_help_panel="Output")] = None,
) -> None:
    """Per-sample ‖∇f‖, ‖∇²f‖₂ and normalised curvature C = ‖∇²f‖₂/(‖∇f‖₂+ε) (LCNN §3.1)."""
    from ..audits import curvature as audit
    from ..geometry import CurvatureOptions

    opts = CurvatureOptions(target=target, label=label, method=method, tol=tol, atol=atol, max_iter=max_iter,
                            iters=iters, profile=profile, fd_h=fd_h, eps=eps, fro_probes=fro_probes,
                            jacobian=jacobian, smooth_relu=smooth_relu, dtype=dtype, seed=ctx.seed)
    opts.validate()
    check_image_dir(save_images, examples)
    model = ctx.load_model()
    data = ctx.load_data()
    with ctx.progress("curvature") as bar:
        result = audit.run(model, data, opts, batch_size=ctx.batch_size, progress=bar,
                           config={"model": model.recipe, "checkpoint": ctx.checkpoint_path}, **ctx.run_kwargs)
    ex = audit.add_examples(model, data, result, examples, opts) if examples else None
    if ex is not None and save_images is not None:
        from ..plots import examples_figure

        save_images.mkdir(parents=True, exist_ok=True)
        ctx.print(f"wrote {examples_figure(ex, save_images / 'curvature_most_curved.png')}")
    render_curvature(ctx, result)
    ctx.finish(result)


def check_image_dir(path: Path | None, examples: int) -> None:
    """--save-images DIR: a directory (or a new path) and examples to draw, checked before any work."""
    from ..errors import UsageError

    if path is None:
        return
    if examples < 1:
        raise UsageError("--save-images needs --examples K with K >= 1")
    if path.exists() and not path.is_dir():
        raise UsageError(f"--save-images {path} is a file; give a directory")


def render_curvature(ctx: Ctx, result) -> None:
    for note in result.summary.get("notices", []):
        ctx.notice(note)
    s = result.summary
    ctx.print(stats_table(result, FIELDS, f"curvature audit: {s['n']} samples, method {s['method']}, "
                                         f"accuracy {fmt(s.get('accuracy'))}"))
    if s.get("not_converged"):
        ctx.notice(f"{s['not_converged']} sample(s) did not converge within --max-iter (marked converged: false)")


def curvature_options(ctx: Ctx, **kw):
    """CurvatureOptions at their defaults, seeded from --seed, with ``kw`` overrides."""
    from ..geometry import CurvatureOptions

    return CurvatureOptions(seed=ctx.seed, **kw)
