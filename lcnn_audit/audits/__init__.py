"""Command-level functions: one module per ``lcnn-audit`` command, each the library call
that the command's CLI parses options for and renders (issue 13)."""
