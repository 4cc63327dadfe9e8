"""Compatibility re-exports: the recipe moved to :mod:`lcnn_audit.model.recipe` (its JSON
parsing to :mod:`lcnn_audit.model.checkpoint`), issue 13."""

from .model.checkpoint import HINT_ARCH, parse_recipe
from .model.recipe import (
    HINT_CONVERT,
    HINT_NORM,
    check_recipe_arch,
    reload_hint,
    validate_convert,
    validate_normalize,
    validate_recipe,
)

__all__ = ["HINT_ARCH", "HINT_CONVERT", "HINT_NORM", "check_recipe_arch", "parse_recipe", "reload_hint",
           "validate_convert", "validate_normalize", "validate_recipe"]
