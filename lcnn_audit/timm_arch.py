"""Compatibility re-exports: ``--arch timm:NAME`` moved to :mod:`lcnn_audit.model.timm_arch`
(issue 13)."""

from .model.timm_arch import HF_PREFIX, PREFIX, is_timm, resolve_timm

__all__ = ["HF_PREFIX", "PREFIX", "is_timm", "resolve_timm"]
