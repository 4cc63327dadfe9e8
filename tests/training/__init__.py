"""Tests of lcnn_audit.training (mirrors the package)."""
