"""A JSON Schema of gate policies, for editor completion (YAML language servers read it).

Generated from what the validator reads - the policy dataclasses and their annotations, the
option classes of each audit, the allowed top-level and check keys and the named choices -
so it cannot drift from :func:`~lcnn_audit.gates.load_policy`. The validator stays the
authority (it also checks ranges, metric paths and baselines); the schema describes shapes
and names. ``docs/policy.schema.json`` is this function's output (a test keeps it current);
point an editor at it with ``# yaml-language-server: $schema=docs/policy.schema.json``.
"""

from __future__ import annotations

import dataclasses
import types
from typing import Any, Union, get_args, get_origin, get_type_hints

from ..data import DATASETS, SPLITS
from ..geometry.measures import JACOBIAN_MODES, METHODS
from ..geometry.objective import LABELS, TARGETS
from .metrics import AUDITS
from .policy import BASELINE, BOUNDS, CHECK_KEYS, HIDDEN_FIELDS, TOP_KEYS, DataSpec, ModelSpec, _option_classes

SCHEMA_ID = "https://lcnn-audit.invalid/policy.schema.json"
FRACTION = r"^\s*[-+0-9.eE]+\s*(/\s*[-+0-9.eE]+\s*)?$"  # 1e-3 or 8/255: number() reads both
#: named choices compared exactly by the validator (or the option's own validate): an enum
CHOICES: dict[tuple[str, str], tuple[str, ...]] = {
    ("CurvatureOptions", "method"): METHODS,
    ("CurvatureOptions", "target"): TARGETS,
    ("CurvatureOptions", "label"): LABELS,
    ("CurvatureOptions", "jacobian"): JACOBIAN_MODES,
    ("CurvatureOptions", "dtype"): ("float32", "float64"),
    ("DataSpec", "split"): SPLITS,
}


def _hints() -> dict[tuple[str, str], tuple[str, ...]]:
    """Choices read case-insensitively (or also as comma lists): completion hints, not an enum."""
    from ..attacks.options import ATTACKS, NORMS

    return {("AttackOptions", "attacks"): tuple(ATTACKS), ("AttackOptions", "norms"): tuple(NORMS),
            ("AttackOptions", "loss"): ("ce", "margin"),
            ("AttackOptions", "version"): ("standard", "plus", "rand", "custom"),
            ("DataSpec", "name"): ("demo", *DATASETS)}


# JSON-schema types of the scalar hints (factories: every schema gets its own dicts).
_SCALAR = {
    type(None): lambda: {"type": "null"},
    bool: lambda: {"type": "boolean"},
    int: lambda: {"type": "integer"},
    float: lambda: {"anyOf": [{"type": "number"}, {"type": "string", "pattern": FRACTION}]},
}


def _type(hint: Any, enum: tuple[str, ...] | None = None, examples: tuple[str, ...] | None = None) -> dict:
    origin, args = get_origin(hint), get_args(hint)
    if hint is Any:
        return {}
    if origin in (Union, types.UnionType):
        return {"anyOf": [_type(a, enum, examples) for a in args]}
    if isinstance(hint, type) and hint in _SCALAR:
        return _SCALAR[hint]()
    if hint is str:
        return _string(enum, examples)
    if origin in (tuple, list):
        item = args[0] if args else Any
        arr = {"type": "array", "items": _type(item, enum, examples)}
        # a single value stands for a one-element list (e.g. eps: 0.1, attacks: pgd)
        return {"anyOf": [arr, _type(item, enum, examples)]} if item is not Any else arr
    if origin is dict:
        return {"type": "object", "additionalProperties": _type(args[1] if len(args) > 1 else Any)}
    if dataclasses.is_dataclass(hint):
        return _object(hint)
    return {}


def _string(enum: tuple[str, ...] | None, examples: tuple[str, ...] | None) -> dict:
    if enum:
        return {"type": "string", "enum": list(enum)}
    return {"type": "string", "examples": list(examples)} if examples else {"type": "string"}


def _object(cls: type, allow_bool: bool = False) -> dict:
    hints, names = get_type_hints(cls), _hints()
    doc = " ".join((cls.__doc__ or "").split())
    props, required = {}, []
    for f in dataclasses.fields(cls):
        if not f.init or f.name in HIDDEN_FIELDS:
            continue
        key = (cls.__name__, f.name)
        prop = _type(hints[f.name], CHOICES.get(key), names.get(key))
        if f.default is not dataclasses.MISSING and isinstance(f.default, (bool, int, float, str, type(None))):
            prop = {**prop, "default": f.default}
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            required.append(f.name)
        props[f.name] = prop
    obj: dict = {"type": "object", "properties": props, "additionalProperties": False}
    if doc:
        obj["description"] = doc
    if required:
        obj["required"] = required
    if allow_bool:  # audits.NAME: true (defaults) or false (off)
        return {"anyOf": [obj, {"type": "boolean"}, {"type": "null"}], "description": doc}
    return obj


def _check() -> dict:
    bound = {"anyOf": [{"type": "number"}, {"type": "string", "pattern": FRACTION}, {"const": BASELINE}]}
    props = {
        "name": {"type": "string", "description": "Shown in the verdict (default: made from metric and bound)."},
        "metric": {"type": "string", "description": "Dotted path into an audit result, e.g. "
                                                    "curvature.curvature.mean or attack.pgd.l2.0.1.robust_accuracy."},
        "max": bound, "min": bound,
        "equals": {"anyOf": [{"type": "number"}, {"type": "boolean"}, {"type": "string"}, {"type": "null"}]},
        "relative_to": {"type": "string", "description": "A baseline result or verdict JSON (bound: baseline)."},
        "tolerance": {"anyOf": [{"type": "number", "minimum": 0},
                                {"type": "string", "pattern": r"^\s*[0-9.eE+-]+%\s*$"}]},
        "statistical": {"type": "boolean", "description": "Accuracies: compare the 95% interval, not the estimate."},
    }
    assert set(props) == set(CHECK_KEYS), "CHECK_KEYS changed: update the schema's check properties"
    return {"type": "object", "properties": props, "additionalProperties": False, "required": ["metric"],
            "oneOf": [{"required": [b]} for b in BOUNDS]}


def policy_schema() -> dict:
    """The JSON Schema (draft 2020-12) of a version-1 gate policy."""
    classes = _option_classes()
    assert set(classes) == set(AUDITS)
    audits = {name: _object(cls, allow_bool=True) for name, cls in classes.items()}
    audits.update({name.replace("_", "-"): audits[name] for name in list(audits) if "_" in name})
    props = {
        "version": {"const": 1},
        "name": {"type": "string"},
        "model": _object(ModelSpec),
        "data": _object(DataSpec),
        "audits": {"type": "object", "properties": audits, "additionalProperties": False},
        "checks": {"type": "array", "minItems": 1, "items": _check()},
    }
    assert set(props) == set(TOP_KEYS), "TOP_KEYS changed: update the schema"
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": SCHEMA_ID,
            "title": "lcnn-audit gate policy", "type": "object", "properties": props,
            "required": ["checks"], "additionalProperties": False}
