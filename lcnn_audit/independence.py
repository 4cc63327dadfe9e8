"""A numerical check that a model treats the samples of a batch independently.

Batched per-sample measures rest on it: the input Hessian of Σᵢ f(xᵢ) is block-diagonal
only if sample i's output does not depend on the other samples (guide §3, "Batching"), and
batched attacks then equal per-sample attacks. Train-mode BatchNorm breaks it, and so may a
torch.export/TorchScript program exported in train mode, which refuses ``eval()`` and
contains no ``nn.BatchNorm`` module to detect. So the check is numerical and works for any
model: sample 0's logits must not change when the rest of its batch changes.
"""

from __future__ import annotations

import torch
from torch import nn

from .errors import ModelError

#: relative change of sample 0's logits that counts as coupling (fp32 noise is ~1e-7)
RTOL = 1e-4


def _pair(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Two batches of x's size (at least 2) that share row 0 and differ in every other row."""
    a = x if x.shape[0] >= 2 else torch.cat([x, x.flip(-1)])
    b = a.clone()
    b[1:] = 1.0 - a[1:]  # still in [0, 1], and far from the original rows
    return a, b


def _change(u: torch.Tensor, v: torch.Tensor) -> tuple[float, float]:
    diff = float((u.double() - v.double()).abs().max())
    return diff, diff / max(float(u.double().abs().max()), 1e-12)


def check_batch_independence(model: nn.Module, x: torch.Tensor) -> str | None:
    """Raise :class:`ModelError` if sample 0's logits depend on the rest of its batch.

    Three forward passes on batches of ``x``'s size (2 if ``x`` holds one sample): ``a``,
    ``a`` again, and ``a`` with rows 1.. replaced by ``1 - a[1:]``. Returns a notice (and
    checks nothing more) when the two identical passes differ, i.e. the model is random;
    returns ``None`` when the model passes, or when it cannot run the probe batch at all
    (e.g. an exported program with a fixed batch size of 1).
    """
    a, b = _pair(x)
    with torch.no_grad():
        try:
            out_a, out_a2, out_b = model(a), model(a), model(b)
        except (RuntimeError, AssertionError):  # a fixed-shape program; check_model_data reports real failures
            return None
    if not all(isinstance(o, torch.Tensor) and o.ndim == 2 for o in (out_a, out_a2, out_b)):
        return None
    _, rel_noise = _change(out_a[0], out_a2[0])
    if rel_noise > RTOL:
        return (f"the model's outputs differ between two identical forward passes (relative change "
                f"{rel_noise:.2g}): it is random (e.g. dropout in train mode), so per-sample numbers are noisy and "
                "independence of the samples in a batch could not be checked")
    diff, rel = _change(out_a[0], out_b[0])
    if rel > RTOL:
        raise ModelError(
            f"the model couples the samples of a batch: one sample's logits changed by {diff:.3g} (relative "
            f"{rel:.2g}) when the other samples of its batch changed, so per-sample gradients, Hessians and attacks "
            "would depend on --batch-size. Typical cause: BatchNorm in train mode inside a torch.export or "
            "TorchScript program, which cannot be switched to eval mode; export it after model.eval()")
    return None
