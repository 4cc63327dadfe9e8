"""The settings of a training run: :class:`TrainConfig` and :class:`AdversarialTraining`.

Both are frozen options classes (:mod:`lcnn_audit.options`): ``problems()`` lists every
problem, each naming its field (``lr must be > 0``), and ``validate()`` raises them at once.

Learning rate. ``TrainConfig.lr = None`` (the default) means the rule of the LCNN paper's
recipes: :data:`SCRATCH_LR` (0.1, paper §5) when training from initialisation and
:data:`FINETUNE_LR` (0.01) when fine-tuning a trained model. :func:`effective_lr` is the one
place that decides; ``train(..., from_scratch=...)``, :func:`lcnn_audit.audits.finetune.finetune`
and ``lcnn-audit finetune`` all use it, so Python and the CLI train at the same rate.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field

from ..errors import ConfigError
from ..options import Label, OptionsError, Problem, finite_problems, key_label, render_problems, validate

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("multistep", "cosine", "constant")
AUGMENTATIONS = ("auto", "none", "flip", "crop", "crop-flip")
ATTACK_NORMS = ("l2", "linf")
#: Milestones (as fractions of the epochs) when none are given: the paper's 150/175 of 200.
DEFAULT_MILESTONES = (0.75, 0.875)
#: ``lr=None`` from initialisation: the LCNN paper's §5 rate.
SCRATCH_LR = 0.1
#: ``lr=None`` when fine-tuning a trained (or just converted) model: 10x lower, so that a few
#: epochs adapt the weights instead of re-training them.
FINETUNE_LR = 0.01


@dataclass(frozen=True)
class PenaltyConfig:
    """Which penalties are on and their weights (0 = off).

    ``cure_h`` is CURE's finite-difference step, an L2 distance in [0, 1] pixel space; it
    ramps linearly from 0 over the first ``cure_h_warmup`` epochs (CURE §4 ramps 0 → 1.5
    over 5 of 20 epochs, on [0, 255] pixels), then stays at ``cure_h``.
    """

    lambda_beta: float = 0.0
    lambda_gamma: float = 0.0
    gradreg: float = 0.0
    cure: float = 0.0
    cure_h: float = 0.5
    cure_h_warmup: float = 0.0
    jacobian: float = 0.0
    jacobian_probes: int = 1
    cross_lipschitz: float = 0.0
    cross_lipschitz_probes: int = 1

    def problems(self) -> list[Problem]:
        """Every invalid weight or setting, one :class:`~lcnn_audit.options.Problem` per field."""
        out = []
        for name in ("lambda_beta", "lambda_gamma", "gradreg", "cure", "jacobian", "cross_lipschitz"):
            v = getattr(self, name)
            if not (v >= 0) or v == float("inf"):
                out.append(Problem(name, f"(a penalty weight) must be a finite number >= 0, got {v}"))
        if not (0 <= self.cure_h < float("inf")):
            out.append(Problem("cure_h", f"must be a finite number >= 0, got {self.cure_h}"))
        if not (0 <= self.cure_h_warmup < float("inf")):
            out.append(Problem("cure_h_warmup", f"must be a finite number >= 0 (epochs), got {self.cure_h_warmup}"))
        for name in ("jacobian_probes", "cross_lipschitz_probes"):
            if getattr(self, name) < 0:
                out.append(Problem(name, f"must be >= 0 (0 = exact), got {getattr(self, name)}"))
        return out

    def validate(self) -> None:
        """Raise one :class:`~lcnn_audit.options.OptionsError` listing every problem."""
        validate(self)

    def cure_h_at(self, epochs_done: float) -> float:
        """CURE's h after ``epochs_done`` (fractional) epochs: the linear warm-up schedule."""
        if self.cure_h_warmup <= 0:
            return self.cure_h
        return self.cure_h * min(1.0, epochs_done / self.cure_h_warmup)

    def active(self, epochs_done: float = 0.0) -> dict[str, dict]:
        """{registry name: keyword arguments} of the penalties that are on, in a fixed order."""
        out: dict[str, dict] = {}
        if self.lambda_beta or self.lambda_gamma:
            out["lcnn"] = {"lambda_beta": self.lambda_beta, "lambda_gamma": self.lambda_gamma}
        if self.gradreg:
            out["gradreg"] = {"weight": self.gradreg}
        if self.cure:
            out["cure"] = {"weight": self.cure, "h": self.cure_h_at(epochs_done)}
        if self.jacobian:
            out["jacobian"] = {"weight": self.jacobian, "probes": self.jacobian_probes}
        if self.cross_lipschitz:
            out["cross_lipschitz"] = {"weight": self.cross_lipschitz, "probes": self.cross_lipschitz_probes}
        return out

    @property
    def needs_input_grad(self) -> bool:
        """Whether an active penalty differentiates the input gradient ∇ₓℓ (all but the LCNN one)."""
        return any(k != "lcnn" for k in self.active())

    def to_dict(self) -> dict:
        """The JSON form."""
        return asdict(self)


class TrainConfigError(OptionsError, ConfigError):
    """Invalid training settings: an :class:`~lcnn_audit.options.OptionsError` (structured
    :class:`Problem` s, one per field) that is also the :class:`ConfigError` it always was."""

    def __init__(self, problems: list[Problem], label: Label = key_label):
        self.problems = list(problems)
        self.source = "training config"
        Exception.__init__(self, self.render(label))

    def render(self, label: Label = key_label) -> str:
        """``training config: [N problem(s): ]...`` with the fields spelled by ``label``."""
        n = len(self.problems)
        head = f"{self.source}: {n} problem(s): " if n > 1 else f"{self.source}: "
        return head + render_problems(self.problems, label)


def _nested(prefix: str, problems: list[Problem]) -> list[Problem]:
    """Problems of a nested options object, their fields as ``prefix.field``."""
    return [dataclasses.replace(p, field=f"{prefix}.{p.field}" if p.field else prefix) for p in problems]


@dataclass(frozen=True)
class AdversarialTraining:
    """PGD adversarial training (Madry et al.): each batch is replaced by its PGD
    adversarial examples, generated with the model in eval mode. The LCNN paper's
    baseline uses L2, eps 0.1, 3 steps."""

    norm: str = "l2"
    eps: float = 0.1
    steps: int = 3
    step_size: float | None = None

    def problems(self) -> list[Problem]:
        """Every invalid setting, one :class:`Problem` per field."""
        p = finite_problems(self)
        if self.norm not in ATTACK_NORMS:
            p.append(Problem("norm", f"is {self.norm!r}, an unknown adversarial norm; use l2 or linf"))
        if not (self.eps > 0):
            p.append(Problem("eps", f"must be > 0, got {self.eps}"))
        if self.steps < 1:
            p.append(Problem("steps", f"must be >= 1, got {self.steps}"))
        if self.step_size is not None and not (self.step_size > 0):
            p.append(Problem("step_size", f"must be > 0, got {self.step_size}"))
        return p

    def validate(self) -> None:
        """Raise one :class:`~lcnn_audit.options.OptionsError` listing every problem."""
        validate(self)


@dataclass(frozen=True)
class TrainConfig:
    """Every setting of a training run (the CLI flags of ``lcnn-audit finetune``).

    ``lr=None``: :data:`SCRATCH_LR` from initialisation, :data:`FINETUNE_LR` when
    fine-tuning (:func:`effective_lr`). ``milestones`` are epochs at which the learning rate
    is multiplied by ``lr_decay`` (default: 75 % and 87.5 % of ``epochs``). The schedule is
    applied per step, so cosine annealing is smooth. ``augment``: ``auto`` is random 32×32
    crop (4-pixel zero padding) plus horizontal flip for CIFAR-like data (3 channels, at
    least 32×32) and none otherwise: MNIST-like digits and clothing are centred, and flips
    change digits. ``curvature_n`` test samples (a fixed, seeded subset) are audited for mean
    curvature after every epoch (0 turns it off); ``eval_n`` limits test accuracy to a seeded
    subset. Every epoch visits the training data in a new seeded order; a last batch of a
    single sample is dropped (train-mode BatchNorm needs two).
    """

    epochs: int = 10
    batch_size: int = 128
    optimizer: str = "sgd"
    lr: float | None = None
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

    def problems(self) -> list[Problem]:
        """Every invalid setting (also of ``penalties`` and ``adversarial``, as
        ``penalties.FIELD`` / ``adversarial.FIELD``)."""
        p = finite_problems(self)
        if self.epochs < 0:
            p.append(Problem("epochs", f"must be >= 0, got {self.epochs}"))
        if self.batch_size < 2:
            p.append(Problem("batch_size", f"must be >= 2 (BatchNorm needs two samples), got {self.batch_size}"))
        if self.optimizer not in OPTIMIZERS:
            p.append(Problem("optimizer", f"is {self.optimizer!r}, an unknown optimizer; use one of "
                                          f"{', '.join(OPTIMIZERS)}"))
        if self.lr is not None and not (self.lr > 0):
            p.append(Problem("lr", f"must be > 0, got {self.lr}"))
        if not (0 <= self.momentum < 1):
            p.append(Problem("momentum", f"must lie in [0, 1), got {self.momentum}"))
        if not (self.weight_decay >= 0):
            p.append(Problem("weight_decay", f"must be >= 0, got {self.weight_decay}"))
        if self.schedule not in SCHEDULES:
            p.append(Problem("schedule", f"is {self.schedule!r}, an unknown schedule; use one of "
                                         f"{', '.join(SCHEDULES)}"))
        if self.milestones is not None and any(m < 1 for m in self.milestones):
            p.append(Problem("milestones", f"are epochs >= 1, got {list(self.milestones)}"))
        if not (0 < self.lr_decay <= 1):
            p.append(Problem("lr_decay", f"must lie in (0, 1], got {self.lr_decay}"))
        if self.augment not in AUGMENTATIONS:
            p.append(Problem("augment", f"is {self.augment!r}, an unknown augmentation; use one of "
                                        f"{', '.join(AUGMENTATIONS)}"))
        if self.curvature_n < 0:
            p.append(Problem("curvature_n", f"must be >= 0, got {self.curvature_n}"))
        if self.eval_n is not None and self.eval_n < 1:
            p.append(Problem("eval_n", f"must be >= 1, got {self.eval_n}"))
        if self.eval_batch_size < 1:
            p.append(Problem("eval_batch_size", f"must be >= 1, got {self.eval_batch_size}"))
        p += _nested("penalties", self.penalties.problems())
        if self.adversarial is not None:
            p += _nested("adversarial", self.adversarial.problems())
        return p

    def validate(self) -> None:
        """Raise one :class:`TrainConfigError` (an OptionsError and a ConfigError) listing
        every problem."""
        problems = self.problems()
        if problems:
            raise TrainConfigError(problems)

    def milestone_epochs(self) -> list[int]:
        """The epochs at which multistep decays the learning rate."""
        if self.milestones is not None:
            return sorted(int(m) for m in self.milestones)
        return sorted({max(1, round(f * self.epochs)) for f in DEFAULT_MILESTONES})

    def with_lr(self, from_scratch: bool = False) -> TrainConfig:
        """This config with ``lr`` resolved by :func:`effective_lr` (itself if already set)."""
        return self if self.lr is not None else dataclasses.replace(self, lr=effective_lr(self, from_scratch))

    def to_dict(self) -> dict:
        """JSON form (milestones resolved to epochs)."""
        d = asdict(self)
        d["milestones"] = self.milestone_epochs()
        return d


def effective_lr(config: TrainConfig, from_scratch: bool = False) -> float:
    """The learning rate a run uses: ``config.lr``, else :data:`SCRATCH_LR` (0.1) from
    initialisation and :data:`FINETUNE_LR` (0.01) when fine-tuning."""
    if config.lr is not None:
        return float(config.lr)
    return SCRATCH_LR if from_scratch else FINETUNE_LR
