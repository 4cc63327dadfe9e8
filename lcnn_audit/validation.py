"""Option values that no validation may let through: NaN and infinite numbers.

NaN compares False with everything, so a check such as ``if eps < 0: raise`` lets
``--eps nan`` pass and the audit then reports NaN (or, worse, a plausible number). Every
options class calls :func:`check_finite` first; the CLI calls it on every float option.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable
from typing import Any

from .errors import UsageError


def flag(name: str) -> str:
    """``fd_h`` -> ``--fd-h`` (the policy loader turns it back into ``fd_h``)."""
    return "--" + name.replace("_", "-")


def non_finite(value: Any) -> list[float]:
    """The NaN/infinite floats in ``value`` (a number, or a list/tuple/dict of them)."""
    if isinstance(value, float):
        return [] if math.isfinite(value) else [value]
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        return [v for item in value for v in non_finite(item)]
    return []


def finite_problems(items: Iterable[tuple[str, Any]], name: Callable[[str], str] = flag) -> list[str]:
    """A message per (name, value) item holding NaN or infinite values."""
    return [f"{name(k)} must be a finite number, got {', '.join(str(v) for v in bad)}"
            for k, v in items if (bad := non_finite(v))]


def check_finite(options: Any, name: Callable[[str], str] = flag) -> None:
    """Raise one UsageError naming every float field of the dataclass ``options`` that is NaN
    or infinite (nested option dataclasses are checked by their own ``validate``)."""
    problems = finite_problems(((f.name, getattr(options, f.name)) for f in dataclasses.fields(options)), name)
    if problems:
        raise UsageError("; ".join(problems))
