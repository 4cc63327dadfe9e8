"""The per-sample scalar f whose input geometry is measured (LCNN paper §3.1).

By default f(x) is the cross-entropy of the logits at the label (``target="loss"``), as
in the paper; ``target="logit"`` makes f the label's logit. ``label="pred"`` uses the
predicted class of the clean input instead of the true label.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ModelError, UsageError
from .options import LABELS, TARGETS


def check_target(target: str, label: str) -> None:
    """Raise UsageError for an unknown target or label mode."""
    if target not in TARGETS:
        raise UsageError(f"unknown target {target!r}; use one of {', '.join(TARGETS)}")
    if label not in LABELS:
        raise UsageError(f"unknown label mode {label!r}; use one of {', '.join(LABELS)}")


def per_sample_objective(logits: torch.Tensor, labels: torch.Tensor, target: str = "loss") -> torch.Tensor:
    """f_i for every sample i, shape (B,). Samples are independent, so the input Hessian
    of ``f.sum()`` is block-diagonal across the batch (model in eval mode).

    The cross-entropy is evaluated in float64 on the logits: its gradient p − e_y cancels
    catastrophically in fp32 for confident samples (p_y ≈ 1), which made fp32 autograd
    HVPs up to 2 % wrong there; in fp64 only the network's own fp32 error (~1e-6) remains.
    The cost is O(B·C)."""
    if target == "loss":
        return F.cross_entropy(logits.double(), labels, reduction="none")
    return logits.gather(1, labels.view(-1, 1)).squeeze(1)


ObjectiveFn = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def make_objective(model: nn.Module, labels: torch.Tensor, target: str = "loss") -> ObjectiveFn:
    """``x -> (f(x) of shape (B,), logits)`` for fixed labels."""

    def fn(x: torch.Tensor):
        logits = model(x)
        if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
            raise ModelError("the model must return (N, C) logits (use --output-key to select them)")
        return per_sample_objective(logits, labels, target), logits

    return fn


def input_gradient(objective: ObjectiveFn, x: torch.Tensor, create_graph: bool = False):
    """(f, ∇ₓf, logits) for a batch; ``create_graph`` keeps the graph for HVPs/penalties."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        f, logits = objective(x)
        (g,) = torch.autograd.grad(f.sum(), x, create_graph=create_graph)
    return f, g, logits, x


def resolve_labels(model: nn.Module, x: torch.Tensor, y: torch.Tensor, label: str) -> torch.Tensor:
    """The labels the objective uses: ``y`` (``true``) or the model's predictions (``pred``)."""
    if label == "true":
        return y
    with torch.no_grad():
        return model(x).argmax(1)
