"""``lcnn-audit finetune``: train or fine-tune with curvature penalties (issue #7)."""

from pathlib import Path

import typer

from ..training.config import AdversarialTraining, PenaltyConfig, TrainConfig
from . import app
from . import options as o
from .common import Ctx, DataArgs, ModelArgs, OutputArgs, command, console, err_console, parse_float_list, styled
from .options import ADVERSARIAL as ADV
from .options import PENALTIES as PEN
from .options import TRAIN
from .progress import progress_display
from .render import fmt


@app.command()
def finetune(
    checkpoint: o.Checkpoint = None,
    *,
    out: o.FinetuneOut,
    from_scratch: o.FromScratch = False,
    convert: o.ConvertFirst = False,
    run_dir: o.RunDir = None,
    resume: o.FinetuneResume = False,
    data: o.TrainingData = "demo",
    test_data_spec: o.TestData = None,
    data_root: o.DataRoot = None,
    download: o.Download = False,
    single_split: o.SingleSplit = False,
    n: o.N = None,
    eval_n: o.EvalN = TRAIN.eval_n,
    curvature_n: o.CurvatureN = TRAIN.curvature_n,
    seed: o.Seed = TRAIN.seed,
    batch_size: o.BatchSize = TRAIN.batch_size,
    device: o.Device = "auto",
    epochs: o.Epochs = TRAIN.epochs,
    optimizer: o.Optimizer = TRAIN.optimizer,
    lr: o.Lr = TRAIN.lr,
    momentum: o.Momentum = TRAIN.momentum,
    weight_decay: o.WeightDecay = TRAIN.weight_decay,
    schedule: o.Schedule = TRAIN.schedule,
    milestones: o.Milestones = None,
    lr_decay: o.LrDecay = TRAIN.lr_decay,
    augment: o.Augment = TRAIN.augment,
    lcnn: o.Lcnn = False,
    lambda_beta: o.PenaltyLambdaBeta = None,
    lambda_gamma: o.PenaltyLambdaGamma = None,
    gradreg: o.Gradreg = PEN.gradreg,
    cure: o.Cure = PEN.cure,
    cure_h: o.CureH = PEN.cure_h,
    cure_h_warmup: o.CureHWarmup = PEN.cure_h_warmup,
    jacobian: o.JacobianPenalty = PEN.jacobian,
    jacobian_probes: o.JacobianProbes = PEN.jacobian_probes,
    cross_lipschitz: o.CrossLipschitz = PEN.cross_lipschitz,
    cross_lipschitz_probes: o.CrossLipschitzProbes = PEN.cross_lipschitz_probes,
    adv_train: o.AdvTrain = None,
    adv_eps: o.AdvEps = ADV.eps,
    adv_steps: o.AdvTrainSteps = ADV.steps,
    adv_step_size: o.AdvStepSize = ADV.step_size,
    compile_kernels: o.Compile = False,
    checkpoint_opt: o.CheckpointOpt = None, arch: o.Arch = None, arch_kwargs: o.ArchKwargs = None,
    trust_checkpoint: o.TrustCheckpoint = False, normalize: o.Normalize = None, output_key: o.OutputKey = None,
    state_key: o.StateKey = None,
    json_path: o.Json = None, csv_path: o.Csv = None, quiet: o.Quiet = False, verbose: o.Verbose = False,
    threads: o.Threads = None,
) -> None:
    """Train or fine-tune a model with curvature penalties; checkpoints every epoch, exact --resume."""
    # --json/--csv are the training log here (no <json>.partial: --resume continues --run-dir)
    ctx = Ctx(OutputArgs(quiet=quiet, verbose=verbose),
              model=ModelArgs(checkpoint, checkpoint_opt, arch, arch_kwargs, trust_checkpoint, normalize, output_key,
                              state_key),
              data=DataArgs(data, data_root, "train", single_split, n, seed, batch_size, download, device),
              threads=threads)
    with command(ctx, locals(), check_outputs=False):
        _check_source(ctx, from_scratch)
        run_dir = _check_outputs(ctx, out, run_dir, json_path, csv_path, test_data_spec)
        ms = parse_float_list(milestones, "--milestones")
        from ..audits.finetune import lcnn_penalty_weights

        lambda_beta, lambda_gamma = lcnn_penalty_weights(lcnn, lambda_beta, lambda_gamma)
        config = TrainConfig(
            epochs=epochs, batch_size=batch_size, optimizer=optimizer, lr=lr, momentum=momentum,
            weight_decay=weight_decay, schedule=schedule, milestones=tuple(int(m) for m in ms) if ms else None,
            lr_decay=lr_decay, augment=augment,
            penalties=PenaltyConfig(lambda_beta=lambda_beta, lambda_gamma=lambda_gamma, gradreg=gradreg,
                                    cure=cure, cure_h=cure_h, cure_h_warmup=cure_h_warmup, jacobian=jacobian,
                                    jacobian_probes=jacobian_probes, cross_lipschitz=cross_lipschitz,
                                    cross_lipschitz_probes=cross_lipschitz_probes),
            adversarial=AdversarialTraining(adv_train.lower(), adv_eps, adv_steps, adv_step_size) if adv_train
            else None,
            curvature_n=curvature_n, eval_n=eval_n, seed=seed)
        _finetune(ctx, config, out=out, from_scratch=from_scratch, convert=convert, run_dir=run_dir, resume=resume,
                  test_data=test_data_spec, json_path=json_path, csv_path=csv_path, compile_kernels=compile_kernels)


def _check_source(ctx: Ctx, from_scratch: bool) -> None:
    """CHECKPOINT to fine-tune, or --from-scratch with --arch: exactly one of the two."""
    from ..errors import UsageError

    ck = ctx.model.given
    if from_scratch and ck:
        raise UsageError("--from-scratch trains --arch from initialisation; drop CHECKPOINT or --from-scratch")
    if from_scratch and not ctx.model.arch:
        raise UsageError("--from-scratch needs --arch (e.g. --arch small_cnn --arch-kwargs width=16)")
    if not from_scratch and not ck:
        raise UsageError("no checkpoint given: pass CHECKPOINT to fine-tune, or --from-scratch --arch NAME")


def _check_outputs(ctx: Ctx, out: Path, run_dir: Path | None, json_path: Path | None, csv_path: Path | None,
                   test_data: str | None) -> Path:
    """Check --out, --json, --csv and the run folder before anything runs; return the run folder."""
    from ..audits.convert import check_model_path

    check_model_path(out, "--out")
    run_dir = run_dir or out.with_name(out.stem + ".run")
    ctx.check_outputs({"--out": out, "--json": json_path, "--csv": csv_path},
                      {"--data": ctx.data.data, "--test-data": test_data}, {"--run-dir": run_dir})
    return run_dir


def _load_splits(ctx: Ctx, test_data: str | None):
    """The training data (``--n`` of its train split) and the test data (all of ``--test-data``
    or --data's test split); refuses one set of images serving as both."""
    from ..data import load_data, same_samples
    from ..errors import UsageError

    d = ctx.data
    train_data = ctx.load_data("train")
    test = load_data(**{**d.kwargs("test", test_data), "n": None})
    if test_data is None and same_samples(train_data, test):
        raise UsageError(f"--data {d.data} has no separate train and test splits (both read {train_data.source}), "
                         "so test accuracy would be measured on the training images; pass --test-data (the same "
                         "path again if that is really what you want)")
    ctx.print(f"train split: {train_data.source} ({len(train_data)} samples); test split: {test.source} "
              f"({len(test)} samples)", markup=False)
    return train_data, test


def _finetune(ctx: Ctx, config, *, out: Path, from_scratch: bool, convert: bool, run_dir: Path, resume: bool,
              test_data: str | None, json_path: Path | None, csv_path: Path | None, compile_kernels: bool) -> None:
    from ..audits import finetune as audit

    validate_train_config(config)
    train_data, test = _load_splits(ctx, test_data)
    if from_scratch:
        from ..model.arch import parse_kwargs

        m = ctx.model
        source = audit.FromScratch(m.arch, parse_kwargs(m.arch_kwargs), m.normalize, dataset=ctx.data.data)
    else:
        source = ctx.load_model()

    def on_ready(model, report) -> None:
        if report is not None:
            ctx.print(f"converted to an LCNN: {report.counts()}")
        ctx.print(f"training {model.recipe.get('arch')} on {ctx.data.data} ({len(train_data)} samples) for "
                  f"{config.epochs} epoch(s); checkpoints and log in {run_dir}")

    with _live(ctx, config.epochs) as (on_step, on_epoch):
        # the command line owns the process: Ctrl-C stops cleanly, the global RNGs stay seeded
        result = audit.finetune(source, train_data, test, config, convert=convert, device=ctx.data.device,
                                checkpoint=None if from_scratch else str(ctx.model.given), output=out,
                                run_dir=run_dir, resume=resume, on_ready=on_ready, on_step=on_step,
                                on_epoch=on_epoch, handle_sigint=True, seed_global_rngs=True,
                                compile_kernels=compile_kernels)
    if compile_kernels and result.summary.get("kernels", "").startswith("eager"):
        ctx.notice(result.summary["kernels"])
    _write_log(result, json_path, csv_path, audit.save_epochs_csv)
    if not result.complete:
        err_console.print(styled("[yellow]interrupted:[/] checkpoint saved in {}; rerun the same command with "
                                 "--resume to continue", run_dir), markup=True)
        raise typer.Exit(130)
    console.print(f"wrote {out}")
    from ..model.recipe import reload_hint

    hint = reload_hint(result.config["recipe"].get("arch", ""), out)
    if hint:
        ctx.notice(hint)


def _write_log(result, json_path: Path | None, csv_path: Path | None, save_csv) -> None:
    """--json (the training log) and --csv (one row per epoch), never replacing a complete one."""
    from .common import write_result

    if json_path:
        console.print(f"wrote {write_result(json_path, result.save_json, result.complete)}")
    if csv_path:
        console.print(f"wrote {write_result(csv_path, lambda p: save_csv(result, p), result.complete)}")


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
        """Progress for ``epochs`` epochs, quiet with ``ctx``'s --quiet."""
        self.ctx, self.epochs = ctx, epochs
        self.epoch = None

    def __enter__(self):
        self._cm = progress_display("epoch", err_console, quiet=self.ctx.out.quiet, unit="steps")
        self.bar = self._cm.__enter__()

        def on_step(s) -> None:
            if s.epoch != self.epoch:
                self.epoch = s.epoch
                self.bar.reset(f"epoch {s.epoch}/{self.epochs}")
            self.bar(s.step, s.steps, info=f"loss {s.loss:.4f}  objective {s.objective:.4f}  lr {s.lr:.3g}")

        def on_epoch(rec: dict) -> None:
            if not self.ctx.out.quiet:
                err_console.print(epoch_line(rec, self.epochs), highlight=False)

        return on_step, on_epoch

    def __exit__(self, *exc):
        self._cm.__exit__(*exc)
        return False
