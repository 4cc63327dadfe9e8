"""Helpers on any ``nn.Module``: where it lives, and a training-flag guard."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


def _first_float(model: nn.Module) -> torch.Tensor | None:
    for t in model.parameters():
        if t.is_floating_point():
            return t
    for t in model.buffers():
        if t.is_floating_point():
            return t
    return next(iter(model.parameters()), next(iter(model.buffers()), None))


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first floating-point parameter (else buffer); CPU for a
    model without tensors."""
    ref = _first_float(model)
    return ref.device if ref is not None else torch.device("cpu")


def model_dtype(model: nn.Module) -> torch.dtype:
    """The dtype of the model's first floating-point parameter (else buffer); float32 if none."""
    ref = _first_float(model)
    return ref.dtype if ref is not None and ref.is_floating_point() else torch.float32


@contextlib.contextmanager
def preserve_training_flags(model: nn.Module) -> Iterator[nn.Module]:
    """Restore every submodule's ``training`` flag on exit (also on error), whatever the body
    does with ``train()`` / ``eval()``."""
    flags = {m: m.training for m in model.modules()}
    try:
        yield model
    finally:
        for m, was in flags.items():
            m.training = was
