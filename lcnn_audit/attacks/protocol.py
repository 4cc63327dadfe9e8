"""What every attack provides: the :class:`Attack` protocol and the shape of its output.

An attack is a small object that holds its threat model (norm, eps, budget). The audit
builds it from :class:`~lcnn_audit.attacks.AttackOptions` through the registry
(:data:`lcnn_audit.attacks.registry.ATTACKS`, ``ATTACKS[name].from_options(...)``) and calls
``run(model, x, y, index)`` on inputs in [0, 1]. ``index`` holds dataset indices that seed
per-sample random draws, so a sample's result does not depend on its batch (except where an
attack says ``batch_independent = False``). ``tests/attacks/test_contract.py`` checks the
contract for every registry entry.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch


@runtime_checkable
class AttackOutput(Protocol):
    """What ``run`` returns: at least the adversarial examples (the audit re-checks them)."""

    x_adv: torch.Tensor


@runtime_checkable
class MinNormResult(AttackOutput, Protocol):
    """A minimal-norm attack's output: ``norm`` is ``‖x_adv − x‖`` per sample."""

    norm: torch.Tensor
    adversarial: torch.Tensor


@runtime_checkable
class Attack(Protocol):
    """An adversarial attack.

    * ``name``: its key in the registry and in per-sample field names;
    * ``norms``: the threat models it supports;
    * ``minimal_norm``: True for attacks without an eps (DeepFool, C&W) whose ``run`` returns
      the distance to the adversarial example found (:class:`MinNormResult`); the audit runs
      them once and reads every eps of the sweep off those distances;
    * ``white_box``: True when it only follows the model's gradient (AutoAttack holds the
      black-box Square attack, so it is not);
    * ``batch_independent``: True when a sample's result does not depend on the other samples
      of its batch (random draws seeded per sample by ``index``); AutoAttack's reference code
      draws per batch, so it is False there;
    * ``from_options(options, norm, eps, steps)``: the attack configured by ``AttackOptions``;
    * ``run(model, x, y, index)`` returns an :class:`AttackOutput`; calling the attack returns
      ``run(...).x_adv``.

    Attacks never change ``model.training`` and never write parameter ``.grad``.
    """

    name: str
    norms: tuple[str, ...]
    minimal_norm: bool
    white_box: bool
    batch_independent: bool

    @classmethod
    def from_options(cls, options: Any, norm: str, eps: float | None = None, steps: int | None = None) -> Attack:
        """The attack for ``norm`` and ``eps`` built from an :class:`AttackOptions`."""

    def run(self, model, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor | None = None) -> AttackOutput:
        """Attack the batch; the output holds ``x_adv`` and the attack's own bookkeeping."""

    def __call__(self, model, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        """``run(...).x_adv``."""
