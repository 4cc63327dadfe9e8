"""Lazy package attributes (PEP 562), shared by every package whose ``__init__`` must stay cheap.

``import lcnn_audit``, ``lcnn_audit.geometry`` ... import no torch: a name is imported from its
submodule on first access and then cached in the package's namespace."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any


def lazy_attributes(package: str, namespace: MutableMapping[str, Any], exports: Mapping[str, str],
                    aliases: Mapping[str, tuple[str, str]] | None = None
                    ) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``: ``exports`` maps a name to the submodule that
    defines it (``"measures"`` or ``".measures"``, relative to ``package``); ``aliases`` maps a
    name to ``(submodule, attribute)`` when it is defined under another name."""
    aliases = dict(aliases or {})

    def __getattr__(name: str) -> Any:
        if name in exports or name in aliases:
            module, attr = aliases.get(name, (exports.get(name, ""), name))
            value = getattr(importlib.import_module(module if module.startswith(".") else f".{module}", package),
                            attr)
            namespace[name] = value
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted([*namespace, *exports, *aliases])

    return __getattr__, __dir__
