"""``lcnn-audit convert``: retrofit LCNN layers into a model and save it with its recipe."""

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from . import app
from .common import SINGLE_SPLIT_HELP, Ctx, command_options
from .render import fmt

C, D = "Conversion", "Data"


def _opt(*names, help: str, panel: str, **kw):
    return typer.Option(*names, help=help, rich_help_panel=panel, **kw)


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


DataOpt = Annotated[str | None, _opt("--data", panel=D, help=(
    "demo, cifar10, cifar100, mnist, fashion-mnist, svhn, an ImageFolder directory, or a .pt/.npz tensor file: "
    "gives the input size (one batch) and the clean accuracy before and after."))]
DataRootOpt = Annotated[Path | None, _opt("--data-root", panel=D, help="Where named datasets live (default ./data).")]
SplitOpt = Annotated[str, _opt("--split", panel=D, help="train or test.")]
NOpt = Annotated[int | None, _opt("--n", "--num-samples", panel=D, help="Use a seeded random subset of N samples "
                                                                      "(default: all).")]
SeedOpt = Annotated[int, _opt("--seed", panel=D, help="Seed for the subset.")]
BatchOpt = Annotated[int, _opt("--batch-size", panel=D, help="Samples per batch.", min=1)]
DownloadOpt = Annotated[bool, _opt("--download", panel=D, help="Download a named dataset if missing.")]
DeviceOpt = Annotated[str, _opt("--device", panel=D, help="auto, cpu, cuda or cuda:K.")]
SingleSplitOpt = Annotated[bool, _opt("--single-split", panel=D, help=SINGLE_SPLIT_HELP)]
ShapeOpt = Annotated[str | None, _opt("--input-shape", panel=D, help=(
    "Input size C,H,W without the batch dim (e.g. 3,32,32), when no --data is given."))]


def check_model_path(path: Path, option: str) -> None:
    """:func:`lcnn_audit.audits.convert.check_model_path`: models are written as safetensors."""
    from ..audits.convert import check_model_path as check

    check(path, option)


def load_cli_data(data, data_root, split, n, seed, download, single_split=False):
    from ..data import load_data

    if data is None:
        return None
    return load_data(data, split, n=n, seed=seed, data_root=data_root, download=download, single_split=single_split)


@app.command()
@command_options("model", "output")
def convert(
    ctx: Ctx,
    output: Annotated[Path, _opt("--output", "-o", panel=C, help="Write the converted model here (.safetensors "
                                                               "with its recipe; every command loads it).")],
    input_shape: ShapeOpt = None,
    data: DataOpt = None,
    data_root: DataRootOpt = None,
    split: SplitOpt = "test",
    n: NOpt = None,
    seed: SeedOpt = 0,
    batch_size: BatchOpt = 128,
    download: DownloadOpt = False,
    single_split: SingleSplitOpt = False,
    device: DeviceOpt = "auto",
    activations: Annotated[bool, _opt("--activations/--no-activations", panel=C, help=(
        "Replace activations (modules and functional calls) by centered softplus (LCNN eq. 4)."))] = True,
    kinds: Annotated[str | None, _opt("--kinds", panel=C, help=(
        "Activation kinds to replace, comma-separated: relu, relu6, leaky_relu, gelu, silu, elu, softplus "
        "(default: all)."))] = None,
    beta_init: Annotated[float, _opt("--beta-init", panel=C, help=(
        "Initial β of every centered softplus (curvature bound β; larger is closer to ReLU)."))] = 5.0,
    batchnorm: Annotated[bool, _opt("--batchnorm/--no-batchnorm", panel=C, help=(
        "Replace BatchNorm1d/2d by γ-Lipschitz batch norm (LCNN §3.4.2)."))] = True,
    gamma_init: Annotated[float | None, _opt("--gamma-init", panel=C, help=(
        "Initial γ (> 1) of every γ-Lipschitz batch norm. Default: max(‖BN‖₂, 2) per layer, which keeps the "
        "layer's function; the paper's snippet uses 11."))] = None,
    conv: Annotated[bool, _opt("--conv/--no-conv", panel=C, help=(
        "Spectrally normalise convolutions on their real input size (LCNN §3.4.1)."))] = True,
    linear: Annotated[bool, _opt("--linear/--no-linear", panel=C, help="Spectrally normalise Linear layers.")] = True,
    fold_bn: Annotated[bool, _opt("--fold-bn/--no-fold-bn", panel=C, help=(
        "Fold each layer's 1/σ into the batch norm it feeds, so the pair keeps its eval-mode function."))] = True,
    power_iterations: Annotated[int, _opt("--power-iterations", panel=C, help=(
        "Power-iteration steps per training forward pass."), min=0)] = 1,
    tol: Annotated[float, _opt("--tol", panel=C, help="Relative residual at which the spectral norms count as "
                                                      "converged.")] = 1e-6,
    max_iter: Annotated[int, _opt("--max-iter", panel=C, help="Most operator products per spectral norm.",
                                  min=1)] = 500,
    fx: Annotated[bool, _opt("--fx/--no-fx", panel=C, help=(
        "Use torch.fx to convert functional activations and give shared activation modules one module per call "
        "site."))] = True,
) -> None:
    """Convert a model to a low-curvature network (LCNN) and save it with its recipe.

    Activations become centered softplus, batch norms γ-Lipschitz batch norms, convolutions and linear layers
    are spectrally normalised (Srinivas et al., NeurIPS 2022, §3.3-3.4). Prints what was converted and what
    could not be, and the clean accuracy before and after with --data.
    """
    from ..audits.convert import convert as convert_command
    from ..convert import ConvertOptions, convert_flag
    from ..errors import UsageError
    from ..model.recipe import reload_hint
    from ..options import OptionsError
    from ..surgery import ACTIVATION_MODULES

    kind_list = tuple(k.strip() for k in kinds.split(",") if k.strip()) if kinds else tuple(ACTIVATION_MODULES)
    opts = ConvertOptions(activations=activations, activation_kinds=kind_list, beta_init=beta_init,
                          batchnorm=batchnorm, gamma_init=gamma_init, conv=conv, linear=linear, fold_into_bn=fold_bn,
                          n_power_iterations=power_iterations, tol=tol, max_iter=max_iter, use_fx=fx)
    try:
        opts.validate()
    except OptionsError as err:  # the fields as this command's flags (--kinds, --power-iterations)
        raise UsageError(err.render(convert_flag)) from None
    shape = parse_input_shape(input_shape)
    ctx.opts.update(device=device, data=data)
    check_model_path(output, "--output")
    ctx.check_outputs({"--output": output})
    data_obj = load_cli_data(data, data_root, split, n, seed, download, single_split)
    model = ctx.load_model()
    with ctx.progress("convert") as bar:
        _, result = convert_command(model, opts, output=output, input_shape=shape, data=data_obj,
                                    batch_size=batch_size, progress=bar, config={"checkpoint": ctx.checkpoint_path})
    render_convert(ctx, result)
    hint = reload_hint(model.recipe.get("arch", ""), output)
    if hint:
        ctx.notice(hint)
    ctx.finish(result)


def render_convert(ctx: Ctx, result) -> None:
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
