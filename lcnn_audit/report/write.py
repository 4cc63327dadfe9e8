"""Writing a report file: HTML (``.html``) or Markdown (``.md``, figures beside it), built from
any mix of results, verdicts and result paths; a result file of the wrong inner structure
is a one-line error naming it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..errors import UsageError
from ..gates import Verdict
from ..io import write_text
from ..results import AuditResult
from .document import Run, Section
from .html import render_html
from .inputs import as_runs
from .markdown import render_markdown
from .sections import build_report

FORMATS = {".html": "html", ".htm": "html", ".md": "markdown", ".markdown": "markdown"}


def check_report_path(out: str | Path) -> str:
    """``html`` or ``markdown`` for ``out``'s extension; a one-line error for any other."""
    fmt = FORMATS.get(Path(out).suffix.lower())
    if fmt is None:
        raise UsageError(f"-o {out}: unknown report type {Path(out).suffix!r}; use .html or .md")
    return fmt


def write_report(runs: Sequence[Run | AuditResult | Verdict | str | Path], out: str | Path,
                 verdicts: Sequence[Verdict] = (), title: str | None = None, plots: bool = True, *,
                 labels: Sequence[str] | None = None) -> Path:
    """Write ``out`` as HTML (``.html``) or Markdown (``.md``; figures go to ``<stem>_files/``).

    ``runs`` may mix :class:`Run` (from :func:`load_inputs`), the
    :class:`~lcnn_audit.results.AuditResult` objects the audits return, gate verdicts and
    result JSON paths; ``labels`` name the models (see :func:`as_runs`)."""
    runs, more = as_runs(list(runs), labels)
    verdicts = [*verdicts, *more]
    out = Path(out)
    fmt = check_report_path(out)
    if not runs and not verdicts:
        raise UsageError("nothing to report: give result files (--json of any command) or gate verdicts")
    sections = _build_checked(runs, verdicts, plots)
    title = title or "lcnn-audit report"
    if fmt == "html":
        return write_text(out, render_html(sections, title))
    img_dir = out.with_name(f"{out.stem}_files")
    return write_text(out, render_markdown(sections, title, image_dir=img_dir, image_prefix=f"{img_dir.name}/"))


#: what a result file of the right top-level shape but a wrong inner structure raises while its
#: tables are built (a value of the wrong type, a missing key, a list that is too short)
_STRUCTURE_ERRORS = (KeyError, TypeError, ValueError, AttributeError, IndexError)


def _build_checked(runs: Sequence[Run], verdicts: Sequence[Verdict], plots: bool) -> list[Section]:
    """:func:`build_report`, with a one-line error naming the file whose structure is wrong."""
    try:
        return build_report(runs, verdicts, plots=plots)
    except _STRUCTURE_ERRORS as err:
        culprit = next((r.path for r in runs if not _builds(r)), None)
        where = f"{culprit}: " if culprit else ""
        raise UsageError(f"{where}the result file has an unexpected structure ({type(err).__name__}: "
                         f"{str(err)[:80]}); pass result files written by lcnn-audit --json") from None


def _builds(run: Run) -> bool:
    try:
        build_report([run], plots=False)
    except _STRUCTURE_ERRORS:
        return False
    return True
