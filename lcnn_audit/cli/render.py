"""Rich rendering of results for the terminal (computes nothing)."""

from rich.table import Table

from ..results import AuditResult

STAT_COLS = ("mean", "std", "median", "p5", "p95", "max")


def fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if v != v:
            return "nan"
        if v == 0:
            return "0"
        if abs(v) >= 1e4 or abs(v) < 1e-3:
            return f"{v:.3e}"
        return f"{v:.4g}"
    return str(v)


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
