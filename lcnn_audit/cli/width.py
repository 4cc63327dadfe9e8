"""Table width for the CLI: never cut a number because stdout is not a wide terminal.

rich lays a table out in the console's width, which is 80 columns whenever stdout is not a
terminal (a CI log, a pipe, a file). Cells that do not fit are wrapped or cut with ``…``,
which turned ``6.592e-05`` into ``6.592e-…``. Here, when stdout is not a terminal and
``$COLUMNS`` is not set, a table is printed as wide as its widest row needs (a log has no
right margin). On a terminal, or with ``COLUMNS=N`` set, rich's width is used; numeric
columns are ``no_wrap`` so a narrow terminal folds text columns first.
"""

from __future__ import annotations

import os

from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

MAX_LOG_WIDTH = 400


def natural_width(console: Console, renderable) -> int:
    """The width ``renderable`` needs to print without wrapping (capped at 400 columns)."""
    opts = console.options.update_width(MAX_LOG_WIDTH)
    return min(MAX_LOG_WIDTH, Measurement.get(console, opts, renderable).maximum)


def print_wide(console: Console, *objects, **kw) -> None:
    """``console.print``; tables get their natural width when stdout is not a terminal."""
    if not any(isinstance(o, Table) for o in objects):
        console.print(*objects, **kw)
        return
    wide = not console.is_terminal and "COLUMNS" not in os.environ and "width" not in kw
    for obj in objects:
        if isinstance(obj, Table):
            for col in obj.columns:
                if col.justify == "right":
                    col.no_wrap = True
            if wide:  # console.print(width=) cannot exceed the console's own width: print through a wider one
                width = max(console.width, natural_width(console, obj))
                Console(file=console.file, width=width, highlight=False, color_system=None).print(obj, **kw)
                continue
        console.print(obj, **kw)
