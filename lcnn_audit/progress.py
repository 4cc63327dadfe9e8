"""The progress protocol between the library and whoever renders it.

Long loops call ``progress(done, total)`` (``total`` ``None`` when unknown) and never print;
the CLI renders the calls as a bar or as heartbeat lines (:mod:`lcnn_audit.cli.progress`),
a notebook may pass any callable. A renderer that also has ``reset(description)`` is told
when a loop of a different kind starts (a new epoch, convert's spectral-norm fitting after
its accuracy pass), so that its rate and ETA start afresh.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class ProgressCallback(Protocol):
    """``progress(done, total)``: called as a loop advances (``total`` None when unknown)."""

    def __call__(self, done: int, total: int | None) -> None:
        """Report ``done`` of ``total``."""


def new_phase(progress: ProgressCallback | None, description: str) -> None:
    """Tell ``progress`` (if it can be told) that a new loop, ``description``, starts."""
    reset = getattr(progress, "reset", None)
    if callable(reset):
        reset(description)


class WithinBatch:
    """Wraps the ``progress`` of :func:`~lcnn_audit.runner.run_batches` so that a ``compute``
    whose batch runs several stages (attacks, eps) can report between them:
    ``stage(fraction, n)`` reports ``fraction`` of the current ``n``-sample batch done."""

    def __init__(self, progress: ProgressCallback | None):
        self.progress = progress
        self.done, self.total = 0, None

    def __call__(self, done: int, total: int | None) -> None:
        """Record and forward ``done`` of ``total``."""
        self.done, self.total = done, total
        if self.progress is not None:
            self.progress(done, total)

    def stage(self, fraction: float, n: int) -> None:
        """Report ``fraction`` of the next ``n`` units as done."""
        if self.progress is not None and 0 < fraction < 1:
            self.progress(self.done + int(fraction * n), self.total)
