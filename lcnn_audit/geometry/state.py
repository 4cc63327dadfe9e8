"""Put a model into measurement state and restore it afterwards.

Measurement state: eval mode (so the batch Hessian is block-diagonal), parameters not
requiring grad (double backward then skips weight gradients), TF32 off (it costs ~1e-3
relative accuracy), optional fp64, and optionally ReLUs replaced by softplus(β).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import UsageError
from ..loading import set_eval
from .smooth import SmoothReLU

DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclass
class Prepared:
    model: nn.Module
    dtype: torch.dtype
    notices: list[str] = field(default_factory=list)


def _train_mode_bn(model: nn.Module) -> list[str]:
    return [n or type(model).__name__ for n, m in model.named_modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training]


def smooth_relu(model: nn.Module, beta: float) -> nn.Module:
    """A copy of ``model`` with every ReLU (module or functional call) replaced by
    softplus(β), the LCNN paper's "standard" surrogate (β = 1000) with defined curvature."""
    if beta <= 0:
        raise UsageError(f"--smooth-relu needs a positive beta, got {beta}")
    from ..surgery import replace_activations  # noqa: PLC0415

    out, _ = replace_activations(copy.deepcopy(model), lambda: SmoothReLU(beta=beta), kinds=("relu",))
    return out


@contextlib.contextmanager
def tf32_disabled() -> Iterator[None]:
    old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
           torch.get_float32_matmul_precision())
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old[0], old[1]
        torch.set_float32_matmul_precision(old[2])


@contextlib.contextmanager
def measurement_state(model: nn.Module, dtype: str = "float32", smooth_relu_beta: float | None = None
                      ) -> Iterator[Prepared]:
    """Yield the model to measure; restore ``training`` and ``requires_grad`` on exit."""
    if dtype not in DTYPES:
        raise UsageError(f"unknown dtype {dtype!r}; use float32 or float64")
    notices = []
    bn = _train_mode_bn(model)
    training = {m: m.training for m in model.modules()}
    grads = {p: p.requires_grad for p in model.parameters()}
    try:
        set_eval(model)
        still = set(_train_mode_bn(model))
        switched = [n for n in bn if n not in still]  # a module may refuse eval(): then say nothing false
        if switched:
            notices.append(f"BatchNorm layers in train mode ({', '.join(switched[:3])}"
                           f"{'...' if len(switched) > 3 else ''}) couple the samples of a batch; switched them "
                           "to eval mode for the audit")
        for p in model.parameters():
            p.requires_grad_(False)
        work = model
        if smooth_relu_beta is not None:
            work = smooth_relu(model, smooth_relu_beta)
        if DTYPES[dtype] != torch.float32:
            work = copy.deepcopy(work) if work is model else work
            work = work.to(DTYPES[dtype])
        with tf32_disabled():
            yield Prepared(work, DTYPES[dtype], notices)
    finally:
        for m, t in training.items():
            m.training = t
        for p, g in grads.items():
            p.requires_grad_(g)
