"""One error hierarchy for the whole package.

Every error a user can cause is an :class:`LcnnAuditError`. The CLI turns it into a
one-line message and ``exit_code`` (2 for bad input), never a traceback.
"""

from __future__ import annotations


class LcnnAuditError(Exception):
    """Base class. ``str(err)`` is a single line that says what was wrong and how to fix it."""

    exit_code: int = 2


class UsageError(LcnnAuditError):
    """An option value or a combination of options is invalid."""


class OutputError(UsageError):
    """An output path cannot be written (a directory, a missing or read-only folder, an input
    file, a full disk). Raised before any computation where it can be foreseen."""


class CheckpointError(LcnnAuditError):
    """A checkpoint is missing, corrupt, untrusted, or does not fit the architecture."""


class ArchitectureError(LcnnAuditError):
    """An ``--arch`` spec cannot be resolved to a model factory."""


class DataError(LcnnAuditError):
    """A dataset is missing, malformed, or does not fit the model."""


class ModelError(LcnnAuditError):
    """The model cannot be audited as given (wrong output shape, no double backward...)."""


class ConfigError(LcnnAuditError):
    """A policy/config file is invalid. Carries every problem found, each with its path."""

    def __init__(self, problems: list[str] | str, source: str = "config"):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        self.source = source
        head = f"{source}: {len(self.problems)} problem(s): " if len(self.problems) > 1 else f"{source}: "
        super().__init__(head + "; ".join(self.problems))


class CheckFailedError(LcnnAuditError):
    """A result failed a hard validity check (e.g. an adversarial example outside its eps-ball).

    This signals a bug or a broken model, so it is an error and never a number.
    """

    exit_code = 3


class ResumeError(LcnnAuditError):
    """A partial result cannot be resumed (different config, corrupt state file)."""
