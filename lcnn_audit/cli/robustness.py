"""``lcnn-audit grad-robustness`` and ``lcnn-audit discrepancy`` (LCNN Fig. 2 and Table 3)."""

from pathlib import Path

from rich.table import Table

from ..geometry.options import DEFAULT_RADII, DiscrepancyOptions, GradRobustnessOptions
from . import app
from . import options as o
from .common import Ctx, command, parse_float_list
from .curvature import curvature_options
from .options import GRAD_ROBUSTNESS as GR
from .render import fmt


@app.command("grad-robustness")
def grad_robustness_cmd(
    checkpoint: o.Checkpoint = None,
    more: o.Compare = None,
    radii: o.Radii = None,
    draws: o.Draws = GR.draws,
    adversarial: o.Adversarial = GR.adversarial,
    adv_steps: o.AdvSteps = GR.adv_steps,
    plot: o.RobustnessPlot = None,
    target: o.RobustnessTarget = o.CURVATURE.target,
    smooth_relu: o.RobustnessSmoothRelu = o.CURVATURE.smooth_relu,
    checkpoint_opt: o.CheckpointOpt = None, arch: o.Arch = None, arch_kwargs: o.ArchKwargs = None,
    trust_checkpoint: o.TrustCheckpoint = False, normalize: o.Normalize = None, output_key: o.OutputKey = None,
    state_key: o.StateKey = None,
    data: o.Data = "demo", data_root: o.DataRoot = None, split: o.Split = "test", single_split: o.SingleSplit = False,
    n: o.N = None, seed: o.Seed = o.CURVATURE.seed, batch_size: o.BatchSize = 128, download: o.Download = False,
    device: o.Device = "auto",
    json_path: o.Json = None, csv_path: o.Csv = None, quiet: o.Quiet = False, verbose: o.Verbose = False,
    resume: o.Resume = False, threads: o.Threads = None,
) -> None:
    """Relative gradient change ‖∇f(x+ε)−∇f(x)‖/‖∇f(x)‖ against ‖ε‖, with Proposition 1's
    theory (LCNN Fig. 2). Pass several checkpoints to compare them side by side."""
    ctx = Ctx.of(locals())
    with command(ctx, locals()):
        opts = GradRobustnessOptions(radii=tuple(parse_float_list(radii, "--radii") or DEFAULT_RADII), draws=draws,
                                     adversarial=adversarial, adv_steps=adv_steps,
                                     curvature=curvature_options(ctx, target=target, smooth_relu=smooth_relu))
        _grad_robustness(ctx, opts, more, plot)


def _grad_robustness(ctx: Ctx, opts: GradRobustnessOptions, more: list[str] | None, plot: Path | None) -> None:
    from ..audits import grad_robustness as audit

    opts.validate()
    if plot is not None:
        from ..plots import check_image_path

        check_image_path(plot, "--plot")
    ctx.check_outputs({"--plot": plot}, {"--compare": more})
    data = ctx.load_data()
    ck = ctx.checkpoint_path
    if more:  # one model in memory at a time; a comparison is not resumable
        result = audit.compare(((c, ctx.load_model(checkpoint=c)) for c in [ck, *more]), data, opts,
                               batch_size=ctx.batch_size, progress=lambda c: ctx.progress(f"grad-robustness "
                                                                                         f"{Path(c).name}"))
    else:
        model = ctx.load_model(checkpoint=ck)
        with ctx.progress(f"grad-robustness {Path(ck).name}") as bar:
            result = audit.run(model, data, opts, batch_size=ctx.batch_size, progress=bar,
                               config={"checkpoint": ck, "model": model.recipe}, **ctx.run_kwargs)
    render_grad_robustness(ctx, result)
    if plot:
        from ..geometry.robustness import model_summaries
        from ..plots import grad_robustness_figure

        grad_robustness_figure(model_summaries(result), plot)
        ctx.print(f"wrote {plot}")
    ctx.finish(result)


def render_grad_robustness(ctx: Ctx, result) -> None:
    """Print one table of the curves per model, with the theory columns (Proposition 1 and 2)."""
    from ..geometry.robustness import model_summaries

    for name, s in model_summaries(result):
        for note in s.get("notices", []):
            ctx.notice(note)
        t = Table(title=f"gradient robustness: {name} (n={s['n']}, δ = max C_f = {fmt(s['delta'])})",
                  title_justify="left")
        cols = ["‖ε‖", "mean", "median", "p95", "r·E[C] (quad.)", "rδe^(rδ) bound", "|Δf| mean", "Prop.2 quad."]
        adv = "adv_mean" in s["curves"][0]
        cols += ["adv mean"] if adv else []
        for c in cols:
            t.add_column(c, justify="right")
        for c in s["curves"]:
            row = [c["radius"], c["mean"], c["median"], c["p95"], c["quadratic"], c["bound"], c["loss_change_mean"],
                   c["loss_change_quadratic_mean"]] + ([c["adv_mean"]] if adv else [])
            t.add_row(*(fmt(v) for v in row))
        ctx.print(t)


@app.command()
def discrepancy(
    checkpoint: o.Checkpoint = None,
    train_data: o.TrainData = None,
    target: o.DiscrepancyTarget = o.CURVATURE.target,
    smooth_relu: o.DiscrepancySmoothRelu = o.CURVATURE.smooth_relu,
    checkpoint_opt: o.CheckpointOpt = None, arch: o.Arch = None, arch_kwargs: o.ArchKwargs = None,
    trust_checkpoint: o.TrustCheckpoint = False, normalize: o.Normalize = None, output_key: o.OutputKey = None,
    state_key: o.StateKey = None,
    data: o.Data = "demo", data_root: o.DataRoot = None, split: o.Split = "test", single_split: o.SingleSplit = False,
    n: o.N = None, seed: o.Seed = o.CURVATURE.seed, batch_size: o.BatchSize = 128, download: o.Download = False,
    device: o.Device = "auto",
    json_path: o.Json = None, csv_path: o.Csv = None, quiet: o.Quiet = False, verbose: o.Verbose = False,
    resume: o.Resume = False, threads: o.Threads = None,
) -> None:
    """Train-test discrepancy Δtt g = |g(test) − g(train)|/g(test) (Table 3's caption) and
    |g(test) − g(train)|/g(train) (the form the printed Table 3 values need) of the mean
    gradient norm, Hessian norm and curvature (LCNN Table 3). The train split is read
    without augmentation."""
    ctx = Ctx.of(locals())
    with command(ctx, locals()):
        _discrepancy(ctx, DiscrepancyOptions(curvature=curvature_options(ctx, target=target,
                                                                         smooth_relu=smooth_relu)), train_data)


def _discrepancy(ctx: Ctx, opts: DiscrepancyOptions, train_data: str | None) -> None:
    from ..audits import discrepancy as audit
    from ..data import same_samples
    from ..errors import UsageError

    ctx.check_outputs(inputs={"--train-data": train_data})
    model = ctx.load_model()
    test = ctx.load_data("test")
    train = ctx.load_data("train", spec=train_data)
    if train_data is None and same_samples(train, test):
        raise UsageError(f"--data {ctx.data.data} has no separate train and test splits (both read {test.source}), so "
                         "every discrepancy would be 0; pass --train-data (the same path again if that is really "
                         "what you want)")
    ctx.print(f"train split: {train.source} ({len(train)} samples); test split: {test.source} ({len(test)} "
              "samples)", markup=False)
    with ctx.progress("discrepancy") as bar:
        result = audit.run(model, test, opts, train_data=train, batch_size=ctx.batch_size, progress=bar,
                     config={"checkpoint": ctx.checkpoint_path, "model": model.recipe}, **ctx.run_kwargs)
    render_discrepancy(ctx, result)
    ctx.finish(result)


def render_discrepancy(ctx: Ctx, result) -> None:
    """Print the train/test means and both discrepancy ratios."""
    s = result.summary
    t = Table(title=f"train-test discrepancy (n_train={s['n_train']}, n_test={s['n_test']})", title_justify="left")
    for c in ("measure", "train mean", "test mean", "Δtt /test", "Δtt /train"):
        t.add_column(c, justify="right")
    for g, d in s["delta_tt"].items():
        t.add_row(g, fmt(s["train"][g]["mean"]), fmt(s["test"][g]["mean"]), fmt(d),
                  fmt(s.get("delta_tt_train", {}).get(g, float("nan"))))
    ctx.print(t)
