"""Progress rendering for the CLI: a rich bar on a terminal, plain heartbeat lines elsewhere.

The library reports progress through ``progress(done, total)`` callbacks (see
:data:`lcnn_audit.runner.Progress`) and never prints; this module turns those calls into
output. On a terminal that is a transient rich progress bar. When stderr is not a terminal
(CI logs, ``| tee``, ``nohup``) a bar would print nothing useful, so a line such as::

    attack: 384/1000 (38%)  12.3 samples/s  elapsed 0:00:31  ETA 0:00:50

is written every ``LCNN_AUDIT_HEARTBEAT`` seconds (default 15), plus one line when the loop
finishes. ``--quiet`` turns both off; ``--verbose`` also shows the library's log messages.
"""

from __future__ import annotations

import logging
import math
import os
import time
from contextlib import contextmanager

from rich.console import Console

HEARTBEAT_ENV = "LCNN_AUDIT_HEARTBEAT"
DEFAULT_HEARTBEAT_S = 15.0


def heartbeat_interval() -> float:
    """Seconds between heartbeat lines: ``$LCNN_AUDIT_HEARTBEAT`` (>= 0), default 15."""
    text = os.environ.get(HEARTBEAT_ENV)
    if not text:
        return DEFAULT_HEARTBEAT_S
    try:
        return max(0.0, float(text))
    except ValueError:
        return DEFAULT_HEARTBEAT_S


def clock(seconds: float | None) -> str:
    """``H:MM:SS`` (``?`` when unknown)."""
    if seconds is None or math.isnan(seconds) or seconds == float("inf"):
        return "?"
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class Heartbeat:
    """``progress(done, total)`` that writes a plain line at most every ``interval`` seconds.

    The rate and ETA are measured from the first update of the current task, so a task that
    is :meth:`reset` (a new training epoch) starts its estimate afresh.
    """

    def __init__(self, description: str, console: Console, interval: float, unit: str = "samples",
                 now=time.monotonic):
        self.description, self.console, self.interval, self.unit, self.now = description, console, interval, unit, now
        self.info = ""
        self.reset()

    def reset(self, description: str | None = None) -> None:
        """Start a new task (``description``, else the same one): its rate and ETA afresh."""
        self.description = description or self.description
        self.t0 = self.now()
        self.start_done: int | None = None
        self.t_start = self.t0
        self.last_emit = self.t0
        self.done, self.total = 0, None
        self.emitted_final = False

    def line(self) -> str:
        """The heartbeat line: done/total, rate, elapsed time and ETA."""
        elapsed = self.now() - self.t0
        total = self.total
        head = f"{self.description}: {self.done}/{total if total else '?'}"
        if total:
            head += f" ({100 * self.done / total:.0f}%)"
        gained = self.done - (self.start_done or 0)
        span = self.now() - self.t_start
        rate = gained / span if span > 0 and gained > 0 else None
        parts = [head]
        if rate is not None:
            parts.append(f"{rate:.3g} {self.unit}/s")
        parts.append(f"elapsed {clock(elapsed)}")
        if total and rate:
            parts.append(f"ETA {clock((total - self.done) / rate)}")
        if self.info:
            parts.append(self.info)
        return "  ".join(parts)

    def __call__(self, done: int, total: int | None = None, info: str | None = None) -> None:
        """Record progress; write a line when ``interval`` seconds have passed or the task is done."""
        if self.start_done is None:  # the rate counts from the first update (a resumed run: this run's work)
            self.start_done, self.t_start = done, self.now()
        self.done, self.total = done, total
        if info is not None:
            self.info = info
        t = self.now()
        finished = bool(total) and done >= total
        if finished and not self.emitted_final:
            self.emitted_final = True
            self._emit()
        elif not finished and t - self.last_emit >= self.interval:
            self._emit()

    def _emit(self) -> None:
        self.last_emit = self.now()
        self.console.print(self.line(), highlight=False, markup=False, soft_wrap=True)


class _RichBar:
    """The same interface over a rich progress bar (terminals)."""

    def __init__(self, description: str, console: Console):
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.bar = Progress(TextColumn("{task.description}", markup=False, style="bold"), BarColumn(),
                            MofNCompleteColumn(),
                            TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                            console=console, transient=True)
        self.task = self.bar.add_task(description, total=None, info="")

    def reset(self, description: str | None = None) -> None:
        kw = {"description": description} if description else {}
        self.bar.reset(self.task, total=None, **kw)

    def __call__(self, done: int, total: int | None = None, info: str | None = None) -> None:
        kw = {"info": info} if info is not None else {}
        self.bar.update(self.task, completed=done, total=total, **kw)


class _Silent:
    def reset(self, description: str | None = None) -> None:
        pass

    def __call__(self, done: int, total: int | None = None, info: str | None = None) -> None:
        pass


@contextmanager
def progress_display(description: str, console: Console, *, quiet: bool = False, unit: str = "samples"):
    """Yield a ``progress(done, total, info=None)`` callback with a ``reset(description)`` method:
    silent with ``quiet``, a rich bar on a terminal, heartbeat lines otherwise."""
    if quiet:
        yield _Silent()
    elif console.is_terminal:
        shown = _RichBar(description, console)
        with shown.bar:
            yield shown
    else:
        yield Heartbeat(description, console, heartbeat_interval(), unit=unit)


def configure_logging(verbose: bool, console: Console) -> None:
    """With ``--verbose``, show the library's ``logging`` records (INFO and DEBUG) on stderr."""
    logger = logging.getLogger("lcnn_audit")
    for h in [h for h in logger.handlers if getattr(h, "_lcnn_cli", False)]:
        logger.removeHandler(h)
    if not verbose:
        logger.setLevel(logging.NOTSET)
        return
    handler = _ConsoleHandler(console)
    handler._lcnn_cli = True
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)


class _ConsoleHandler(logging.Handler):
    def __init__(self, console: Console):
        super().__init__(logging.DEBUG)
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        from rich.markup import escape

        self.console.print(f"[dim]{record.levelname.lower()}:[/] {escape(record.getMessage())}", highlight=False,
                           markup=True, soft_wrap=True)
