"""``lcnn-audit convert``: retrofit LCNN layers into a model and save it with its recipe."""

from pathlib import Path

from rich.table import Table

from . import app
from . import options as o
from .common import Ctx, command
from .options import CONVERT as CV
from .render import fmt


def parse_input_shape(text: str | None) -> tuple[int, ...] | None:
    """``C,H,W`` (or ``CxHxW``) -> a tuple of positive ints."""
    from ..errors import UsageError

    if text is None:
        return None
    parts = [p for p in text.replace("x", ",").replace(" ", "").split(",") if p]
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        raise UsageError(f"--input-shape must be comma-separated integers C,H,W, got {text!r}") from None
    if not shape or any(s <= 0 for s in shape):
        raise UsageError(f"--input-shape must be positive sizes C,H,W, got {text!r}")
    return shape


def check_model_path(path: Path, option: str) -> None:
    """:func:`lcnn_audit.audits.convert.check_model_path`: models are written as safetensors."""
    from ..audits.convert import check_model_path as check

    check(path, option)


@app.command()
def convert(
    checkpoint: o.Checkpoint = None,
    *,
    output: o.ConvertOutput,
    input_shape: o.InputShape = None,
    data: o.ShapeData = None,
    data_root: o.DataRoot = None,
    split: o.ShapeSplit = "test",
    n: o.N = None,
    seed: o.Seed = 0,
    batch_size: o.BatchSize = 128,
    download: o.Download = False,
    single_split: o.SingleSplit = False,
    device: o.Device = "auto",
    activations: o.Activations = CV.activations,
    kinds: o.Kinds = None,
    beta_init: o.BetaInit = CV.beta_init,
    batchnorm: o.Batchnorm = CV.batchnorm,
    gamma_init: o.GammaInit = CV.gamma_init,
    conv: o.Conv = CV.conv,
    linear: o.Linear = CV.linear,
    fold_bn: o.FoldBn = CV.fold_into_bn,
    power_iterations: o.PowerIterations = CV.n_power_iterations,
    tol: o.ConvertTol = CV.tol,
    max_iter: o.ConvertMaxIter = CV.max_iter,
    fx: o.Fx = CV.use_fx,
    checkpoint_opt: o.CheckpointOpt = None, arch: o.Arch = None, arch_kwargs: o.ArchKwargs = None,
    trust_checkpoint: o.TrustCheckpoint = False, normalize: o.Normalize = None, output_key: o.OutputKey = None,
    state_key: o.StateKey = None,
    json_path: o.Json = None, csv_path: o.Csv = None, quiet: o.Quiet = False, verbose: o.Verbose = False,
    threads: o.Threads = None,
) -> None:
    """Convert a model to a low-curvature network (LCNN) and save it with its recipe.

    Activations become centered softplus, batch norms γ-Lipschitz batch norms, convolutions and linear layers
    are spectrally normalised (Srinivas et al., NeurIPS 2022, §3.3-3.4). Prints what was converted and what
    could not be, and the clean accuracy before and after with --data.
    """
    ctx = Ctx.of(locals())
    with command(ctx, locals()):
        _convert(ctx, output, activations=activations, activation_kinds=kinds, beta_init=beta_init,
                 batchnorm=batchnorm, gamma_init=gamma_init, conv=conv, linear=linear, fold_into_bn=fold_bn,
                 n_power_iterations=power_iterations, tol=tol, max_iter=max_iter, use_fx=fx,
                 input_shape=input_shape)


def _convert(ctx: Ctx, output: Path, *, activation_kinds: str | None, input_shape: str | None, **fields) -> None:
    from ..audits import convert as audit
    from ..convert_options import ConvertOptions, convert_flag
    from ..errors import UsageError
    from ..model.recipe import reload_hint
    from ..options import OptionsError

    if activation_kinds:  # else every kind (the options' default)
        fields["activation_kinds"] = tuple(k.strip() for k in activation_kinds.split(",") if k.strip())
    opts = ConvertOptions(**fields)
    try:
        opts.validate()
    except OptionsError as err:  # the fields as this command's flags (--kinds, --power-iterations)
        raise UsageError(err.render(convert_flag)) from None
    shape = parse_input_shape(input_shape)
    check_model_path(output, "--output")
    ctx.check_outputs({"--output": output})
    data = ctx.load_data()
    model = ctx.load_model()
    with ctx.progress("convert") as bar:
        _, result = audit.convert(model, opts, output=output, input_shape=shape, data=data,
                                           batch_size=ctx.batch_size, progress=bar,
                                           config={"checkpoint": ctx.checkpoint_path})
    render_convert(ctx, result)
    hint = reload_hint(model.recipe.get("arch", ""), output)
    if hint:
        ctx.notice(hint)
    ctx.finish(result)


def render_convert(ctx: Ctx, result) -> None:
    """Print what was converted, what was not and why, and the accuracy before and after."""
    s = result.summary
    table = Table(title=f"converted {len(s['swapped'])} module(s) for input {tuple(s['input_shape'])}",
                  title_justify="left")
    for col in ("module", "from", "to", "detail"):
        table.add_column(col)
    for e in s["swapped"]:
        table.add_row(e["name"], e["from"], e["to"], _detail(e))
    ctx.print(table)
    if s["skipped"]:
        skipped = Table(title="not converted", title_justify="left")
        for col in ("module", "type", "reason"):
            skipped.add_column(col)
        for e in s["skipped"]:
            skipped.add_row(e["name"], e.get("type", ""), e["reason"])
        ctx.print(skipped)
    for note in s["notes"]:
        ctx.notice(note)
    if s.get("accuracy_before") is not None:
        ctx.print(f"clean accuracy: {fmt(s['accuracy_before'])} before, {fmt(s['accuracy_after'])} after conversion "
                  "(before any fine-tuning)")
    if s.get("output"):
        ctx.print(f"wrote {s['output']}")


def _detail(e: dict) -> str:
    if e["kind"] == "activation":
        return f"β = {fmt(e['beta'])}"
    if e["kind"] == "batchnorm":
        return f"‖BN‖₂ = {fmt(e['bn_norm'])}, γ = {fmt(e['gamma'])}"
    text = f"σ = {fmt(e['sigma'])}"
    if e["kind"] == "conv":
        text += f" on {tuple(e['input_shape'])}"
    if not e.get("converged", True):
        text += f" (not converged, residual {fmt(e['residual'])})"
    if e.get("folded_into"):
        text += f", folded into {e['folded_into']}"
    return text
