"""Rich rendering of results for the terminal (computes nothing)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.table import Table

from ..formatting import num

if TYPE_CHECKING:
    from ..results import AuditResult

STAT_COLS = ("mean", "std", "median", "p5", "p95", "max")


fmt = num  # one formatter for the terminal and the reports


def stats_table(result: AuditResult, fields: list[str], title: str) -> Table:
    """One row per field with mean, std, median, p5, p95, max (LCNN Table 1 style)."""
    table = Table(title=title, title_justify="left")
    table.add_column("measure")
    for c in STAT_COLS:
        table.add_column(c, justify="right")
    for f in fields:
        s = result.summary.get(f)
        if isinstance(s, dict) and "mean" in s:
            table.add_row(f, *(fmt(s.get(c)) for c in STAT_COLS))
    return table
