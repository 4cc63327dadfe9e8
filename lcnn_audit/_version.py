"""The package version, in a module of its own so that library modules can read it without
importing the package root (which would make every such module part of one import cycle)."""

__version__ = "0.1.0"
