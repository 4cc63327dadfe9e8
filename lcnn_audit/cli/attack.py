"""``lcnn-audit attack``: robust accuracy under PGD, FGSM, DeepFool, C&W and AutoAttack."""

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ..formatting import eps_text
from . import app
from .common import Ctx, _is_main_rank, command_options, err_console
from .curvature import check_image_dir
from .render import fmt

A = "Attack"
AA = "AutoAttack"
MN = "DeepFool / C&W"
CT = "Masking checks and counters"


def eps_label(eps: float, norm: str) -> str:
    return eps_text(eps, norm, with_value=True)


@app.command()
@command_options("model", "data", "output", "resume")
def attack(
    ctx: Ctx,
    attack: Annotated[str, typer.Option("--attack", "--attacks",
                                        help="Comma-separated: pgd, fgsm, deepfool, cw, autoattack.",
                                        rich_help_panel=A)] = "pgd",
    norm: Annotated[str, typer.Option("--norm", "--norms",
                                      help="Comma-separated threat models: l2, linf, l1 (l1: autoattack only; "
                                           "deepfool and cw: l2 only).", rich_help_panel=A)] = "l2",
    eps: Annotated[list[str] | None, typer.Option(
        "--eps", help="Eps sweep, all computed in one run: 0.05,0.1,0.15,0.2 (every norm) or NORM=LIST for one norm "
                      "(repeatable); fractions like 8/255 work. Default: l2 0.05,0.1,0.15,0.2 (LCNN Table 2), "
                      "linf 1/255,2/255,4/255,8/255, l1 3,6,12.", rich_help_panel=A)] = None,
    steps: Annotated[int, typer.Option(help="PGD steps.", rich_help_panel=A, min=1)] = 10,
    restarts: Annotated[int, typer.Option(help="PGD random restarts (the best is kept per sample).",
                                          rich_help_panel=A, min=1)] = 1,
    step_size: Annotated[float | None, typer.Option(help="PGD fixed step size (default 2.5·eps/steps with "
                                                         "--step-rule fixed).", rich_help_panel=A)] = None,
    step_rule: Annotated[str | None, typer.Option(help="PGD step-size rule: apgd (adaptive step and momentum, Croce "
                                                       "& Hein 2020; the default) or fixed (the default with "
                                                       "--step-size).", rich_help_panel=A)] = None,
    random_start: Annotated[bool, typer.Option("--random-start/--no-random-start", help="PGD random start.",
                                               rich_help_panel=A)] = True,
    loss: Annotated[str, typer.Option(help="PGD/FGSM objective: ce (cross-entropy) or margin (C&W margin).",
                                      rich_help_panel=A)] = "ce",
    masking_checks: Annotated[bool, typer.Option("--masking-checks/--no-masking-checks", help=(
        "Run the extra gradient-masking checks: PGD with 4x the steps at the middle eps, and PGD at the box "
        "diameter; the Indicators of Attack Failure that need extra runs; a small Square attack on every "
        "--check-every-th input."), rich_help_panel=A)] = True,
    eot: Annotated[int, typer.Option(help="Counter for randomised models: average each gradient of the adaptive "
                                          "PGD over N forward passes (EOT).", rich_help_panel=CT, min=1)] = 1,
    bpda: Annotated[str | None, typer.Option(help="Counter for non-differentiable parts: comma-separated submodule "
                                                  "names (as in model.named_modules()) whose backward pass is the "
                                                  "identity in the adaptive PGD (BPDA).", rich_help_panel=CT)] = None,
    auto_margin: Annotated[bool, typer.Option("--auto-margin/--no-auto-margin", help=(
        "Run the adaptive margin-loss PGD on inputs whose cross-entropy gradient is exactly zero (saturated)."),
        rich_help_panel=CT)] = True,
    check_every: Annotated[int, typer.Option(help="The restart and Square checks run on every N-th input (by "
                                                  "dataset index).", rich_help_panel=CT, min=1)] = 8,
    square_queries: Annotated[int, typer.Option(help="Queries of the black-box Square check.", rich_help_panel=CT,
                                                min=1)] = 300,
    version: Annotated[str, typer.Option(help="AutoAttack version: standard, plus, rand, or custom (with "
                                              "--aa-attacks).", rich_help_panel=AA)] = "standard",
    aa_attacks: Annotated[str | None, typer.Option(help="Sub-attacks for --version custom: apgd-ce, apgd-dlr, fab, "
                                                        "square, apgd-t, fab-t.", rich_help_panel=AA)] = None,
    aa_n_iter: Annotated[int | None, typer.Option(help="Shrink APGD/FAB iterations (quick runs; not standard "
                                                       "AutoAttack numbers).", rich_help_panel=AA)] = None,
    aa_n_queries: Annotated[int | None, typer.Option(help="Shrink Square's queries (quick runs).",
                                                     rich_help_panel=AA)] = None,
    df_steps: Annotated[int, typer.Option(help="DeepFool iterations.", rich_help_panel=MN)] = 50,
    overshoot: Annotated[float, typer.Option(help="DeepFool overshoot.", rich_help_panel=MN)] = 0.02,
    candidates: Annotated[int, typer.Option(help="DeepFool candidate classes (incl. the label).",
                                            rich_help_panel=MN)] = 10,
    cw_steps: Annotated[int, typer.Option(help="C&W Adam steps per binary-search round.", rich_help_panel=MN)] = 100,
    cw_search_steps: Annotated[int, typer.Option(help="C&W binary-search rounds over the constant c.",
                                                 rich_help_panel=MN)] = 5,
    cw_lr: Annotated[float, typer.Option(help="C&W Adam learning rate.", rich_help_panel=MN)] = 0.01,
    cw_confidence: Annotated[float, typer.Option(help="C&W confidence margin κ.", rich_help_panel=MN)] = 0.0,
    cw_initial_const: Annotated[float, typer.Option(help="C&W initial constant c.", rich_help_panel=MN)] = 0.1,
    plot: Annotated[Path | None, typer.Option(help="Draw robust accuracy against eps (CURE Fig. 6) to this "
                                                   "image file (.png, .pdf, .svg).", rich_help_panel="Output")] = None,
    save_adv: Annotated[Path | None, typer.Option(help="Save the adversarial examples as safetensors "
                                                       "(x, x_adv_<norm>, first_eps_<norm>, attack_<norm>).",
                                                  rich_help_panel="Output")] = None,
    examples: Annotated[int | None, typer.Option(help="Keep K adversarial examples in the JSON (the most curved of "
                                                      "the samples broken at the smallest eps): input, gradient, top "
                                                      "Hessian eigenvector, adversarial example, perturbation. "
                                                      "Default: 6 with --save-images, else 0.", min=0,
                                                 rich_help_panel="Output")] = None,
    save_images: Annotated[Path | None, typer.Option(help="Write a PNG grid of those examples into this directory.",
                                                     rich_help_panel="Output")] = None,
) -> None:
    """Robust accuracy against eps with per-sample worst case, 95 % intervals and gradient-masking flags."""
    from ..attacks import AttackOptions, attack_audit
    from ..attacks.plot import check_plot_path

    opts = AttackOptions.from_cli(
        attack=attack, norm=norm, eps=eps, step_rule=step_rule, aa_attacks=aa_attacks, bpda=bpda, steps=steps,
        step_size=step_size, restarts=restarts, random_start=random_start, loss=loss, version=version,
        aa_n_iter=aa_n_iter, aa_n_queries=aa_n_queries, df_steps=df_steps, overshoot=overshoot, candidates=candidates,
        cw_steps=cw_steps, cw_search_steps=cw_search_steps, cw_lr=cw_lr, cw_confidence=cw_confidence,
        cw_initial_const=cw_initial_const, masking_checks=masking_checks, seed=ctx.seed, eot=eot,
        auto_margin=auto_margin, check_every=check_every, square_queries=square_queries,
    ).validate()
    if plot is not None:
        check_plot_path(plot)
    ctx.check_outputs({"--plot": plot, "--save-adv": save_adv})
    if save_adv is not None:
        from ..attacks.adv_store import AdvStore

        AdvStore(save_adv).check()
    examples = (6 if save_images is not None else 0) if examples is None else examples
    check_image_dir(save_images, examples)
    run_kwargs = ctx.run_kwargs
    model = ctx.load_model()
    data = ctx.load_data()
    with ctx.progress("attack") as bar:
        result = attack_audit(model, data, opts, batch_size=ctx.batch_size, progress=bar, save_adv=save_adv,
                              config={"model": model.recipe, "checkpoint": ctx.checkpoint_path}, **run_kwargs)
    if examples and result.complete and _is_main_rank():  # rank 0 holds every sample
        _examples(ctx, model, data, result, examples, save_images)
    render_attack(ctx, result)
    if plot is not None and result.complete:
        from ..attacks.plot import plot_robustness

        ctx.print(f"wrote {plot_robustness(result, plot)}")
    if result.summary.get("save_adv"):
        ctx.print(f"wrote {result.summary['save_adv']}")
    ctx.finish(result)


def _examples(ctx: Ctx, model, data, result, k: int, save_images: Path | None) -> None:
    from ..errors import UsageError
    from ..examples import adversarial_examples, attach_examples
    from ..geometry import CurvatureOptions

    try:
        ex = adversarial_examples(model, data, result, k=k,
                                  options=CurvatureOptions(seed=ctx.seed, fro_probes=0, jacobian="off"))
    except UsageError as err:  # nothing broken, or no eps-bounded attack: say so, keep the result
        ctx.notice(f"no adversarial examples to show: {err}")
        return
    attach_examples(result, ex)
    if save_images is not None:
        from ..plots import examples_figure

        save_images.mkdir(parents=True, exist_ok=True)
        title = f"adversarial examples: the {len(ex)} most curved of the samples broken"
        ctx.print(f"wrote {examples_figure(ex, save_images / 'attack_examples.png', title)}")


def render_attack(ctx: Ctx, result) -> None:
    """Print the robust-accuracy table, minimal norms and the flags."""
    s = result.summary
    for note in s.get("notices", []):
        ctx.notice(note)
    title = (f"attack audit: {s['n']} samples, clean accuracy {fmt(s['clean_accuracy'])} "
             f"[{fmt(s['clean_ci_low'])}, {fmt(s['clean_ci_high'])}]")
    table = Table(title=title, title_justify="left", caption=f"interval: {s['interval']}; accuracy over all n",
                  caption_justify="left")
    for col in ("attack", "norm", "eps", "robust acc", "95% interval", "n"):
        table.add_column(col, justify="left" if col in ("attack", "norm") else "right")
    for e in s["results"]:
        table.add_row(e["attack"], e["norm"], eps_label(e["eps"], e["norm"]), fmt(e["robust_accuracy"]),
                      f"[{fmt(e['ci_low'])}, {fmt(e['ci_high'])}]", str(e["n"]))
    ctx.print(table)
    for name, st in s.get("min_norm", {}).items():
        ctx.print(f"{name}: minimal L2 perturbation found for {st['found']} of {st['attacked']} attacked samples; "
                  f"median {fmt(st['median_all'])}, mean over found {fmt(st['mean'])}")
    ind = {k: v for k, v in s.get("indicators", {}).items() if v.get("checked")}
    if ind:
        ctx.print("indicators of attack failure (inputs / checked): "
                  + ", ".join(f"{k} {v['count']}/{v['checked']}" for k, v in ind.items()))
    flags = s.get("flags", {})
    if flags.get("gradient_masking"):
        err_console.print("[bold yellow]warning:[/] possible gradient masking; these robust accuracies may be "
                          "overestimates", markup=True)
    for msg in s.get("flag_messages", []):
        ctx.notice(msg)
    checked = [k for k, v in flags.items() if v is False and k != "gradient_masking"]
    if checked and not flags.get("gradient_masking"):
        ctx.print(f"gradient-masking checks passed: {', '.join(checked)}")
