"""The report's document model: result files as :class:`Run` s, and the blocks a
:class:`Section` holds (paragraphs, bullet lists, :class:`Table`, :class:`Figure`), with the
formatting helpers every section uses (accuracies, ε labels, footnotes for notices and flags).
Renderers (:mod:`.html`, :mod:`.markdown`) turn these into text; nothing here computes."""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UsageError
from ..formatting import eps_text, num
from ..results import AuditResult

STATUS_MARK = {"pass": "✅ pass", "fail": "❌ fail", "error": "⚠️ error", "skip": "⏭️ skip"}


@dataclass(frozen=True)
class Run:
    """One result file, with the label its model gets in the tables."""

    label: str
    path: str
    result: AuditResult


@dataclass(frozen=True)
class Badge:
    """A check status cell: an emoji in Markdown, a coloured word in HTML (no emoji font needed)."""

    status: str


@dataclass
class Table:
    """A table: ``header``, ``rows`` of text or :class:`Badge` cells, a caption under it."""

    header: list[str]
    rows: list[list[str | Badge]]
    caption: str = ""
    row_classes: list[str] = field(default_factory=list)
    align: str = ""  # one of l/r per column; default: first column left, the others right


@dataclass
class Figure:
    """A PNG figure (its bytes), with alt text and a caption."""

    name: str
    png: bytes
    alt: str
    caption: str = ""


@dataclass
class Section:
    """One report section: a title, an anchor and its blocks, in order."""

    title: str
    anchor: str
    blocks: list = field(default_factory=list)  # str paragraphs, list[str] bullets, Table, Figure
    status: str | None = None  # a gate verdict's status, shown before the title


def checked_status(status: str) -> str:
    """Only the known check statuses reach the output (a verdict file is untrusted input)."""
    if status not in STATUS_MARK:
        raise UsageError(f"unknown check status {status!r}; one of {', '.join(STATUS_MARK)}")
    return status


def pct(v, lo=None, hi=None) -> str:
    """An accuracy in %, with its interval in brackets when given."""
    if v is None or math.isnan(v):
        return "–"
    out = f"{100 * v:.2f}"
    if lo is not None and hi is not None:
        out += f" [{100 * lo:.1f}, {100 * hi:.1f}]"
    return out


def mean_std(stats: dict | None) -> str:
    """``mean ± std`` of a summary statistics dict; ``–`` without one."""
    if not isinstance(stats, dict) or "mean" not in stats:
        return "–"
    return f"{num(stats['mean'])} ± {num(stats.get('std'))}"


def eps_label(norm: str, eps: float) -> str:
    """A column header for one budget: ``‖ε‖₂ = 0.5``."""
    sub = {"l2": "₂", "linf": "∞", "l1": "₁"}.get(norm, norm)
    return f"‖ε‖{sub} = {eps_text(eps, norm)}"


class Footnotes:
    """Notices and flags beside the numbers they qualify: ``mark(label, notes)`` returns the
    table cell ``label [1, 2]`` and :meth:`block` the numbered list printed under the tables."""

    def __init__(self):
        self.items: list[tuple[str, str]] = []

    def mark(self, label: str, notes) -> str:
        """``label`` with the numbers of its (new or known) notes: ``label [1, 2]``."""
        keys = []
        for text in dict.fromkeys(n for n in notes if n):
            item = (label, text)
            if item not in self.items:
                self.items.append(item)
            keys.append(str(self.items.index(item) + 1))
        return f"{label} [{', '.join(keys)}]" if keys else label

    def block(self) -> list:
        """The numbered notes as report blocks (a paragraph and a list); none without notes."""
        if not self.items:
            return []
        return ["Notices and flags (numbers in brackets beside a model refer to these):",
                [f"[{k}] {label}: {text}" for k, (label, text) in enumerate(self.items, 1)]]


def run_notes(result: AuditResult) -> list[str]:
    """Every notice and flag of a result that a reader of its numbers must see."""
    s = result.summary
    notes = [*s.get("notices", []), *s.get("flag_messages", [])]
    if result.command == "bound":
        notes += s.get("notes", [])[1:]  # the first note explains the bound (in the caption)
    if result.command == "discrepancy":
        for split in ("train", "test"):
            notes += [f"{split} split: {n}" for n in (s.get(split) or {}).get("notices", [])]
    if s.get("not_converged"):
        notes.append(f"{s['not_converged']} sample(s) did not converge within --max-iter (their Hessian norms are "
                     "lower bounds)")
    if not result.complete:
        notes.append("interrupted run: the numbers cover only the samples done")
    return notes


def draw_figure(name: str, alt: str, draw: Callable[[Path], object], caption: str = "") -> Figure:
    """Run one of the plotting functions into a temporary PNG and keep its bytes."""
    with tempfile.TemporaryDirectory(prefix="lcnn-audit-report-") as tmp:
        path = Path(tmp) / f"{name}.png"
        draw(path)
        return Figure(name=name, png=path.read_bytes(), alt=alt, caption=caption)
