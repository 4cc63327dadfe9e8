"""Compatibility re-exports: loading moved to :mod:`lcnn_audit.model` (issue 13).

``load_model``, ``save_model``, ``resolve_device``, ``build_from_recipe``: :mod:`.model.load`;
the wrapper (``AuditModel``, ``Normalize``, ``unwrap``, ``set_eval``, ``parse_normalize``,
``check_model_data``, ``require_finite``): :mod:`.model.wrapper`; ``build_arch``,
``parse_kwargs``: :mod:`.model.arch`; checkpoint reading and writing: :mod:`.model.checkpoint`.
New code imports from there; every name importable here before keeps working.
"""

from .model.arch import build_arch, parse_kwargs
from .model.checkpoint import (
    RECIPE_KEY,
    STATE_KEYS,
    STRIP_PREFIXES,
    RawCheckpoint,
    _strip,
    extract_state_dict,
    fit_state_dict,
    read_checkpoint,
    write_checkpoint,
)
from .model.load import DEMO_CHECKPOINT, build_from_recipe, load_model, resolve_device, save_model
from .model.wrapper import (
    AuditModel,
    Normalize,
    check_model_data,
    model_device,
    model_dtype,
    parse_normalize,
    preserve_training_flags,
    require_finite,
    set_eval,
    unwrap,
)

__all__ = [
    "DEMO_CHECKPOINT", "RECIPE_KEY", "STATE_KEYS", "STRIP_PREFIXES", "AuditModel", "Normalize", "RawCheckpoint",
    "_strip", "build_arch", "build_from_recipe", "check_model_data", "extract_state_dict", "fit_state_dict",
    "load_model", "model_device", "model_dtype", "parse_kwargs", "parse_normalize", "preserve_training_flags",
    "read_checkpoint", "require_finite", "resolve_device", "save_model", "set_eval", "unwrap", "write_checkpoint",
]
