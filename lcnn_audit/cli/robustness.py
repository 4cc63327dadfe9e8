"""``lcnn-audit grad-robustness`` and ``lcnn-audit discrepancy`` (LCNN Fig. 2 and Table 3)."""

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from . import app
from .common import Ctx, command_options, parse_float_list
from .curvature import curvature_options
from .render import fmt

R = "Gradient robustness"


@app.command("grad-robustness")
@command_options("model", "data", "output", "resume")
def grad_robustness_cmd(
    ctx: Ctx,
    more: Annotated[list[str] | None, typer.Option("--compare", help="Further checkpoints to compare (repeat the "
                                                   "option); they share --arch/--normalize.", rich_help_panel=R)]
    = None,
    radii: Annotated[str | None, typer.Option(help="Comma-separated noise norms (default: 9 log-spaced in "
                                                   "[1e-3, 1e-1]).", rich_help_panel=R)] = None,
    draws: Annotated[int, typer.Option(help="Random directions per sample.", rich_help_panel=R)] = 4,
    adversarial: Annotated[bool, typer.Option(help="Also find the worst gradient change on each sphere.",
                                              rich_help_panel=R)] = False,
    adv_steps: Annotated[int, typer.Option(help="Projected ascent steps for --adversarial.",
                                           rich_help_panel=R)] = 5,
    plot: Annotated[Path | None, typer.Option(help="Write a log-log PNG of the curves.", rich_help_panel=R)] = None,
    target: Annotated[str, typer.Option(help="f: loss or logit (as in curvature).", rich_help_panel=R)] = "loss",
    smooth_relu: Annotated[float | None, typer.Option(help="Measure with ReLU -> softplus(BETA).",
                                                      rich_help_panel=R)] = None,
) -> None:
    """Relative gradient change ‖∇f(x+ε)−∇f(x)‖/‖∇f(x)‖ against ‖ε‖, with Proposition 1's
    theory (LCNN Fig. 2). Pass several checkpoints to compare them side by side."""
    from ..audits import grad_robustness as audit
    from ..geometry.robustness import DEFAULT_RADII, GradRobustnessOptions

    opts = GradRobustnessOptions(radii=tuple(parse_float_list(radii, "--radii") or DEFAULT_RADII), draws=draws,
                                 adversarial=adversarial, adv_steps=adv_steps,
                                 curvature=curvature_options(ctx, target=target, smooth_relu=smooth_relu))
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
@command_options("model", "data", "output", "resume")
def discrepancy(
    ctx: Ctx,
    train_data: Annotated[str | None, typer.Option(help="Training data if not --data's train split (e.g. a tensor "
                                                         "file).", rich_help_panel="Data")] = None,
    target: Annotated[str, typer.Option(help="f: loss or logit.", rich_help_panel="Geometry")] = "loss",
    smooth_relu: Annotated[float | None, typer.Option(help="Measure with ReLU -> softplus(BETA).",
                                                      rich_help_panel="Geometry")] = None,
) -> None:
    """Train-test discrepancy Δtt g = |g(test) − g(train)|/g(test) (Table 3's caption) and
    |g(test) − g(train)|/g(train) (the form the printed Table 3 values need) of the mean
    gradient norm, Hessian norm and curvature (LCNN Table 3). The train split is read
    without augmentation."""
    from ..audits.discrepancy import DiscrepancyOptions, run
    from ..data import load_data, same_samples
    from ..errors import UsageError

    opts = DiscrepancyOptions(curvature=curvature_options(ctx, target=target, smooth_relu=smooth_relu))
    ctx.check_outputs(inputs={"--train-data": train_data})
    model = ctx.load_model()
    test = ctx.load_data("test")
    train = load_data(**{**ctx.data_kwargs("train"), **({"spec": train_data} if train_data else {})})
    if train_data is None and same_samples(train, test):
        raise UsageError(f"--data {ctx.data} has no separate train and test splits (both read {test.source}), so "
                         "every discrepancy would be 0; pass --train-data (the same path again if that is really "
                         "what you want)")
    ctx.print(f"train split: {train.source} ({len(train)} samples); test split: {test.source} ({len(test)} "
              "samples)", markup=False)
    with ctx.progress("discrepancy") as bar:
        result = run(model, test, opts, train_data=train, batch_size=ctx.batch_size, progress=bar,
                     config={"checkpoint": ctx.checkpoint_path, "model": model.recipe}, **ctx.run_kwargs)
    render_discrepancy(ctx, result)
    ctx.finish(result)


def render_discrepancy(ctx: Ctx, result) -> None:
    s = result.summary
    t = Table(title=f"train-test discrepancy (n_train={s['n_train']}, n_test={s['n_test']})", title_justify="left")
    for c in ("measure", "train mean", "test mean", "Δtt /test", "Δtt /train"):
        t.add_column(c, justify="right")
    for g, d in s["delta_tt"].items():
        t.add_row(g, fmt(s["train"][g]["mean"]), fmt(s["test"][g]["mean"]), fmt(d),
                  fmt(s.get("delta_tt_train", {}).get(g, float("nan"))))
    ctx.print(t)
