"""``lcnn-audit attack``: robust accuracy under PGD, FGSM, DeepFool, C&W and AutoAttack."""

from pathlib import Path

from rich.table import Table

from ..attacks.options import AttackOptions
from ..formatting import eps_text
from . import app
from . import options as o
from .common import Ctx, _is_main_rank, command, err_console
from .curvature import check_image_dir
from .options import ATTACK as A
from .render import fmt


def eps_label(eps: float, norm: str) -> str:
    """``eps`` as the table shows it (fractions of 255 for linf)."""
    return eps_text(eps, norm, with_value=True)


@app.command()
def attack(
    checkpoint: o.Checkpoint = None,
    attack: o.Attacks = o.comma(A.attacks),
    norm: o.Norms = o.comma(A.norms),
    eps: o.Eps = None,
    steps: o.Steps = A.steps,
    restarts: o.Restarts = A.restarts,
    step_size: o.StepSize = A.step_size,
    step_rule: o.StepRule = A.step_rule,
    random_start: o.RandomStart = A.random_start,
    loss: o.Loss = A.loss,
    masking_checks: o.MaskingChecks = A.masking_checks,
    eot: o.Eot = A.eot,
    bpda: o.Bpda = None,
    auto_margin: o.AutoMargin = A.auto_margin,
    check_every: o.CheckEvery = A.check_every,
    square_queries: o.SquareQueries = A.square_queries,
    version: o.Version = A.version,
    aa_attacks: o.AaAttacks = A.aa_attacks,
    aa_n_iter: o.AaNIter = A.aa_n_iter,
    aa_n_queries: o.AaNQueries = A.aa_n_queries,
    df_steps: o.DfSteps = A.df_steps,
    overshoot: o.Overshoot = A.overshoot,
    candidates: o.Candidates = A.candidates,
    cw_steps: o.CwSteps = A.cw_steps,
    cw_search_steps: o.CwSearchSteps = A.cw_search_steps,
    cw_lr: o.CwLr = A.cw_lr,
    cw_confidence: o.CwConfidence = A.cw_confidence,
    cw_initial_const: o.CwInitialConst = A.cw_initial_const,
    plot: o.AttackPlot = None,
    save_adv: o.SaveAdv = None,
    examples: o.AttackExamples = None,
    save_images: o.AttackSaveImages = None,
    checkpoint_opt: o.CheckpointOpt = None, arch: o.Arch = None, arch_kwargs: o.ArchKwargs = None,
    trust_checkpoint: o.TrustCheckpoint = False, normalize: o.Normalize = None, output_key: o.OutputKey = None,
    state_key: o.StateKey = None,
    data: o.Data = "demo", data_root: o.DataRoot = None, split: o.Split = "test", single_split: o.SingleSplit = False,
    n: o.N = None, seed: o.Seed = A.seed, batch_size: o.BatchSize = 128, download: o.Download = False,
    device: o.Device = "auto",
    json_path: o.Json = None, csv_path: o.Csv = None, quiet: o.Quiet = False, verbose: o.Verbose = False,
    resume: o.Resume = False, threads: o.Threads = None,
) -> None:
    """Robust accuracy against eps with per-sample worst case, 95 % intervals and gradient-masking flags."""
    ctx = Ctx.of(locals())
    with command(ctx, locals()):
        opts = AttackOptions.from_cli(
            attack=attack, norm=norm, eps=eps, step_rule=step_rule, aa_attacks=aa_attacks, bpda=bpda, steps=steps,
            step_size=step_size, restarts=restarts, random_start=random_start, loss=loss, version=version,
            aa_n_iter=aa_n_iter, aa_n_queries=aa_n_queries, df_steps=df_steps, overshoot=overshoot,
            candidates=candidates, cw_steps=cw_steps, cw_search_steps=cw_search_steps, cw_lr=cw_lr,
            cw_confidence=cw_confidence, cw_initial_const=cw_initial_const, masking_checks=masking_checks,
            seed=seed, eot=eot, auto_margin=auto_margin, check_every=check_every, square_queries=square_queries)
        _attack(ctx, opts.validate(), plot=plot, save_adv=save_adv, examples=examples, save_images=save_images)


def _attack(ctx: Ctx, opts: AttackOptions, *, plot: Path | None, save_adv: Path | None, examples: int | None,
            save_images: Path | None) -> None:
    from ..attacks.plot import check_plot_path
    from ..audits import attack as audit

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
        result = audit.run(model, data, opts, batch_size=ctx.batch_size, progress=bar, save_adv=save_adv,
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
