"""Import every command module so that it registers itself on the app."""

from . import curvature, demo, info  # noqa: F401
