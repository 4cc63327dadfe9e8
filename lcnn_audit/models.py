"""Compatibility re-exports: the built-in architectures moved to :mod:`lcnn_audit.model.builtin`
(issue 13). ``--arch lcnn_audit.models:SmallCNN`` keeps working through this module."""

from .model.builtin import ACTIVATIONS, BUILTIN_ARCHS, MLP, POOLS, SmallCNN

__all__ = ["ACTIVATIONS", "BUILTIN_ARCHS", "MLP", "POOLS", "SmallCNN"]
