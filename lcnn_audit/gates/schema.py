"""Policy plumbing: YAML line numbers, and values checked against dataclass annotations."""

from __future__ import annotations

import types
from typing import Any, Union, get_args, get_origin

import yaml

from ..errors import ConfigError
from .metrics import number

#: a policy is a few hundred bytes; anything near this is not a policy
MAX_POLICY_BYTES = 1 << 20
#: YAML aliases let a small file stand for an exponentially large document ("billion laughs");
#: the document a policy expands to, counted in nodes, is bounded before anything walks it
MAX_POLICY_NODES = 100_000


def check_expansion(node, source: str) -> None:
    """Raise ConfigError if the composed YAML ``node`` expands (aliases followed) to more than
    :data:`MAX_POLICY_NODES` nodes. Linear time: each distinct node's size is computed once."""
    sizes: dict[int, int] = {}
    stack = [(node, False)] if node is not None else []
    while stack:  # iterative post-order: no recursion limit on deep documents
        n, done = stack.pop()
        if id(n) in sizes:
            continue
        kids = _children(n)
        if done or not kids:
            sizes[id(n)] = min(1 + sum(sizes.get(id(k), 0) for k in kids), MAX_POLICY_NODES + 1)
            continue
        stack.append((n, True))
        stack += [(k, False) for k in kids if id(k) not in sizes]
    total = sizes.get(id(node), 0)
    if total > MAX_POLICY_NODES:
        raise ConfigError(f"the YAML expands to more than {MAX_POLICY_NODES} values through aliases (*name); "
                          "a policy needs none of that: write the values out", source)


def _children(node) -> list:
    if isinstance(node, yaml.MappingNode):
        return [x for kv in node.value for x in kv]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def line_map(node, path: str, lines: dict[str, int], dups: list[str]) -> None:
    """Fill ``lines`` with the 1-based line of every YAML path (``checks[0].max``) under ``node``,
    and ``dups`` with the paths of duplicate keys (which YAML loading silently drops)."""
    if isinstance(node, yaml.MappingNode):
        seen = set()
        for k, val in node.value:
            p = join(path, str(k.value))
            if p in seen:
                dups.append(p)
            seen.add(p)
            lines[p] = k.start_mark.line + 1
            line_map(val, p, lines, dups)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            p = f"{path}[{i}]"
            lines[p] = item.start_mark.line + 1
            line_map(item, p, lines, dups)


def join(path: str, key: str) -> str:
    """``path.key`` (``key`` at the root)."""
    return f"{path}.{key}" if path else key


# The scalar hints a value must already match exactly (bool is not an int here).
_EXACT = {
    type(None): lambda v: v is None,
    bool: lambda v: isinstance(v, bool),
    int: lambda v: isinstance(v, int) and not isinstance(v, bool),
    str: lambda v: isinstance(v, str),
}


def coerce(value: Any, hint: Any) -> Any:
    """``value`` as the annotated type (lists become tuples, numbers floats); ValueError if it does not fit."""
    origin, args = get_origin(hint), get_args(hint)
    if hint is Any:
        return value
    if origin in (Union, types.UnionType):
        for a in sorted(args, key=lambda a: a is str):  # try str last so "8/255" becomes a number
            try:
                return coerce(value, a)
            except (ValueError, ZeroDivisionError):
                continue
        raise ValueError(value)
    if isinstance(hint, type) and hint in _EXACT:
        if _EXACT[hint](value):
            return value
        raise ValueError(value)
    if hint is float:
        try:
            return number(value)
        except ZeroDivisionError:
            raise ValueError(value) from None
    if origin in (tuple, list):
        item = args[0] if args else Any
        values = value if isinstance(value, (list, tuple)) else [value]
        out = [coerce(v, item) for v in values]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        if not isinstance(value, dict):
            raise ValueError(value)
        kt, vt = args if args else (Any, Any)
        return {coerce(k, kt): coerce(v, vt) for k, v in value.items()}
    raise ValueError(value)


def describe(hint: Any) -> str:
    """The type hint in words, for error messages ("a number", "a list of strings")."""
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, types.UnionType):
        return " or ".join(dict.fromkeys(describe(a) for a in args))
    if origin in (tuple, list):
        return f"a list of {describe(args[0]).removeprefix('a ').removeprefix('an ')}s" if args else "a list"
    if origin is dict:
        return "a mapping"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string",
            type(None): "null"}.get(hint, str(hint))

