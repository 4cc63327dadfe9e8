"""Put a model into measurement state and restore it afterwards.

Measurement state: eval mode (so the batch Hessian is block-diagonal), parameters not
requiring grad (double backward then skips weight gradients), TF32 off (it costs ~1e-3
relative accuracy), optional fp64, optionally ReLU-family activations replaced by softplus(β)
surrogates, and ops without double backward (SDPA kernels, hardsigmoid/hardswish) run in
twice-differentiable forms (``differentiable``). Parametrised weights (the spectral norms of
a converted model) are computed once per measurement (``torch.nn.utils.parametrize.cached``).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn.utils import parametrize

from ..errors import UsageError
from ..model.wrapper import preserve_training_flags, set_eval
from .differentiable import twice_differentiable
from .smooth import smooth_relu, smooth_relu_report  # noqa: F401 - smooth_relu re-exported

DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclass
class Prepared:
    """The model in measurement state, the dtype it runs in, and notices about what was changed."""

    model: nn.Module
    dtype: torch.dtype
    notices: list[str] = field(default_factory=list)


def _train_mode_bn(model: nn.Module) -> list[str]:
    return [n or type(model).__name__ for n, m in model.named_modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training]


@contextlib.contextmanager
def tf32_disabled() -> Iterator[None]:
    """Turn TF32 matmuls/convolutions off inside the block (curvature needs full fp32)."""
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
    """Yield the model to measure; restore ``training`` and ``requires_grad`` on exit.

    ``Prepared.notices`` gains, on a normal exit, a line per twice-differentiable substitution
    that took effect (math-kernel SDPA, clamp-form hard activations)."""
    if dtype not in DTYPES:
        raise UsageError(f"unknown dtype {dtype!r}; use float32 or float64")
    notices = []
    bn = _train_mode_bn(model)
    grads = {p: p.requires_grad for p in model.parameters()}
    with preserve_training_flags(model):
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
                work, smooth_notices = smooth_relu_report(model, smooth_relu_beta)
                notices.extend(smooth_notices)
            if DTYPES[dtype] != torch.float32:
                work = copy.deepcopy(work) if work is model else work
                work = work.to(DTYPES[dtype])
            # parametrised weights (spectral norm: W/σ) are fixed while measuring: compute each once, not
            # on every forward (for a converted VGG11-BN that was ~30 % of every HVP, docs/benchmarks.md)
            with tf32_disabled(), twice_differentiable() as mode, parametrize.cached():
                yield Prepared(work, DTYPES[dtype], notices)
            notices.extend(mode.notices())  # read by the audits after the block
        finally:
            for p, g in grads.items():
                p.requires_grad_(g)
