"""``lcnn-audit bound``: the data-free curvature bound (LCNN Theorem 1) and the LCNN penalty."""

from rich.table import Table

from ..bound.options import BoundOptions
from . import app
from . import options as o
from .common import Ctx, command
from .convert import parse_input_shape
from .options import BOUND as B
from .render import fmt


@app.command()
def bound(
    checkpoint: o.Checkpoint = None,
    input_shape: o.InputShape = None,
    data: o.ShapeData = None,
    data_root: o.DataRoot = None,
    split: o.ShapeSplit = "test",
    download: o.Download = False,
    single_split: o.SingleSplit = False,
    device: o.Device = "auto",
    lambda_beta: o.LambdaBeta = B.lambda_beta,
    lambda_gamma: o.LambdaGamma = B.lambda_gamma,
    tol: o.BoundTol = B.tol,
    max_iter: o.BoundMaxIter = B.max_iter,
    checkpoint_opt: o.CheckpointOpt = None, arch: o.Arch = None, arch_kwargs: o.ArchKwargs = None,
    trust_checkpoint: o.TrustCheckpoint = False, normalize: o.Normalize = None, output_key: o.OutputKey = None,
    state_key: o.StateKey = None,
    json_path: o.Json = None, csv_path: o.Csv = None, quiet: o.Quiet = False, verbose: o.Verbose = False,
    threads: o.Threads = None,
) -> None:
    """Data-free bound of LCNN Theorem 1: per-layer curvature and Lipschitz constants, their running
    products, the Theorem 1 sum, rigorous Lipschitz/Hessian bounds and the LCNN penalty R_f (eq. 5).

    The input size comes from a converted checkpoint's recipe, --input-shape or --data.
    """
    n = 1  # one sample gives the input size
    ctx = Ctx.of(locals())
    with command(ctx, locals()):
        _bound(ctx, BoundOptions(input_shape=parse_input_shape(input_shape), lambda_beta=lambda_beta,
                                 lambda_gamma=lambda_gamma, tol=tol, max_iter=max_iter))


def _bound(ctx: Ctx, opts: BoundOptions) -> None:
    from ..audits import bound as audit

    data = ctx.load_data()
    model = ctx.load_model()
    with ctx.progress("bound: layers") as bar:
        result = audit.run(model, data, opts, config={"checkpoint": ctx.checkpoint_path}, progress=bar)
    render_bound(ctx, result)
    ctx.finish(result)


def render_bound(ctx: Ctx, result) -> None:
    """Print the per-layer bounds, the totals and the notes."""
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
