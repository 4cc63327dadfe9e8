"""``lcnn-audit finetune``: train or fine-tune with curvature penalties (issue #7)."""

from pathlib import Path
from typing import Annotated

import typer

from . import app
from .common import (
    SINGLE_SPLIT_HELP,
    VERBOSE_HELP,
    Ctx,
    command_options,
    console,
    err_console,
    parse_float_list,
    styled,
)
from .progress import configure_logging, progress_display
from .render import fmt

T, P, A, D, R = "Training", "Penalties", "Adversarial training", "Data", "Run"


def _opt(*names, help: str, panel: str, **kw):
    return typer.Option(*names, help=help, rich_help_panel=panel, **kw)


@app.command()
@command_options("model")
def finetune(
    ctx: Ctx,
    out: Annotated[Path, _opt("--out", "-o", panel=R, help="Write the trained model here (.safetensors with its "
                                                         "recipe; loads in every command).")],
    from_scratch: Annotated[bool, _opt("--from-scratch", panel=R, help="Train --arch from initialisation instead "
                                                                        "of fine-tuning CHECKPOINT.")] = False,
    convert: Annotated[bool, _opt("--convert", panel=R, help="Convert to an LCNN first (centered softplus, "
                                                            "γ-Lipschitz batch norm, spectral norms; see lcnn-audit "
                                                            "convert). With --from-scratch: train the LCNN "
                                                            "architecture.")] = False,
    run_dir: Annotated[Path | None, _opt("--run-dir", panel=R, help="Checkpoint and JSON log folder "
                                                                     "(default: OUT without suffix + '.run').")] = None,
    resume: Annotated[bool, _opt("--resume", panel=R, help="Continue the run in --run-dir exactly where it "
                                                          "stopped (same options required).")] = False,
    json_path: Annotated[Path | None, _opt("--json", panel=R, help="Also write the final log JSON here.")] = None,
    csv_path: Annotated[Path | None, _opt("--csv", panel=R, help="Also write one row per epoch as CSV (losses, "
                                                               "penalty terms, accuracies, mean curvature).")] = None,
    quiet: Annotated[bool, _opt("--quiet", "-q", panel=R, help="Print only the result paths.")] = False,
    verbose: Annotated[bool, _opt("--verbose", "-v", panel=R, help=VERBOSE_HELP)] = False,
    data: Annotated[str, _opt("--data", panel=D, help="Training data (its train split; test accuracy and curvature "
                                                      "use its test split): demo, fashion-mnist, cifar10, ... or a "
                                                      ".pt/.npz file.")] = "demo",
    test_data_spec: Annotated[str | None, _opt("--test-data", panel=D, help="Evaluate on this data instead of "
                                                                          "--data's test split; needed when --data "
                                                                          "has no splits (a tensor file, or a "
                                                                          "--single-split folder).")] = None,
    data_root: Annotated[Path | None, _opt("--data-root", panel=D, help="Where named datasets live.")] = None,
    download: Annotated[bool, _opt("--download", panel=D, help="Download a named dataset if missing.")] = False,
    single_split: Annotated[bool, _opt("--single-split", panel=D, help=SINGLE_SPLIT_HELP)] = False,
    n: Annotated[int | None, _opt("--n", "--num-samples", panel=D, help="Train on a seeded subset of N training "
                                                                        "samples (default: all).")] = None,
    eval_n: Annotated[int | None, _opt("--eval-n", panel=D, help="Test accuracy on a seeded subset of N test "
                                                                 "samples (default: all).")] = None,
    curvature_n: Annotated[int, _opt("--curvature-n", panel=D, help="Test samples audited for mean curvature after "
                                                                    "every epoch (0: off).", min=0)] = 128,
    seed: Annotated[int, _opt("--seed", panel=D, help="Seed for initialisation, order, augmentation, attacks.")] = 0,
    batch_size: Annotated[int, _opt("--batch-size", panel=D, help="Training batch size.", min=2)] = 128,
    device: Annotated[str, _opt("--device", panel=D, help="auto, cpu, cuda or cuda:K.")] = "auto",
    epochs: Annotated[int, _opt("--epochs", panel=T, help="Epochs to train.", min=0)] = 10,
    optimizer: Annotated[str, _opt("--optimizer", panel=T, help="sgd (with momentum), adam or adamw.")] = "sgd",
    lr: Annotated[float | None, _opt("--lr", panel=T, help="Learning rate (default 0.1 with --from-scratch, "
                                                           "0.01 when fine-tuning; as TrainConfig(lr=None) in "
                                                           "Python).")] = None,
    momentum: Annotated[float, _opt("--momentum", panel=T, help="SGD momentum.")] = 0.9,
    weight_decay: Annotated[float, _opt("--weight-decay", panel=T, help="Weight decay (not applied to LCNN β, "
                                                                        "γ).")] = 5e-4,
    schedule: Annotated[str, _opt("--schedule", panel=T, help="multistep, cosine or constant (applied per "
                                                              "step).")] = "multistep",
    milestones: Annotated[str | None, _opt("--milestones", panel=T, help="Epochs at which multistep multiplies the "
                                                                         "lr by --lr-decay (default: 75%,87.5% of "
                                                                         "--epochs).")] = None,
    lr_decay: Annotated[float, _opt("--lr-decay", panel=T, help="Multistep decay factor.")] = 0.1,
    augment: Annotated[str, _opt("--augment", panel=T, help="auto (crop+flip for 32x32 RGB, none otherwise), none, "
                                                           "flip, crop or crop-flip.")] = "auto",
    lcnn: Annotated[bool, _opt("--lcnn", panel=P, help="LCNN penalty λβ·Σβ + λγ·Σlog γ with the paper's "
                                                       "λβ=1e-4, λγ=1e-5 (needs a converted model).")] = False,
    lambda_beta: Annotated[float | None, _opt("--lambda-beta", panel=P, help="λβ of the LCNN penalty.")] = None,
    lambda_gamma: Annotated[float | None, _opt("--lambda-gamma", panel=P, help="λγ of the LCNN penalty.")] = None,
    gradreg: Annotated[float, _opt("--gradreg", panel=P, help="λ of GradReg λ‖∇ₓℓ‖² (paper: 1e-3).")] = 0.0,
    cure: Annotated[float, _opt("--cure", panel=P, help="λ of CURE λ‖∇ℓ(x+hz)−∇ℓ(x)‖² (CURE paper: 4).")] = 0.0,
    cure_h: Annotated[float, _opt("--cure-h", panel=P, help="CURE step h (L2, [0,1] pixels).")] = 0.5,
    cure_h_warmup: Annotated[float, _opt("--cure-h-warmup", panel=P, help="Epochs over which h ramps up from "
                                                                         "0.")] = 0.0,
    jacobian: Annotated[float, _opt("--jacobian", panel=P, help="λ of Jacobian regularisation λ‖J‖_F².")] = 0.0,
    jacobian_probes: Annotated[int, _opt("--jacobian-probes", panel=P, help="Random projections (0: exact).",
                                         min=0)] = 1,
    cross_lipschitz: Annotated[float, _opt("--cross-lipschitz", panel=P, help="λ of cross-Lipschitz "
                                                                             "regularisation λν².")] = 0.0,
    cross_lipschitz_probes: Annotated[int, _opt("--cross-lipschitz-probes", panel=P,
                                                help="Random projections (0: exact).", min=0)] = 1,
    adv_train: Annotated[str | None, _opt("--adv-train", panel=A, help="PGD adversarial training in this norm: "
                                                                      "l2 or linf.")] = None,
    adv_eps: Annotated[float, _opt("--adv-eps", panel=A, help="Attack radius (paper: L2 0.1).")] = 0.1,
    adv_steps: Annotated[int, _opt("--adv-steps", panel=A, help="PGD steps (paper: 3).")] = 3,
    adv_step_size: Annotated[float | None, _opt("--adv-step-size", panel=A, help="PGD step size (default: the "
                                                                                  "attack's).")] = None,
    compile_kernels: Annotated[bool, _opt("--compile", panel=T, help=(
        "Run the centred-softplus layers on torch.compile'd kernels (about a minute to compile once; "
        "falls back to eager, with a note, where compiling fails)."))] = False,
) -> None:
    """Train or fine-tune a model with curvature penalties; checkpoints every epoch, exact --resume."""
    from ..audits.convert import check_model_path
    from ..audits.finetune import FromScratch, finetune, lcnn_penalty_weights, save_epochs_csv
    from ..errors import UsageError
    from ..penalties import PenaltyConfig
    from ..training import AdversarialTraining, TrainConfig

    ck = ctx.opts.get("checkpoint") or ctx.opts.get("checkpoint_opt")
    if from_scratch and ck:
        raise UsageError("--from-scratch trains --arch from initialisation; drop CHECKPOINT or --from-scratch")
    if from_scratch and not ctx.arch:
        raise UsageError("--from-scratch needs --arch (e.g. --arch small_cnn --arch-kwargs width=16)")
    if not from_scratch and not ck:
        raise UsageError("no checkpoint given: pass CHECKPOINT to fine-tune, or --from-scratch --arch NAME")
    check_model_path(out, "--out")
    ctx.check_outputs({"--out": out, "--json": json_path, "--csv": csv_path},
                      {"--data": data, "--test-data": test_data_spec},
                      {"--run-dir": run_dir or out.with_name(out.stem + ".run")})
    ms = parse_float_list(milestones, "--milestones")
    lambda_beta, lambda_gamma = lcnn_penalty_weights(lcnn, lambda_beta, lambda_gamma)
    config = TrainConfig(
        epochs=epochs, batch_size=batch_size, optimizer=optimizer, lr=lr, momentum=momentum,
        weight_decay=weight_decay, schedule=schedule, milestones=tuple(int(m) for m in ms) if ms else None,
        lr_decay=lr_decay, augment=augment,
        penalties=PenaltyConfig(lambda_beta=lambda_beta, lambda_gamma=lambda_gamma, gradreg=gradreg,
                                cure=cure, cure_h=cure_h, cure_h_warmup=cure_h_warmup, jacobian=jacobian,
                                jacobian_probes=jacobian_probes, cross_lipschitz=cross_lipschitz,
                                cross_lipschitz_probes=cross_lipschitz_probes),
        adversarial=AdversarialTraining(adv_train.lower(), adv_eps, adv_steps, adv_step_size) if adv_train else None,
        curvature_n=curvature_n, eval_n=eval_n, seed=seed)
    validate_train_config(config)
    ctx.opts.update(data=data, device=device, quiet=quiet)
    configure_logging(verbose, err_console)
    from ..data import load_data, same_samples

    train_data = load_data(data, "train", n=n, seed=seed, data_root=data_root, download=download,
                           single_split=single_split)
    test_data = load_data(test_data_spec or data, "test", data_root=data_root, download=download,
                          single_split=single_split)
    if test_data_spec is None and same_samples(train_data, test_data):
        raise UsageError(f"--data {data} has no separate train and test splits (both read {train_data.source}), "
                         "so test accuracy would be measured on the training images; pass --test-data (the same "
                         "path again if that is really what you want)")
    ctx.print(f"train split: {train_data.source} ({len(train_data)} samples); test split: {test_data.source} "
              f"({len(test_data)} samples)", markup=False)
    if from_scratch:
        from ..model.arch import parse_kwargs

        source = FromScratch(ctx.arch, parse_kwargs(ctx.arch_kwargs), ctx.normalize, dataset=data)
    else:
        source = ctx.load_model()
    run_dir = run_dir or out.with_name(out.stem + ".run")

    def on_ready(model, report) -> None:
        if report is not None:
            ctx.print(f"converted to an LCNN: {report.counts()}")
        ctx.print(f"training {model.recipe.get('arch')} on {data} ({len(train_data)} samples) for {epochs} "
                  f"epoch(s); checkpoints and log in {run_dir}")

    with _live(ctx, epochs) as (on_step, on_epoch):
        # the command line owns the process: Ctrl-C stops cleanly, the global RNGs stay seeded
        result = finetune(source, train_data, test_data, config, convert=convert, device=device,
                          checkpoint=None if from_scratch else str(ck), output=out, run_dir=run_dir, resume=resume,
                          on_ready=on_ready, on_step=on_step, on_epoch=on_epoch, handle_sigint=True,
                          seed_global_rngs=True, compile_kernels=compile_kernels)
    if compile_kernels and result.summary.get("kernels", "").startswith("eager"):
        ctx.notice(result.summary["kernels"])
    from .common import write_result

    if json_path:
        console.print(f"wrote {write_result(json_path, result.save_json, result.complete)}")
    if csv_path:
        console.print(f"wrote {write_result(csv_path, lambda p: save_epochs_csv(result, p), result.complete)}")
    if not result.complete:
        err_console.print(styled("[yellow]interrupted:[/] checkpoint saved in {}; rerun the same command with "
                                 "--resume to continue", run_dir), markup=True)
        raise typer.Exit(130)
    console.print(f"wrote {out}")
    from ..model.recipe import reload_hint

    hint = reload_hint(result.config["recipe"].get("arch", ""), out)
    if hint:
        ctx.notice(hint)


#: TrainConfig fields whose flag is not ``--field-name``
_TRAIN_FLAGS = {"adversarial.norm": "--adv-train", "adversarial.eps": "--adv-eps", "adversarial.steps": "--adv-steps",
                "adversarial.step_size": "--adv-step-size"}


def train_flag(name: str) -> str:
    """A :class:`~lcnn_audit.training.TrainConfig` field as its ``finetune`` flag:
    ``lr`` -> ``--lr``, ``penalties.cure_h`` -> ``--cure-h``, ``adversarial.eps`` -> ``--adv-eps``."""
    from ..options import flag_label

    return _TRAIN_FLAGS.get(name) or flag_label(name.removeprefix("penalties."))


def validate_train_config(config) -> None:
    """``config.validate()``, its problems named by the flags of this command."""
    from ..errors import UsageError
    from ..options import OptionsError

    try:
        config.validate()
    except OptionsError as err:
        raise UsageError(err.render(train_flag)) from None


def epoch_line(rec: dict, epochs: int) -> str:
    """One line per epoch: losses, each penalty term, accuracies, mean geometry, time."""
    parts = [f"epoch {rec['epoch']}/{epochs}", f"loss {fmt(rec['train_loss'])}"]
    if rec.get("penalties"):
        parts.append("objective " + fmt(rec["objective"]) + " ("
                     + ", ".join(f"{k} {fmt(v)}" for k, v in rec["penalties"].items()) + ")")
    parts.append(f"train acc {100 * rec['train_accuracy']:.2f}%")
    if "test_accuracy" in rec:
        parts.append(f"test acc {100 * rec['test_accuracy']:.2f}%")
    if "curvature" in rec:
        parts.append(f"curvature {fmt(rec['curvature'])} (‖∇f‖ {fmt(rec['grad_norm'])}, "
                     f"‖∇²f‖ {fmt(rec['hessian_norm'])})")
    parts.append(f"lr {fmt(rec['lr'])}")
    parts.append(f"{rec['seconds']:.1f}s")
    return "  ".join(parts)


class _live:
    """Progress over the steps of each epoch (a bar on a terminal, heartbeat lines in a log),
    reset at every epoch so that its rate and ETA are the epoch's; one printed line per epoch."""

    def __init__(self, ctx: Ctx, epochs: int):
        self.ctx, self.epochs = ctx, epochs
        self.epoch = None

    def __enter__(self):
        self._cm = progress_display("epoch", err_console, quiet=self.ctx.opts.get("quiet", False), unit="steps")
        self.bar = self._cm.__enter__()

        def on_step(s) -> None:
            if s.epoch != self.epoch:
                self.epoch = s.epoch
                self.bar.reset(f"epoch {s.epoch}/{self.epochs}")
            self.bar(s.step, s.steps, info=f"loss {s.loss:.4f}  objective {s.objective:.4f}  lr {s.lr:.3g}")

        def on_epoch(rec: dict) -> None:
            if not self.ctx.opts.get("quiet", False):
                err_console.print(epoch_line(rec, self.epochs), highlight=False)

        return on_step, on_epoch

    def __exit__(self, *exc):
        self._cm.__exit__(*exc)
        return False
