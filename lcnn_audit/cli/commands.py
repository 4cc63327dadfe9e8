"""Import every command module so that it registers itself on the app."""

from . import attack, bound, convert, curvature, demo, finetune, gate, info, report, robustness  # noqa: F401
