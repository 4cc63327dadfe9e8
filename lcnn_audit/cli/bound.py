"""``lcnn-audit bound``: the data-free curvature bound (LCNN Theorem 1) and the LCNN penalty."""

from typing import Annotated

import typer
from rich.table import Table

from . import app
from .common import Ctx, command_options
from .convert import (
    DataOpt,
    DataRootOpt,
    DeviceOpt,
    DownloadOpt,
    ShapeOpt,
    SingleSplitOpt,
    SplitOpt,
    load_cli_data,
    parse_input_shape,
)
from .render import fmt

B = "Bound"


@app.command()
@command_options("model", "output")
def bound(
    ctx: Ctx,
    input_shape: ShapeOpt = None,
    data: DataOpt = None,
    data_root: DataRootOpt = None,
    split: SplitOpt = "test",
    download: DownloadOpt = False,
    single_split: SingleSplitOpt = False,
    device: DeviceOpt = "auto",
    lambda_beta: Annotated[float, typer.Option(help="λβ of the LCNN penalty (eq. 5).", rich_help_panel=B)] = 1e-4,
    lambda_gamma: Annotated[float, typer.Option(help="λγ of the LCNN penalty (eq. 5).", rich_help_panel=B)] = 1e-5,
    tol: Annotated[float, typer.Option(help="Relative residual certificate of the operator norms.",
                                       rich_help_panel=B)] = 1e-7,
    max_iter: Annotated[int, typer.Option(help="Most operator products per operator norm.", min=1,
                                          rich_help_panel=B)] = 1000,
) -> None:
    """Data-free bound of LCNN Theorem 1: per-layer curvature and Lipschitz constants, their running
    products, the Theorem 1 sum, rigorous Lipschitz/Hessian bounds and the LCNN penalty R_f (eq. 5).

    The input size comes from a converted checkpoint's recipe, --input-shape or --data.
    """
    from ..audits.bound import BoundOptions, run

    shape = parse_input_shape(input_shape)
    ctx.opts.update(device=device, data=data)
    data_obj = load_cli_data(data, data_root, split, 1, 0, download, single_split)
    opts = BoundOptions(input_shape=shape, lambda_beta=lambda_beta, lambda_gamma=lambda_gamma, tol=tol,
                        max_iter=max_iter)
    model = ctx.load_model()
    with ctx.progress("bound: layers") as bar:
        result = run(model, data_obj, opts, config={"checkpoint": ctx.checkpoint_path}, progress=bar)
    render_bound(ctx, result)
    ctx.finish(result)


def render_bound(ctx: Ctx, result) -> None:
    s = result.summary
    table = Table(title=f"per-layer bounds on input {tuple(s['input_shape'])} ({s['composition']})",
                  title_justify="left")
    for col, just in (("layer", "left"), ("op", "left"), ("Cᵢ", "right"), ("κᵢ", "right"), ("Lᵢ", "right"),
                      ("running L", "right"), ("running H", "right"), ("Theorem 1 sum", "right")):
        table.add_column(col, justify=just)
    for row in s["layers"]:
        mark = "" if row["smooth"] else " (a.e.)"
        table.add_row(row["name"], row["op"] + mark, fmt(row["curvature"]), fmt(row["second_derivative"]),
                      fmt(row["lipschitz"]), fmt(row["running_lipschitz"]), fmt(row["running_hessian"]),
                      fmt(row["theorem1"]))
    ctx.print(table)
    totals = Table(title="totals", title_justify="left", show_header=False)
    totals.add_column("quantity")
    totals.add_column("value", justify="right")
    for label, key in (("Lipschitz constant of the logits (upper bound)", "lipschitz"),
                       ("‖∇²ₓ logits‖ (upper bound)", "hessian_logits"),
                       ("‖∇²ₓ cross-entropy‖ (upper bound)", "hessian_loss"),
                       ("Theorem 1 sum Σ Cᵢ Πⱼ≤ᵢ Lⱼ", "theorem1"),
                       ("Theorem 1 sum with widths nᵢ", "theorem1_width_weighted"),
                       ("Σ β (centered softplus)", "sum_beta"), ("Σ log γ (γ-Lipschitz BN)", "sum_log_gamma"),
                       (f"LCNN penalty R_f (λβ={fmt(s['lambda_beta'])}, λγ={fmt(s['lambda_gamma'])})", "penalty")):
        totals.add_row(label, fmt(s[key]))
    ctx.print(totals)
    ctx.print(f"composition: {s['composition_note']}")
    for note in s["notes"]:
        ctx.notice(note)
