"""Training and fine-tuning with curvature penalties, checkpoints and exact resume.

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

Ctrl-C (SIGINT) sets a stop flag: the current step finishes, a checkpoint is written and
``train`` returns an incomplete result; a second Ctrl-C aborts at once. The library never
prints; progress goes to the ``on_step`` / ``on_epoch`` callbacks.

Reference settings (LCNN paper §5): SGD, momentum 0.9, lr 0.1 decayed ×0.1 at 75 % and
87.5 % of training (epochs 150 and 175 of 200), weight decay 5e-4. β and γ of LCNN layers
are excluded from weight decay (they carry their own penalty, eq. 5).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .data import ImageData
from .errors import CheckpointError, ConfigError, ModelError, ResumeError, UsageError
from .geometry.differentiable import twice_differentiable
from .io import write_with
from .loading import AuditModel, Normalize, build_arch, parse_normalize, resolve_device, save_model, unwrap
from .penalties import PENALTIES, PenaltyBatch, PenaltyConfig, lcnn_parameters
from .reproducibility import StopFlag, deterministic_kernels, rng_state, seed_everything, set_rng_state, sigint_to
from .results import AuditResult, environment
from .runner import fingerprint

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("multistep", "cosine", "constant")
AUGMENTATIONS = ("auto", "none", "flip", "crop", "crop-flip")
ATTACK_NORMS = ("l2", "linf")
CHECKPOINT_NAME = "checkpoint.pt"
LOG_NAME = "log.json"
FORMAT = "lcnn-audit-train-checkpoint"
FORMAT_VERSION = 1
#: Milestones (as fractions of the epochs) when none are given: the paper's 150/175 of 200.
DEFAULT_MILESTONES = (0.75, 0.875)


class TrainingDivergedError(ModelError):
    """The penalised objective became NaN or infinite."""


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class AdversarialTraining:
    """PGD adversarial training (Madry et al.): each batch is replaced by its PGD
    adversarial examples, generated with the model in eval mode. The LCNN paper's
    baseline uses L2, eps 0.1, 3 steps."""

    norm: str = "l2"
    eps: float = 0.1
    steps: int = 3
    step_size: float | None = None


@dataclass(frozen=True)
class TrainConfig:
    """Every setting of a training run (the CLI flags of ``lcnn-audit finetune``).

    ``milestones`` are epochs at which the learning rate is multiplied by ``lr_decay``
    (default: 75 % and 87.5 % of ``epochs``). The schedule is applied per step, so cosine
    annealing is smooth. ``augment``: ``auto`` is random 32×32 crop (4-pixel zero padding)
    plus horizontal flip for CIFAR-like data (3 channels, at least 32×32) and none
    otherwise: MNIST-like digits and clothing are centred, and flips change digits.
    ``curvature_n`` test samples (a fixed, seeded subset) are audited for mean curvature
    after every epoch (0 turns it off); ``eval_n`` limits test accuracy to a seeded subset.
    Every epoch visits the training data in a new seeded order; a last batch of a single
    sample is dropped (train-mode BatchNorm needs two).
    """

    epochs: int = 10
    batch_size: int = 128
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "multistep"
    milestones: tuple[int, ...] | None = None
    lr_decay: float = 0.1
    augment: str = "auto"
    penalties: PenaltyConfig = field(default_factory=PenaltyConfig)
    adversarial: AdversarialTraining | None = None
    curvature_n: int = 128
    eval_n: int | None = None
    eval_batch_size: int = 512
    seed: int = 0
    deterministic: bool = True

    def validate(self) -> None:
        """Raise one :class:`ConfigError` listing every problem."""
        from .validation import finite_problems

        p: list[str] = finite_problems(((k, getattr(self, k)) for k in ("lr", "momentum", "weight_decay", "lr_decay")),
                                       name=str)
        if self.adversarial is not None:
            p += finite_problems(((f"adversarial {k}", getattr(self.adversarial, k)) for k in ("eps", "step_size")),
                                 name=str)
        if self.epochs < 0:
            p.append(f"epochs must be >= 0, got {self.epochs}")
        if self.batch_size < 2:
            p.append(f"batch_size must be >= 2 (BatchNorm needs two samples), got {self.batch_size}")
        if self.optimizer not in OPTIMIZERS:
            p.append(f"unknown optimizer {self.optimizer!r}; use one of {', '.join(OPTIMIZERS)}")
        if not (self.lr > 0):
            p.append(f"lr must be > 0, got {self.lr}")
        if not (0 <= self.momentum < 1):
            p.append(f"momentum must lie in [0, 1), got {self.momentum}")
        if not (self.weight_decay >= 0):
            p.append(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.schedule not in SCHEDULES:
            p.append(f"unknown schedule {self.schedule!r}; use one of {', '.join(SCHEDULES)}")
        if self.milestones is not None and any(m < 1 for m in self.milestones):
            p.append(f"milestones are epochs >= 1, got {list(self.milestones)}")
        if not (0 < self.lr_decay <= 1):
            p.append(f"lr_decay must lie in (0, 1], got {self.lr_decay}")
        if self.augment not in AUGMENTATIONS:
            p.append(f"unknown augment {self.augment!r}; use one of {', '.join(AUGMENTATIONS)}")
        if self.curvature_n < 0:
            p.append(f"curvature_n must be >= 0, got {self.curvature_n}")
        if self.eval_n is not None and self.eval_n < 1:
            p.append(f"eval_n must be >= 1, got {self.eval_n}")
        if self.eval_batch_size < 1:
            p.append(f"eval_batch_size must be >= 1, got {self.eval_batch_size}")
        p += self.penalties.problems()
        adv = self.adversarial
        if adv is not None:
            if adv.norm not in ATTACK_NORMS:
                p.append(f"unknown adversarial norm {adv.norm!r}; use l2 or linf")
            if not (adv.eps > 0):
                p.append(f"adversarial eps must be > 0, got {adv.eps}")
            if adv.steps < 1:
                p.append(f"adversarial steps must be >= 1, got {adv.steps}")
            if adv.step_size is not None and not (adv.step_size > 0):
                p.append(f"adversarial step_size must be > 0, got {adv.step_size}")
        if p:
            raise ConfigError(p, source="training config")

    def milestone_epochs(self) -> list[int]:
        if self.milestones is not None:
            return sorted(int(m) for m in self.milestones)
        return sorted({max(1, round(f * self.epochs)) for f in DEFAULT_MILESTONES})

    def to_dict(self) -> dict:
        d = asdict(self)
        d["milestones"] = self.milestone_epochs()
        return d


@dataclass
class StepInfo:
    """What ``on_step`` receives after every optimisation step."""

    epoch: int  # 1-based
    step: int  # 1-based within the epoch
    steps: int
    loss: float  # running mean CE of this epoch
    objective: float  # running mean penalised objective of this epoch
    lr: float


# --------------------------------------------------------------------------- building blocks


def init_model(arch: str, arch_kwargs: dict | None = None, normalize=None, dataset: str | None = None,
               seed: int = 0, device: str | torch.device = "cpu", convert: bool = False,
               input_shape: tuple[int, ...] | None = None) -> AuditModel:
    """A freshly initialised model (``--from-scratch``), seeded, with its recipe.

    ``normalize``: ``None`` uses the dataset's documented mean/std when ``dataset`` has
    one, else none; otherwise as in :func:`lcnn_audit.loading.parse_normalize`.
    ``convert=True`` builds the LCNN version (:func:`lcnn_audit.convert.convert_model` on
    ``input_shape``) with γ starting at 11, the LCNN appendix snippet's 1 + 10: a
    function-preserving γ would start at ≈ 1 on an untrained batch norm (running variance
    1), where γ = 1 + exp(raw) barely moves.
    """
    from .data import DATASET_NORMALIZATION

    if normalize is None:
        normalize = dataset if dataset in DATASET_NORMALIZATION else "none"
    norm = parse_normalize(normalize, dataset)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = build_arch(arch, arch_kwargs or {})
    recipe = {"arch": arch, "arch_kwargs": dict(arch_kwargs or {}), "normalize": norm, "convert": None,
              "kind": "state_dict"}
    model = AuditModel(net, Normalize(*norm) if norm else None, None, recipe).to(resolve_device(device))
    if convert:
        from .convert import ConvertOptions, convert_model  # noqa: PLC0415
        from .layers.lipschitz_batchnorm import PAPER_GAMMA  # noqa: PLC0415

        if input_shape is None:
            raise UsageError("building an LCNN from scratch needs the input shape (C, H, W)")
        model, _ = convert_model(model, ConvertOptions(gamma_init=PAPER_GAMMA), input_shape=tuple(input_shape),
                                 inplace=True)
    return model


def output_recipe(model: nn.Module) -> dict:
    """The recipe ``save_model`` embeds, or a one-line error if the model cannot be rebuilt."""
    recipe = getattr(model, "recipe", None) or {}
    if not recipe.get("arch"):
        kind = recipe.get("kind", type(model).__name__)
        raise UsageError(f"cannot save a trained {kind} model so that it loads again: it has no rebuildable "
                         "architecture; fine-tune a state-dict checkpoint (safetensors with a recipe, or .pt "
                         "with --arch), not a TorchScript/exported/pickled model")
    return {"arch": recipe["arch"], "arch_kwargs": recipe.get("arch_kwargs") or {},
            "normalize": recipe.get("normalize"), "convert": recipe.get("convert")}


def _mix(*values: int) -> int:
    """A 63-bit seed from integers (numpy's SeedSequence hashing)."""
    state = np.random.SeedSequence([int(v) & 0xFFFFFFFF for v in values]).generate_state(2, dtype=np.uint32)
    return int(state[0]) << 31 ^ int(state[1])


def resolve_augment(mode: str, input_shape: tuple[int, ...]) -> str:
    """``auto`` -> ``crop-flip`` for CIFAR-like inputs (3 channels, >= 32x32), else ``none``."""
    if mode != "auto":
        return mode
    c, h, w = (tuple(input_shape) + (1, 1, 1))[:3]
    return "crop-flip" if c == 3 and min(h, w) >= 32 else "none"


def augment(x: torch.Tensor, mode: str, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random crop of the zero-padded image (``pad`` pixels) and/or horizontal flip, per sample."""
    if mode == "none":
        return x
    B, C, H, W = x.shape
    if "crop" in mode:
        xp = torch.nn.functional.pad(x, (pad, pad, pad, pad))
        oy = torch.randint(0, 2 * pad + 1, (B,), generator=generator)
        ox = torch.randint(0, 2 * pad + 1, (B,), generator=generator)
        rows = (oy[:, None] + torch.arange(H))[:, None, :, None]
        cols = (ox[:, None] + torch.arange(W))[:, None, None, :]
        x = xp[torch.arange(B)[:, None, None, None], torch.arange(C)[None, :, None, None], rows, cols]
    if "flip" in mode:
        flip = torch.rand(B, generator=generator) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
    return x


def no_decay_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The raw parameters behind LCNN β (centered softplus) and γ (Lipschitz batch norm):
    every parameter a centered softplus owns, and a Lipschitz batch norm's parameters other
    than its affine ``weight``/``bias``."""
    softplus, bn = lcnn_parameters(model)
    out = [p for m in softplus for p in m.parameters(recurse=False)]
    out += [p for m in bn for n, p in m.named_parameters(recurse=False) if n not in ("weight", "bias")]
    return out


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """SGD (momentum), Adam or AdamW; β and γ go to a group without weight decay."""
    skip = {id(p) for p in no_decay_parameters(model)}
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if id(p) not in skip], "weight_decay": config.weight_decay},
              {"params": [p for p in params if id(p) in skip], "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    if not groups:
        raise ModelError("the model has no trainable parameters")
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum)
    cls = torch.optim.Adam if config.optimizer == "adam" else torch.optim.AdamW
    return cls(groups, lr=config.lr)


def make_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int):
    """A per-step LambdaLR: multistep decays at milestone epochs, cosine anneals to 0."""
    total = max(1, config.epochs * steps_per_epoch)
    marks = [m * steps_per_epoch for m in config.milestone_epochs()]

    def factor(step: int) -> float:
        if config.schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))
        if config.schedule == "multistep":
            return config.lr_decay ** sum(step >= m for m in marks)
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def evaluate(model: nn.Module, data: ImageData, batch_size: int = 512) -> dict[str, float]:
    """Accuracy and mean cross-entropy in eval mode (the model's mode is restored)."""
    device = _device_of(model)
    was = model.training
    model.eval()
    correct, loss, n = 0, 0.0, 0
    try:
        with torch.no_grad():
            for b in data.batches(batch_size):
                logits = model(b.x.to(device))
                y = b.y.to(device)
                correct += int((logits.argmax(1) == y).sum())
                loss += float(torch.nn.functional.cross_entropy(logits.double(), y, reduction="sum"))
                n += len(y)
    finally:
        model.train(was)
    return {"accuracy": correct / max(n, 1), "loss": loss / max(n, 1)}


def _device_of(model: nn.Module) -> torch.device:
    for t in list(model.parameters()) + list(model.buffers()):
        return t.device
    return torch.device("cpu")


def subset(data: ImageData, n: int | None, seed: int) -> ImageData:
    """A fixed, seeded subset of ``n`` samples (all of them when ``n`` is None or too big)."""
    if n is None or n >= len(data):
        return data
    gen = torch.Generator().manual_seed(seed)
    pick = torch.randperm(len(data), generator=gen)[:n].sort().values
    return dataclasses.replace(data, indices=data.indices[pick])


# --------------------------------------------------------------------------- checkpoints


def read_train_checkpoint(path: Path) -> dict:
    """Load a training checkpoint (``weights_only``: no code is unpickled)."""
    try:
        ck = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch.load raises many types for a bad file
        raise CheckpointError(f"training checkpoint {path} is corrupt or truncated ({type(err).__name__}); "
                              "delete it to start over") from None
    if not isinstance(ck, dict) or ck.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an lcnn-audit training checkpoint")
    if ck.get("version") != FORMAT_VERSION:
        raise CheckpointError(f"training checkpoint {path} has format version {ck.get('version')}; this "
                              f"lcnn-audit reads version {FORMAT_VERSION}")
    return ck


def _resume_key(cfg: dict) -> dict:
    """What must match to resume: the config without the conversion's measurement report
    (σ, γ values at conversion), which is informational and can differ in the last bits
    between thread counts."""
    key = json.loads(json.dumps(cfg))
    convert = (key.get("recipe") or {}).get("convert")
    if isinstance(convert, dict):
        convert.pop("report", None)
    return key


def _short(v, limit: int = 40) -> str:
    text = repr(v)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _config_diff(old: dict, new: dict, prefix: str = "") -> list[str]:
    keys = sorted(set(old) | set(new))
    out = []
    for k in keys:
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _config_diff(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k} ({_short(a)} -> {_short(b)})")
    return out


# --------------------------------------------------------------------------- the loop


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


def train(
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
    handle_sigint: bool = True,
    compile_kernels: bool = False,
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
    """
    from .coerce import as_image_data  # noqa: PLC0415

    train_data = as_image_data(train_data)
    test_data = as_image_data(test_data) if test_data is not None else None
    config.validate()
    recipe = output_recipe(model) if output is not None else dict(getattr(model, "recipe", {}) or {})
    if config.penalties.active().get("lcnn"):
        softplus, bn = lcnn_parameters(model)
        if not softplus and not bn:
            raise ModelError("the LCNN penalty needs CenteredSoftplus / LipschitzBatchNorm layers and the model "
                             "has none; convert it first (lcnn-audit convert) or drop the LCNN penalty")
    if config.adversarial is not None:
        from .attacks import PGD  # noqa: F401,PLC0415 - fail before training if attacks are unavailable
    if len(train_data) < 2:
        raise UsageError(f"training needs at least 2 samples, got {len(train_data)}")
    device = _device_of(model)
    bs = min(config.batch_size, len(train_data))
    steps_per_epoch = len(train_data) // bs + (1 if len(train_data) % bs >= 2 else 0)
    aug_mode = resolve_augment(config.augment, train_data.input_shape)
    optimizer = make_optimizer(model, config)
    scheduler = make_scheduler(optimizer, config, steps_per_epoch)
    eval_data = subset(test_data, config.eval_n, config.seed) if test_data is not None else None
    curv_source = test_data if test_data is not None else train_data
    curv_data = subset(curv_source, config.curvature_n, config.seed + 1) if config.curvature_n else None
    cfg = {"train": config.to_dict(), "augment": aug_mode, "steps_per_epoch": steps_per_epoch,
           "batch_size": bs, "recipe": {k: v for k, v in recipe.items() if k != "kind"},
           "data": train_data.describe(), "test_data": test_data.describe() if test_data is not None else None,
           **(run_config or {})}
    cfg = json.loads(json.dumps(cfg, default=str))  # plain JSON types: the log, the checkpoint and the resume check
    fp = fingerprint(_resume_key(cfg))
    run_dir = Path(run_dir) if run_dir is not None else None
    ck_path = run_dir / CHECKPOINT_NAME if run_dir else None
    log_path = run_dir / LOG_NAME if run_dir else None

    epoch, step, history, accum, complete = 0, 0, [], _Accum(), False
    if ck_path is not None and ck_path.exists():
        if not resume:
            raise UsageError(f"{ck_path} holds a checkpoint of an earlier run; pass --resume to continue it, or "
                             "delete it (or choose another run directory) to start over")
        ck = read_train_checkpoint(ck_path)
        if ck["fingerprint"] != fp:
            diff = _config_diff(_resume_key(ck.get("config", {})), _resume_key(cfg))
            raise ResumeError(f"checkpoint {ck_path} belongs to a run with different options"
                              + (f": {'; '.join(diff[:4])}" if diff else "")
                              + "; rerun with the same options or delete it to start over")
        try:
            model.load_state_dict(ck["model"])
        except RuntimeError as err:
            raise CheckpointError(f"checkpoint {ck_path} does not fit the model: {str(err).splitlines()[0]}") from None
        optimizer.load_state_dict(ck["optimizer"])
        scheduler.load_state_dict(ck["scheduler"])
        set_rng_state(ck["rng"])
        epoch, step, history, complete = ck["epoch"], ck["step"], list(ck["history"]), bool(ck["complete"])
        accum = _Accum(**ck["accum"])
    else:
        seed_everything(config.seed)

    def save_checkpoint(done: bool) -> None:
        if ck_path is None:
            return
        state = {"format": FORMAT, "version": FORMAT_VERSION, "fingerprint": fp, "config": cfg, "recipe": cfg["recipe"],
                 "epoch": epoch, "step": step, "complete": done, "model": model.state_dict(),
                 "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng_state(),
                 "accum": asdict(accum), "history": history}
        write_with(ck_path, lambda tmp: torch.save(state, str(tmp)))

    t_start = time.perf_counter()
    softplus_layers = lcnn_parameters(model)[0]
    kernels_used = "eager"
    if compile_kernels and softplus_layers:
        from .layers.softplus_kernels import compiled_kernels  # noqa: PLC0415

        kernels, reason = compiled_kernels(device)
        kernels_used = "compiled" if kernels is not None else f"eager: {reason}"
        for m in softplus_layers:
            m.kernels = kernels

    def result(done: bool) -> AuditResult:
        summary = {"epochs": history, "final": history[-1] if history else None, "epochs_done": len(history),
                   "kernels": kernels_used,
                   "epochs_planned": config.epochs, "output": str(output) if output is not None and done else None,
                   "checkpoint": str(ck_path) if ck_path else None}
        per_epoch = [h["seconds"] for h in history]
        timing = {"seconds": time.perf_counter() - t_start,
                  "train_seconds_per_epoch": sum(per_epoch) / len(per_epoch) if per_epoch else float("nan")}
        return AuditResult(command="finetune", config=cfg, summary=summary, per_sample={}, timing=timing,
                           environment=environment(device), complete=done)

    stop = stop or StopFlag()
    guard = sigint_to(stop) if handle_sigint else contextlib.nullcontext()
    try:
        # gradient penalties differentiate ∇ₓℓ: SDPA on its math kernel, clamp-form hard activations
        twice = twice_differentiable() if config.penalties.needs_input_grad else contextlib.nullcontext()
        with guard, deterministic_kernels(config.deterministic and device.type == "cuda"), twice:
            while not complete and epoch < config.epochs:
                stopped = _run_epoch(model, train_data, config, optimizer, scheduler, epoch, step, accum, bs,
                                     steps_per_epoch, aug_mode, device, on_step, stop)
                if stopped is not None:
                    step = stopped
                    save_checkpoint(False)
                    _write_log(log_path, result(False))
                    return result(False)
                record = _epoch_record(model, config, epoch, accum, eval_data, curv_data)
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
        from .layers.spectral import refit_spectral_norms  # noqa: PLC0415

        # one power step per training forward only tracks σ; the saved layers get the converged pair
        refit_spectral_norms(unwrap(model))
        save_model(unwrap(model), output, recipe)
    res = result(True)
    _write_log(log_path, res)
    return res


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
               index: torch.Tensor, active: dict[str, dict], *, seed: int = 0, track_input: bool = True,
               where: str = "a step"):
    """One optimisation step on the penalised objective (mean CE + Σ active penalties).

    ``active`` maps penalty names to their keyword arguments (``PenaltyConfig.active``).
    Returns (penalty batch, CE loss, objective, {name: term}); raises
    :class:`TrainingDivergedError` on a non-finite objective, before the weights change.
    """
    pb = PenaltyBatch(model, x, y, index, seed=seed, track_input=track_input)
    terms = {name: PENALTIES[name](pb, **kw) for name, kw in active.items()}
    loss = pb.loss
    total = loss + sum(terms.values()) if terms else loss
    if not torch.isfinite(total):
        raise TrainingDivergedError(
            f"training diverged at {where} (objective {float(total.detach())}); lower "
            "the learning rate or the penalty weights (CURE: also --cure-h-warmup)")
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    optimizer.step()
    return pb, loss, total, terms


def _run_epoch(model, data, config, optimizer, scheduler, epoch, start_step, accum, bs, steps, aug_mode, device,
               on_step, stop) -> int | None:
    """Run steps ``start_step..steps-1`` of ``epoch``; return the next step if stopped early, else None."""
    perm = torch.randperm(len(data), generator=torch.Generator().manual_seed(_mix(config.seed, epoch, 0)))
    attack = None
    if config.adversarial is not None:
        from .attacks import PGD  # noqa: PLC0415

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


def _epoch_record(model, config: TrainConfig, epoch: int, accum: _Accum, eval_data, curv_data) -> dict:
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
        from .geometry import CurvatureOptions, curvature_audit  # noqa: PLC0415

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
