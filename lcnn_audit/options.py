"""One style for every options class: frozen dataclasses that list their problems.

An options class (``CurvatureOptions``, ``AttackOptions``, ``TrainConfig``...) is a frozen
dataclass with ``problems() -> list[Problem]``; :func:`validate` raises **one**
:class:`~lcnn_audit.errors.UsageError` listing all of them. A :class:`Problem` names the
dataclass field it is about; the front end decides how a field is spelled: the CLI renders
``max_iter`` as ``--max-iter`` (:func:`flag_label`), a gate policy as ``audits.curvature.max_iter``
(:func:`key_label`), plain Python as ``max_iter``. Messages mention other fields as
``{other_field}`` so that they are spelled the same way.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from .errors import UsageError
from .validation import non_finite

Label = Callable[[str], str]


def key_label(name: str) -> str:
    """A field as a Python / policy key: ``max_iter``."""
    return name


def flag_label(name: str) -> str:
    """A field as a CLI flag: ``max_iter`` -> ``--max-iter``. A nested field
    (``curvature.max_iter``) is its last part: the CLI flattens nested options."""
    return "--" + name.rpartition(".")[2].replace("_", "-")


class _Labels(dict):
    def __init__(self, label: Label):
        super().__init__()
        self.label = label

    def __missing__(self, key: str) -> str:
        return self.label(key)


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an options object.

    ``field`` is the dataclass field (``None``: the object as a whole); ``message`` follows the
    field's name, e.g. ``Problem("tol", "must lie in (0, 1), got 2")``. Other fields are written
    ``{name}`` in ``message``."""

    field: str | None
    message: str

    def render(self, label: Label = key_label) -> str:
        """The message with the field (and ``{names}`` in it) written by ``label``."""
        text = self.message.format_map(_Labels(label)) if "{" in self.message else self.message
        return f"{label(self.field)} {text}" if self.field else text

    def __contains__(self, text: str) -> bool:
        """``"finite" in problem``: a substring of :meth:`render` (Python names), as on the
        plain-string problem lists this class replaced."""
        return text in self.render()


def render_problems(problems: Iterable[Problem], label: Label = key_label) -> str:
    """The problems rendered and joined by ``; ``."""
    return "; ".join(p.render(label) for p in problems)


@runtime_checkable
class Options(Protocol):
    """What every options class provides."""

    def problems(self) -> list[Problem]:
        """Every problem of these options (empty when valid)."""

    def validate(self) -> None:
        """Raise one OptionsError listing every problem."""


def finite_problems(options: Any) -> list[Problem]:
    """A :class:`Problem` per float field of the dataclass ``options`` that is NaN or infinite."""
    out = []
    for f in dataclasses.fields(options):
        bad = non_finite(getattr(options, f.name))
        if bad:
            out.append(Problem(f.name, f"must be a finite number, got {', '.join(str(v) for v in bad)}"))
    return out


def literal(value: Any) -> str:
    """``repr(value)`` for a :class:`Problem` message: braces doubled, so that a user's value
    (``method: "{x}"``) is shown as typed, never read as a ``{field}`` reference."""
    return repr(value).replace("{", "{{").replace("}", "}}")


def one_of(name: str, value: Any, choices: Iterable[Any]) -> list[Problem]:
    """``[Problem]`` if ``value`` is not one of ``choices``, else ``[]``."""
    choices = tuple(choices)
    if value in choices:
        return []
    return [Problem(name, f"is {literal(value)}; use one of {', '.join(map(str, choices))}")]


def nested(prefix: str, problems: Iterable[Problem]) -> list[Problem]:
    """The ``problems`` of an options object held in the field ``prefix``, with fields
    ``prefix.field`` (``curvature.tol``: the CLI shows ``--tol``, a policy its YAML path)."""
    return [Problem(f"{prefix}.{p.field}" if p.field else None, p.message) for p in problems]


def validate(options: Options) -> None:
    """Raise one UsageError listing every problem of ``options`` (nothing if there are none)."""
    problems = options.problems()
    if problems:
        raise OptionsError(problems)


class OptionsError(UsageError):
    """A UsageError that carries structured :class:`Problem` s; ``str()`` uses Python names,
    :meth:`render` lets the CLI or the gate spell the fields its own way."""

    def __init__(self, problems: list[Problem], label: Label = key_label):
        self.problems = list(problems)
        super().__init__(render_problems(self.problems, label))

    def render(self, label: Label = key_label) -> str:
        """All problems, rendered by ``label``."""
        return render_problems(self.problems, label)
