"""The training loop: training and fine-tuning with curvature penalties, checkpoints and exact resume.

``train(model, train_data, test_data, config, ...)`` trains an :class:`AuditModel` in place
and returns an :class:`AuditResult` (command ``finetune``) whose ``summary["epochs"]``
holds one record per epoch: train loss, accuracy, each penalty term, the penalised
objective, test accuracy and loss, and the mean ‖∇f‖, ‖∇²f‖ and curvature on a fixed
test subset (``curvature_audit``), plus the seconds the epoch's training took.

Objective per batch (see :mod:`lcnn_audit.penalties`)::

    mean CE(x', y) + Σ_penalties term,   x' = x, or PGD(x) under adversarial training

Determinism and resume. Every random draw of the loop is a pure function of the seed and
its position: the epoch's sample order (seed, epoch), the augmentation (seed, epoch,
step), PGD starts and penalty projections (seed, epoch, sample index). A checkpoint
(``run_dir/checkpoint.pt``, written atomically after every epoch and on interruption)
holds the model, optimizer and scheduler states, the global RNG states (torch CPU, CUDA,
python ``random``, numpy, for user code that draws from them), the epoch and step, the
running epoch sums, the history and the recipe. Resuming from it, even mid-epoch, gives
bit-identical weights to an uninterrupted run on CPU; on CUDA this holds with
``deterministic=True`` (cuDNN deterministic kernels) up to the atomics some CUDA kernels
still use.

Global state. By default ``train`` leaves the caller's process as it found it: it installs
no signal handler, and the global RNGs it seeds (or restores, on resume) for the run are set
back to the caller's states when it returns. ``seed_global_rngs=True`` leaves them seeded
and advanced (what scripts that draw from them afterwards expect); ``handle_sigint=True``
(``lcnn-audit finetune``) turns Ctrl-C into a clean stop: the current step finishes, a
checkpoint is written and ``train`` returns an incomplete result; a second Ctrl-C aborts at
once. Without the handler, a stop is requested through ``stop`` (a :class:`StopFlag`) or by
a ``KeyboardInterrupt`` raised in ``on_step`` (after a complete step); one raised anywhere
else propagates as usual, and the last epoch's checkpoint is what a ``resume`` continues
from. The library never prints; progress goes to the ``on_step`` / ``on_epoch`` callbacks.

Learning rate: ``TrainConfig.lr=None`` is 0.1 with ``from_scratch=True`` and 0.01 otherwise
(:func:`lcnn_audit.training.config.effective_lr`).

Reference settings (LCNN paper §5): SGD, momentum 0.9, lr 0.1 decayed ×0.1 at 75 % and
87.5 % of training (epochs 150 and 175 of 200), weight decay 5e-4. β and γ of LCNN layers
are excluded from weight decay (they carry their own penalty, eq. 5).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..data import ImageData
from ..errors import ModelError, UsageError
from ..geometry.differentiable import twice_differentiable
from ..loading import AuditModel, save_model, unwrap
from ..model import model_device, preserve_training_flags
from ..penalties import lcnn_parameters
from ..reproducibility import StopFlag, deterministic_kernels, rng_state, seed_everything, set_rng_state, sigint_to
from ..results import AuditResult, environment
from ..runner import fingerprint
from .checkpoint import CHECKPOINT_NAME, LOG_NAME, _resume_key, load_resume_state, write_train_checkpoint
from .config import TrainConfig
from .init import output_recipe
from .steps import _mix, augment, make_optimizer, make_scheduler, resolve_augment, train_step


@dataclass
class StepInfo:
    """What ``on_step`` receives after every optimisation step."""

    epoch: int  # 1-based
    step: int  # 1-based within the epoch
    steps: int
    loss: float  # running mean CE of this epoch
    objective: float  # running mean penalised objective of this epoch
    lr: float


def evaluate(model: nn.Module, data: ImageData, batch_size: int = 512) -> dict[str, float]:
    """Accuracy and mean cross-entropy in eval mode (every submodule's mode is restored)."""
    device = model_device(model)
    correct, loss, n = 0, 0.0, 0
    with preserve_training_flags(model), torch.no_grad():
        model.eval()
        for b in data.batches(batch_size):
            logits = model(b.x.to(device))
            y = b.y.to(device)
            correct += int((logits.argmax(1) == y).sum())
            loss += float(torch.nn.functional.cross_entropy(logits.double(), y, reduction="sum"))
            n += len(y)
    return {"accuracy": correct / max(n, 1), "loss": loss / max(n, 1)}


def subset(data: ImageData, n: int | None, seed: int) -> ImageData:
    """A fixed, seeded subset of ``n`` samples (all of them when ``n`` is None or too big)."""
    if n is None or n >= len(data):
        return data
    gen = torch.Generator().manual_seed(seed)
    pick = torch.randperm(len(data), generator=gen)[:n].sort().values
    return dataclasses.replace(data, indices=data.indices[pick])


@dataclass
class _Accum:
    """Running sums of the current epoch (saved in mid-epoch checkpoints)."""

    n: int = 0
    loss: float = 0.0
    objective: float = 0.0
    correct: int = 0
    terms: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    lr: float = 0.0  # the learning rate of the latest step

    def add(self, b: int, loss: float, objective: float, correct: int, terms: dict[str, float]) -> None:
        self.n += b
        self.loss += loss * b
        self.objective += objective * b
        self.correct += correct
        for k, v in terms.items():
            self.terms[k] = self.terms.get(k, 0.0) + v * b


def train(  # noqa: PLR0913 - the public API: data, config and keyword-only run controls
    model: AuditModel,
    train_data: ImageData,
    test_data: ImageData | None,
    config: TrainConfig,
    *,
    run_dir: str | Path | None = None,
    resume: bool = False,
    output: str | Path | None = None,
    run_config: dict | None = None,
    on_step: Callable[[StepInfo], None] | None = None,
    on_epoch: Callable[[dict], None] | None = None,
    stop: StopFlag | None = None,
    handle_sigint: bool = False,
    seed_global_rngs: bool = False,
    compile_kernels: bool = False,
    from_scratch: bool = False,
) -> AuditResult:
    """Train ``model`` in place; see the module docstring.

    ``run_dir`` holds ``checkpoint.pt`` and ``log.json`` (both written atomically every
    epoch); without it nothing is written and the run cannot be resumed. ``resume``
    continues from ``run_dir``'s checkpoint (starting fresh if there is none); a run with
    different options is refused. ``output``: at the end, the weights are saved there as
    safetensors with the recipe embedded (``save_model``), loadable by every command.
    ``run_config`` is extra JSON-able context recorded in the log and in the resume check.
    ``compile_kernels`` runs the centred softplus layers on ``torch.compile``d kernels
    (:mod:`lcnn_audit.layers.softplus_kernels`) when they compile and agree with the eager
    ones; ``summary["kernels"]`` says which ran (and why eager, when compiling failed).
    ``from_scratch`` picks the learning rate when ``config.lr`` is None (0.1, else the
    fine-tuning 0.01). ``handle_sigint`` and ``seed_global_rngs``: see the module docstring.
    """
    from ..coerce import as_image_data  # noqa: PLC0415

    train_data = as_image_data(train_data)
    test_data = as_image_data(test_data) if test_data is not None else None
    config = config.with_lr(from_scratch)
    config.validate()
    recipe = output_recipe(model) if output is not None else dict(getattr(model, "recipe", {}) or {})
    _preflight(model, config, train_data)
    device = model_device(model)
    bs = min(config.batch_size, len(train_data))
    steps_per_epoch = len(train_data) // bs + (1 if len(train_data) % bs >= 2 else 0)
    aug_mode = resolve_augment(config.augment, train_data.input_shape)
    optimizer = make_optimizer(model, config)
    scheduler = make_scheduler(optimizer, config, steps_per_epoch)
    eval_data, curv_data = _eval_subsets(config, train_data, test_data)
    cfg = _run_config(config, train_data, test_data, recipe, run_config, aug_mode=aug_mode,
                      steps_per_epoch=steps_per_epoch, batch_size=bs)
    fp = fingerprint(_resume_key(cfg))
    ck_path, log_path = _run_paths(run_dir)
    stop = stop or StopFlag()
    if on_step is not None and not handle_sigint:
        on_step = _stop_on_interrupt(on_step, stop)

    with _global_rngs(keep=seed_global_rngs):
        epoch, step, history, accum, complete = _start_state(ck_path, resume, fp, cfg, model=model,
                                                             optimizer=optimizer, scheduler=scheduler, config=config)

        def save_checkpoint(done: bool) -> None:
            if ck_path is None:
                return
            write_train_checkpoint(ck_path, {
                "fingerprint": fp, "config": cfg, "recipe": cfg["recipe"], "epoch": epoch, "step": step,
                "complete": done, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "rng": rng_state(), "accum": asdict(accum), "history": history})

        t_start = time.perf_counter()
        softplus_layers, kernels_used = _use_kernels(model, device, compile_kernels)

        def result(done: bool) -> AuditResult:
            return _result(done, history=history, kernels_used=kernels_used, config=config, output=output,
                           ck_path=ck_path, cfg=cfg, device=device, t_start=t_start)

        guard = sigint_to(stop) if handle_sigint else contextlib.nullcontext()
        try:
            # gradient penalties differentiate ∇ₓℓ: SDPA on its math kernel, clamp-form hard activations
            twice = twice_differentiable() if config.penalties.needs_input_grad else contextlib.nullcontext()
            with guard, deterministic_kernels(config.deterministic and device.type == "cuda"), twice:
                while not complete and epoch < config.epochs:
                    stopped = _run_epoch(model, train_data, config, optimizer=optimizer, scheduler=scheduler,
                                         epoch=epoch, start_step=step, accum=accum, bs=bs, steps=steps_per_epoch,
                                         aug_mode=aug_mode, device=device, on_step=on_step, stop=stop)
                    if stopped is not None:
                        step = stopped
                        save_checkpoint(False)
                        _write_log(log_path, result(False))
                        return result(False)
                    record = _epoch_record(model, config, epoch, accum, eval_data=eval_data, curv_data=curv_data)
                    history.append(record)
                    epoch, step, accum = epoch + 1, 0, _Accum()
                    complete = epoch >= config.epochs
                    save_checkpoint(complete)
                    _write_log(log_path, result(complete))
                    if on_epoch:
                        on_epoch(record)
                    if stop.requested and not complete:
                        return result(False)
                if not complete:  # epochs == 0: the untrained model is the result
                    complete = True
                    save_checkpoint(True)
        finally:
            model.eval()
            for m in softplus_layers:
                m.kernels = None
        if output is not None:
            _save_output(model, output, recipe)
    res = result(True)
    _write_log(log_path, res)
    return res


def _result(done: bool, *, history: list, kernels_used: str, config: TrainConfig, output, ck_path, cfg: dict,
            device, t_start: float) -> AuditResult:
    """The ``finetune`` result so far (``done``: the run is complete)."""
    summary = {"epochs": history, "final": history[-1] if history else None, "epochs_done": len(history),
               "kernels": kernels_used,
               "epochs_planned": config.epochs, "output": str(output) if output is not None and done else None,
               "checkpoint": str(ck_path) if ck_path else None}
    per_epoch = [h["seconds"] for h in history]
    timing = {"seconds": time.perf_counter() - t_start,
              "train_seconds_per_epoch": sum(per_epoch) / len(per_epoch) if per_epoch else float("nan")}
    return AuditResult(command="finetune", config=cfg, summary=summary, per_sample={}, timing=timing,
                       environment=environment(device), complete=done)


def _run_paths(run_dir: str | Path | None) -> tuple[Path | None, Path | None]:
    """``(checkpoint, log)`` paths in ``run_dir`` (None without one)."""
    run_dir = Path(run_dir) if run_dir is not None else None
    ck_path = run_dir / CHECKPOINT_NAME if run_dir else None
    log_path = run_dir / LOG_NAME if run_dir else None
    return ck_path, log_path


def _eval_subsets(config: TrainConfig, train_data: ImageData, test_data: ImageData | None):
    """``(eval_data, curv_data)``: the fixed-seed subsets evaluated after every epoch (None when off)."""
    eval_data = subset(test_data, config.eval_n, config.seed) if test_data is not None else None
    curv_source = test_data if test_data is not None else train_data
    curv_data = subset(curv_source, config.curvature_n, config.seed + 1) if config.curvature_n else None
    return eval_data, curv_data


def _run_config(config: TrainConfig, train_data: ImageData, test_data: ImageData | None, recipe: dict,
                run_config: dict | None, *, aug_mode, steps_per_epoch: int, batch_size: int) -> dict:
    """The run's configuration in plain JSON types: the log, the checkpoint and the resume check."""
    cfg = {"train": config.to_dict(), "augment": aug_mode, "steps_per_epoch": steps_per_epoch,
           "batch_size": batch_size, "recipe": {k: v for k, v in recipe.items() if k != "kind"},
           "data": train_data.describe(), "test_data": test_data.describe() if test_data is not None else None,
           **(run_config or {})}
    return json.loads(json.dumps(cfg, default=str))


def _start_state(ck_path: Path | None, resume: bool, fp, cfg: dict, *, model, optimizer, scheduler,
                 config: TrainConfig):
    """``(epoch, step, history, accum, complete)`` from ``ck_path``'s checkpoint when resuming
    (restoring model, optimiser, scheduler and RNGs), else a fresh start with seeded RNGs."""
    if ck_path is not None and ck_path.exists():
        if not resume:
            raise UsageError(f"{ck_path} holds a checkpoint of an earlier run; pass --resume to continue it, or "
                             "delete it (or choose another run directory) to start over")
        ck = load_resume_state(ck_path, fp, cfg, model, optimizer=optimizer, scheduler=scheduler)
        set_rng_state(ck["rng"])
        return ck["epoch"], ck["step"], list(ck["history"]), _Accum(**ck["accum"]), bool(ck["complete"])
    seed_everything(config.seed)
    return 0, 0, [], _Accum(), False


def _preflight(model: nn.Module, config: TrainConfig, train_data: ImageData) -> None:
    """Refuse, before any work, what cannot train: the LCNN penalty on a model without LCNN
    layers, adversarial training without the attacks, fewer than two samples."""
    if config.penalties.active().get("lcnn"):
        softplus, bn = lcnn_parameters(model)
        if not softplus and not bn:
            raise ModelError("the LCNN penalty needs CenteredSoftplus / LipschitzBatchNorm layers and the model "
                             "has none; convert it first (lcnn-audit convert) or drop the LCNN penalty")
    if config.adversarial is not None:
        from ..attacks import PGD  # noqa: F401,PLC0415 - fail before training if attacks are unavailable
    if len(train_data) < 2:
        raise UsageError(f"training needs at least 2 samples, got {len(train_data)}")


def _use_kernels(model: nn.Module, device: torch.device, compile_kernels: bool) -> tuple[list, str]:
    """The model's centred softplus layers, set to the compiled kernels when asked and
    available; and which kernels run (``eager``, ``compiled`` or ``eager: reason``)."""
    softplus_layers = lcnn_parameters(model)[0]
    kernels_used = "eager"
    if compile_kernels and softplus_layers:
        from ..layers.softplus_kernels import compiled_kernels  # noqa: PLC0415

        kernels, reason = compiled_kernels(device)
        kernels_used = "compiled" if kernels is not None else f"eager: {reason}"
        for m in softplus_layers:
            m.kernels = kernels
    return softplus_layers, kernels_used


def _save_output(model: nn.Module, output: str | Path, recipe: dict) -> None:
    from ..layers.spectral import refit_spectral_norms  # noqa: PLC0415

    # one power step per training forward only tracks σ; the saved layers get the converged pair
    refit_spectral_norms(unwrap(model))
    save_model(unwrap(model), output, recipe)


@contextlib.contextmanager
def _global_rngs(keep: bool) -> Iterator[None]:
    """Unless ``keep``, give the global RNGs (torch, CUDA, python, numpy) back in the state
    the caller left them, however the body ends."""
    saved = None if keep else rng_state()
    try:
        yield
    finally:
        if saved is not None:
            set_rng_state(saved)


def _stop_on_interrupt(on_step: Callable[[StepInfo], None], stop: StopFlag) -> Callable[[StepInfo], None]:
    """``on_step`` with a KeyboardInterrupt it raises (after a complete step: a safe place
    to stop) turned into a stop request; a second one, once a stop is requested, propagates."""

    def call(info: StepInfo) -> None:
        try:
            on_step(info)
        except KeyboardInterrupt:
            if stop.requested:
                raise
            stop.request()

    return call


def _run_epoch(model, data, config, *, optimizer, scheduler, epoch, start_step, accum,  # noqa: PLR0913 - one epoch of train()'s state
               bs, steps, aug_mode, device, on_step, stop) -> int | None:
    """Run steps ``start_step..steps-1`` of ``epoch``; return the next step if stopped early, else None."""
    perm = torch.randperm(len(data), generator=torch.Generator().manual_seed(_mix(config.seed, epoch, 0)))
    attack = None
    if config.adversarial is not None:
        from ..attacks import PGD  # noqa: PLC0415

        adv = config.adversarial
        attack = PGD(norm=adv.norm, eps=adv.eps, steps=adv.steps, step_size=adv.step_size, restarts=1,
                     random_start=True, seed=_mix(config.seed, epoch, 2) % 2**31, start="random", step_rule="fixed")
    pen_seed = _mix(config.seed, epoch, 3) % 2**31
    track_input = config.penalties.needs_input_grad
    for s in range(start_step, steps):
        t0 = time.perf_counter()
        batch = data.get(perm[s * bs:(s + 1) * bs])
        x = augment(batch.x, aug_mode, torch.Generator().manual_seed(_mix(config.seed, epoch, s, 1)))
        x, y, index = x.to(device), batch.y.to(device), batch.index.to(device)
        if attack is not None:
            model.eval()
            x = attack(model, x, y, index=index).detach()
        model.train()
        lr = optimizer.param_groups[0]["lr"]
        active = config.penalties.active(epoch + s / steps)
        pb, loss, total, terms = train_step(model, optimizer, x, y, index, active, seed=pen_seed,
                                            track_input=track_input, where=f"epoch {epoch + 1} step {s + 1}")
        scheduler.step()
        correct = int((pb.logits.detach().argmax(1) == y).sum())
        accum.add(len(y), float(loss.detach()), float(total.detach()), correct,
                  {k: float(v.detach()) for k, v in terms.items()})
        accum.lr = lr
        accum.seconds += time.perf_counter() - t0
        if on_step:
            on_step(StepInfo(epoch + 1, s + 1, steps, accum.loss / accum.n, accum.objective / accum.n, lr))
        if stop.requested and s + 1 < steps:
            return s + 1
    return None


def _epoch_record(model, config: TrainConfig, epoch: int, accum: _Accum, *, eval_data, curv_data) -> dict:
    n = max(accum.n, 1)
    record = {"epoch": epoch + 1, "lr": accum.lr, "train_loss": accum.loss / n,
              "train_accuracy": accum.correct / n, "objective": accum.objective / n,
              "penalties": {k: v / n for k, v in accum.terms.items()}, "seconds": accum.seconds}
    if config.penalties.cure:
        record["cure_h"] = config.penalties.cure_h_at(epoch + 1)
    t0 = time.perf_counter()
    model.eval()
    if eval_data is not None:
        ev = evaluate(model, eval_data, config.eval_batch_size)
        record["test_accuracy"], record["test_loss"] = ev["accuracy"], ev["loss"]
    if curv_data is not None:
        from ..geometry import CurvatureOptions, curvature_audit  # noqa: PLC0415

        opts = CurvatureOptions(max_iter=20, tol=1e-3, fro_probes=0, jacobian="off", seed=config.seed)
        audit = curvature_audit(model, curv_data, opts, batch_size=min(config.eval_batch_size, 256))
        for k in ("grad_norm", "hessian_norm", "curvature"):
            record[k] = audit.summary[k]["mean"]
    record["eval_seconds"] = time.perf_counter() - t0
    model.train()
    return record


def _write_log(path: Path | None, res: AuditResult) -> None:
    if path is not None:
        res.save_json(path)
