"""The recipe embedded in a safetensors checkpoint: its validation and its trust rule.

A recipe (metadata key ``lcnn_audit.recipe``, written by ``save_model``) records how to
rebuild a model: ``arch``, ``arch_kwargs``, ``normalize`` and ``convert``. It comes from
an input file, so it is untrusted (see ``docs/security.md``):

* its types are checked here, each problem one :class:`CheckpointError`;
* its ``arch`` may name only what runs no code from outside lcnn-audit and torchvision:
  a built-in architecture or a torchvision model name. A ``file.py:factory`` or
  ``package.module:factory`` is refused before anything is imported, unless the user
  repeats it with ``--arch`` or passes ``--trust-checkpoint``. ``convert`` is rebuilt by
  lcnn-audit's own :func:`lcnn_audit.convert.rebuild_converted`.

The JSON entry itself is parsed where the file is read (:func:`.checkpoint.parse_recipe`).
This module reads :class:`~lcnn_audit.convert.ConvertOptions` to check a ``convert`` block,
so it sits above :mod:`lcnn_audit.convert` (which needs only :mod:`.wrapper` and
:mod:`.checkpoint`); :mod:`.load` is above both.
"""

from __future__ import annotations

import json
import math
from typing import Any

from ..convert import RECIPE_VERSION, ConvertOptions
from ..errors import CheckpointError, UsageError
from .checkpoint import HINT_ARCH
from .checkpoint import invalid_recipe as _bad
from .wrapper import parse_normalize

HINT_NORM = "pass --normalize to override it"
HINT_CONVERT = "re-convert the original model"


def _finite_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _str_list(v) -> bool:
    return isinstance(v, list) and all(isinstance(s, str) for s in v)


def validate_recipe(recipe: Any, where: str, *, arch: bool = True, normalize: bool = True) -> dict:
    """Check the type of every field that will be used; raise one :class:`CheckpointError`.

    ``arch=False``: ``arch``/``arch_kwargs`` are overridden by ``--arch``; ``normalize=False``:
    by ``--normalize``. ``convert`` is always used, so always checked."""
    if not isinstance(recipe, dict):
        raise _bad(where, f"it is a JSON {type(recipe).__name__}, not an object", HINT_ARCH)
    if arch:
        name = recipe.get("arch")
        if name is not None and (not isinstance(name, str) or not name.strip()):
            raise _bad(where, f"'arch' must be a non-empty string, got {json.dumps(name)[:60]}", HINT_ARCH)
        kwargs = recipe.get("arch_kwargs")
        if kwargs is not None and not isinstance(kwargs, dict):
            raise _bad(where, f"'arch_kwargs' must be an object of keyword arguments, got a JSON "
                              f"{type(kwargs).__name__}", HINT_ARCH)
    if normalize:
        validate_normalize(recipe.get("normalize"), where)
    conv = recipe.get("convert")
    if conv is not None:
        validate_convert(conv, where)
    return recipe


def validate_normalize(norm, where: str) -> None:
    """``None``, a normalisation name/spec string, or ``[means, stds]`` of equal length, stds > 0."""
    if norm is None or isinstance(norm, str):
        if isinstance(norm, str):
            try:
                parse_normalize(norm)
            except UsageError as err:
                raise _bad(where, f"'normalize' {norm!r}: {err}", HINT_NORM) from None
        return
    if not (isinstance(norm, list) and len(norm) == 2 and all(isinstance(p, list) and p for p in norm)):
        raise _bad(where, "'normalize' must be a pair of non-empty lists (the means, then the stds)", HINT_NORM)
    mean, std = norm
    if len(mean) != len(std):
        raise _bad(where, f"'normalize' has {len(mean)} means but {len(std)} stds", HINT_NORM)
    if not all(_finite_number(v) for v in mean + std):
        raise _bad(where, "'normalize' values must be finite numbers", HINT_NORM)
    if any(s <= 0 for s in std):
        raise _bad(where, f"'normalize' standard deviations must be positive, got {std}", HINT_NORM)


def validate_convert(conv, where: str) -> None:
    """The ``convert`` block that :func:`lcnn_audit.convert.rebuild_converted` reads."""
    if not isinstance(conv, dict):
        raise _bad(where, f"'convert' must be an object, got a JSON {type(conv).__name__}", HINT_CONVERT)
    if conv.get("version") != RECIPE_VERSION:
        raise CheckpointError(f"converted checkpoint {where} has recipe version {conv.get('version')!r}; this "
                              f"lcnn-audit reads version {RECIPE_VERSION}", HINT_CONVERT)
    options = conv.get("options", {})
    if not isinstance(options, dict):
        raise _bad(where, "'convert.options' must be an object", HINT_CONVERT)
    for key in ("activations", "batchnorm", "linear"):
        if not _str_list(conv.get(key, [])):
            raise _bad(where, f"'convert.{key}' must be a list of module names", HINT_CONVERT)
    shapes = conv.get("conv", {})
    if not isinstance(shapes, dict) or not all(
            isinstance(s, list) and s and all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in s)
            for s in shapes.values()):
        raise _bad(where, "'convert.conv' must map module names to input shapes (lists of positive integers)",
                   HINT_CONVERT)
    for name, value in options.items():
        problem = _option_problem(name, value)
        if problem:
            raise _bad(where, f"'convert.options.{name}' must be {problem}", HINT_CONVERT)
    try:
        ConvertOptions.from_dict(options).validate()
    except UsageError as err:
        raise _bad(where, f"'convert.options': {' '.join(str(err).split())}", HINT_CONVERT) from None


def _option_problem(name: str, value) -> str | None:
    """What a recorded :class:`~lcnn_audit.convert.ConvertOptions` field must be, if ``value`` is not."""
    if name == "activation_kinds":
        return None if _str_list(value) else "a list of names"
    if name in ("activations", "batchnorm", "conv", "linear", "fold_into_bn", "use_fx"):
        return None if isinstance(value, bool) else "true or false"
    if name in ("beta_init", "tol"):
        return None if _finite_number(value) and value > 0 else "a positive finite number"
    if name == "gamma_init":
        return None if value is None or (_finite_number(value) and value > 0) else "null or a positive number"
    if name in ("n_power_iterations", "max_iter"):
        ok = isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 1_000_000
        return None if ok else "an integer between 0 and 1000000"
    return None  # unknown keys are ignored by ConvertOptions.from_dict


def reload_hint(arch: str, path) -> str | None:
    """A notice for a saved model whose recipe names a user factory (it will need ``--arch``)."""
    if ":" not in str(arch):
        return None
    return (f"{path} records architecture {arch}, your own factory: a recipe may not name code, so load it with "
            f"--arch {arch} (see docs/security.md)")


def _is_torchvision_class(arch: str) -> bool:
    """``torchvision.models:Name`` where ``Name`` is an ``nn.Module`` class of torchvision's model
    namespace: building it runs only torchvision's code (functions such as
    ``load_state_dict_from_url`` are not classes and stay refused)."""
    module, _, name = arch.partition(":")
    if module != "torchvision.models" or not name.isidentifier():
        return False
    import torchvision.models
    from torch import nn

    obj = vars(torchvision.models).get(name)
    return isinstance(obj, type) and issubclass(obj, nn.Module)


def check_recipe_arch(arch: str, where: str, trust_checkpoint: bool) -> None:
    """Refuse a recipe ``arch`` that would import user code, unless ``trust_checkpoint``."""
    if trust_checkpoint or ":" not in arch:
        return  # names without ':' resolve only through the built-in and torchvision registries
    if arch.startswith("timm:") and arch.count(":") == 1:
        return  # a timm registry name (lcnn_audit.model.timm_arch); timm:hf-hub: ids would fetch from the network
    if _is_torchvision_class(arch):
        return  # a model class of torchvision itself (e.g. a VisionTransformer with recipe kwargs)
    raise CheckpointError(
        f"checkpoint {where} has an embedded recipe naming architecture {arch!r}, a factory outside lcnn-audit "
        f"and torchvision; it was not imported, since importing and calling it would run code from the file's "
        f"metadata. If you trust that code, pass --arch {arch} explicitly (or --trust-checkpoint; in a gate "
        "policy model.arch or model.trust_checkpoint, with gate --trust-policy)")
