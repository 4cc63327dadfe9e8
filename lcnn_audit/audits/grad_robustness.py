"""The gradient-robustness audit (``lcnn-audit grad-robustness``, LCNN §4.1, Fig. 2): relative
gradient change ‖∇f(x+ε) − ∇f(x)‖/‖∇f(x)‖ against ‖ε‖ beside Proposition 1, for one model
(:func:`run`) or several on the same data (:func:`compare`)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext

from torch import nn

from ..data import ImageData
from ..errors import UsageError
from ..geometry.robustness import GradRobustnessOptions, combine_models, grad_robustness
from ..results import AuditResult
from ..runner import Progress

#: ``progress(name)`` -> a context manager yielding a ``(done, total)`` callback (or None)
ProgressFactory = Callable[[str], AbstractContextManager]


def run(model: nn.Module, data: ImageData, options: GradRobustnessOptions | None = None, *, batch_size: int = 128,
        state_path=None, resume: bool = False, keep_state: bool = False, progress: Progress | None = None,
        config: dict | None = None) -> AuditResult:
    """:func:`~lcnn_audit.geometry.robustness.grad_robustness` of one model."""
    return grad_robustness(model, data, options, batch_size=batch_size, state_path=state_path, resume=resume,
                           keep_state=keep_state, progress=progress, config=config)


def compare(models: Iterable[tuple[str, nn.Module]], data: ImageData, options: GradRobustnessOptions | None = None,
            *, batch_size: int = 128, progress: ProgressFactory | None = None) -> AuditResult:
    """Several models on the same data and noise draws, as one result
    (:func:`~lcnn_audit.geometry.robustness.combine_models`: ``summary["models"]``).

    ``models`` yields ``(name, model)`` pairs and may load each model when asked for it, so
    that one model is in memory at a time; ``progress(name)`` gives each run its progress
    callback. Each model's config records ``name`` as its checkpoint."""
    results, names = [], []
    for name, model in models:
        with (progress(name) if progress is not None else nullcontext(None)) as bar:
            results.append(run(model, data, options, batch_size=batch_size, progress=bar,
                               config={"checkpoint": name, "model": getattr(model, "recipe", {})}))
        names.append(name)
    if not results:
        raise UsageError("compare needs at least one model")
    return combine_models(results, names)
