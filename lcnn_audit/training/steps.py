"""One optimisation step and what it needs: augmentation, optimizer, schedule.

:func:`train_step` computes the penalised objective of one batch (see
:mod:`lcnn_audit.penalties`)::

    mean CE(x', y) + Σ_penalties term,   x' = x, or PGD(x) under adversarial training

and takes one optimizer step. Randomness is explicit: :func:`augment` draws from the
generator it is given, seeded by the loop with :func:`_mix` (seed, epoch, step).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ..errors import ModelError
from ..penalties import PENALTIES, PenaltyBatch, lcnn_parameters
from .config import TrainConfig, effective_lr


class TrainingDivergedError(ModelError):
    """The penalised objective became NaN or infinite."""


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
    """SGD (momentum), Adam or AdamW at :func:`effective_lr` (``lr=None``: the fine-tuning
    rate; ``train`` resolves it first); β and γ go to a group without weight decay."""
    lr = effective_lr(config)
    skip = {id(p) for p in no_decay_parameters(model)}
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if id(p) not in skip], "weight_decay": config.weight_decay},
              {"params": [p for p in params if id(p) in skip], "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    if not groups:
        raise ModelError("the model has no trainable parameters")
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=config.momentum)
    cls = torch.optim.Adam if config.optimizer == "adam" else torch.optim.AdamW
    return cls(groups, lr=lr)


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


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,  # noqa: PLR0917 - public signature; benchmarks/training.py passes six positionally
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
