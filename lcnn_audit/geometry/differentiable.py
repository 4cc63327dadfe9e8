"""Run a model so that its input gradient is itself differentiable (HVPs, gradient penalties).

Two kinds of torch op compute the right function but have a backward without a derivative
(GUIDE §3, "Operators without double backward"; measured on torch 2.14):

* ``scaled_dot_product_attention`` (torchvision ViT/Swin V2/MaxViT, ``nn.MultiheadAttention``
  with ``need_weights=False``, most user transformers) dispatches to a flash/efficient kernel
  whose backward has no derivative. Its math kernel is ordinary differentiable ops, so
  :func:`twice_differentiable` selects it with ``sdpa_kernel(SDPBackend.MATH)``, on CPU and CUDA.
* ``hardsigmoid`` (MobileNetV3's squeeze-excitation) has a fused backward kernel without a
  derivative ("derivative for aten::hardsigmoid_backward is not implemented"); torch 2.14 does
  differentiate ``hardswish``'s backward, but not every torch version does, so both go through
  one definition. Both are piecewise polynomials; :class:`ExactHardActivations` evaluates them as

      hardsigmoid(x) = clamp(x/6 + 1/2, 0, 1),    hardswish(x) = x · hardsigmoid(x),

  the same function, with the same gradient except on the measure-zero kinks x = ±3 (where
  torch's kernel takes the one-sided derivative 0 and clamp the other), and a true second
  derivative (hardswish'' = 1/3 on (−3, 3)). It intercepts the functional calls, which the
  ``nn.Hardsigmoid``/``nn.Hardswish`` modules make too, so no module is swapped and models
  that torch.fx cannot trace are covered as well.

The mode counts what it saw, so the audits can say so (:meth:`ExactHardActivations.notices`).
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.overrides import TorchFunctionMode


def hardsigmoid(x: torch.Tensor) -> torch.Tensor:
    """clamp(x/6 + 1/2, 0, 1): ``F.hardsigmoid`` with a twice-differentiable backward."""
    return torch.clamp(x / 6 + 0.5, 0.0, 1.0)


def hardswish(x: torch.Tensor) -> torch.Tensor:
    """x · clamp(x/6 + 1/2, 0, 1): ``F.hardswish`` with a twice-differentiable backward."""
    return x * hardsigmoid(x)


_EXACT = {F.hardsigmoid: ("hardsigmoid", hardsigmoid), F.hardswish: ("hardswish", hardswish)}
_ATTENTION = {F.scaled_dot_product_attention: "scaled_dot_product_attention",
              F.multi_head_attention_forward: "multi_head_attention_forward"}


class ExactHardActivations(TorchFunctionMode):
    """Evaluate ``F.hardsigmoid``/``F.hardswish`` by their clamp forms (module docstring) and
    count those calls and attention calls in ``seen``."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: Counter = Counter()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        hit = _EXACT.get(func)
        if hit is not None:
            self.seen[hit[0]] += 1
            x = args[0] if args else kwargs["input"]
            return hit[1](x)  # ``inplace`` is ignored: in-place ops cannot be differentiated twice here
        name = _ATTENTION.get(func)
        if name is not None:
            self.seen[name] += 1
        return func(*args, **kwargs)

    def notices(self) -> list[str]:
        """One line per substitution that took effect."""
        out = []
        if self.seen["scaled_dot_product_attention"] or self.seen["multi_head_attention_forward"]:
            out.append("the model uses attention: scaled_dot_product_attention was run on its math kernel "
                       "(torch.nn.attention.sdpa_kernel(SDPBackend.MATH)), as the fused kernels have no "
                       "double backward; the function is the same")
        hard = [k for k in ("hardsigmoid", "hardswish") if self.seen[k]]
        if hard:
            out.append(f"{'/'.join(hard)} ({sum(self.seen[k] for k in hard)} call(s)) evaluated in the "
                       "equivalent clamp form clamp(x/6+1/2, 0, 1), whose backward is differentiable (torch's "
                       "fused hardsigmoid kernel has no double backward)")
        return out


@contextlib.contextmanager
def twice_differentiable() -> Iterator[ExactHardActivations]:
    """Context in which every forward pass has a differentiable input gradient where the
    model's functions allow it: SDPA on its math kernel, clamp-form hard activations."""
    with sdpa_kernel([SDPBackend.MATH]), ExactHardActivations() as mode:
        yield mode
