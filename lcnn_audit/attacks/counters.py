"""Counters to gradient masking: BPDA, EOT and a margin loss (Athalye, Carlini & Wagner, ICML 2018).

* **BPDA** (backward pass differentiable approximation): :func:`bpda` makes named
  submodules (a quantiser, a JPEG-like op, any non-differentiable preprocessing) act as
  the identity in the backward pass while their forward output is unchanged,
  ``out ↦ inp + (out − inp).detach()``. A module whose output shape differs from its
  input's cannot be approximated by the identity and is refused.
* **EOT** (expectation over transformation): for a model that is random at every forward,
  the attack averages its gradient over N passes (``PGD(eot=N)``).
* **Margin loss**: ``max_{k≠y} z_k − z_y`` (Carlini & Wagner) does not saturate where the
  softmax cross-entropy's gradient underflows to zero, so the adaptive attack uses it.

The audit's adaptive attack is PGD with all three (see ``docs/attacks.md``); the worst case
per sample over it and the standard attacks is what ``worst_case`` reports.
"""

from __future__ import annotations

import contextlib
import difflib

import torch
from torch import nn

from ..errors import UsageError


def find_modules(model: nn.Module, names: tuple[str, ...] | list[str]) -> list[nn.Module]:
    """The submodules named (as in ``model.named_modules()``); UsageError listing the names otherwise."""
    table = dict(model.named_modules())
    out, missing = [], []
    for name in names:
        if name in table and name != "":
            out.append(table[name])
        else:
            missing.append(name)
    if missing:
        have = [n for n in table if n]
        hints = [h for m in missing for h in difflib.get_close_matches(m, have, n=1)]
        raise UsageError(f"--bpda: the model has no submodule {', '.join(repr(m) for m in missing)}"
                         + (f" (did you mean {', '.join(hints)}?)" if hints else "")
                         + f"; it has: {', '.join(have[:30])}" + (", ..." if len(have) > 30 else ""))
    return out


def _straight_through(module: nn.Module, args, output):
    if not args or not isinstance(args[0], torch.Tensor) or not isinstance(output, torch.Tensor):
        raise UsageError(f"--bpda: {type(module).__name__} must take and return one tensor")
    inp = args[0]
    if output.shape != inp.shape:
        raise UsageError(f"--bpda: {type(module).__name__} maps shape {tuple(inp.shape)} to {tuple(output.shape)}; "
                         "the identity can only stand in for a module that keeps the shape")
    return inp + (output - inp).detach()


@contextlib.contextmanager
def bpda(model: nn.Module, names: tuple[str, ...] | list[str]):
    """Within the block, each named submodule's backward pass is the identity (BPDA)."""
    handles = [m.register_forward_hook(_straight_through) for m in find_modules(model, names)] if names else []
    try:
        yield model
    finally:
        for h in handles:
            h.remove()
