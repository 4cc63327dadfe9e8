"""Host-allocator tuning for CPU runs: glibc ``malloc`` keeps freed activation buffers (issue #17).

PyTorch's CPU tensors come from the C library's ``malloc``. glibc serves a block above its mmap
threshold (128 KiB, adapting up to 32 MiB) with fresh ``mmap`` pages and returns the top of the
heap to the system past its trim threshold, so a training step or an HVP loop, which allocates
and frees the same few activation-sized buffers every step, pays a page fault for every 4 KiB of
every fresh buffer on its first touch: ~0.8 ms per 6 MB out-of-place op on the 2-core VM, as
much as the op itself. Raising both thresholds to 1 GiB keeps freed buffers in the heap, where
the next step reuses them. Measured (docs/benchmarks.md, ``benchmarks/allocator.py``, 2-core
VM): LCNN steps 0.65–0.93× the time, GradReg steps 0.76–0.84×, curvature of the smooth demo
model 0.92×, ReLU standard steps unchanged; the cost is that the process keeps its peak heap
until it exits.

Every command calls :func:`tune_host_allocator` before it runs (``command`` in
``cli/common.py``); a library user may call it too. ``LCNN_AUDIT_MALLOC=system`` keeps the
C library's defaults. Outside glibc (macOS, Windows, musl) it does nothing.
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys
from collections.abc import Mapping

from .errors import UsageError

ENV = "LCNN_AUDIT_MALLOC"
CHOICES = ("tuned", "system")
#: glibc's ``mallopt`` parameters (malloc.h)
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
#: 1 GiB, else glibc's documented maximum mmap threshold on 64-bit (32 MiB)
THRESHOLDS = (1 << 30, 1 << 25)

_state: str | None = None


def requested(env: Mapping[str, str] | None = None) -> str:
    """``tuned`` (the default) or ``system``, from $LCNN_AUDIT_MALLOC."""
    value = (os.environ if env is None else env).get(ENV, "tuned").strip().lower() or "tuned"
    if value not in CHOICES:
        raise UsageError(f"{ENV} must be one of {', '.join(CHOICES)}, got {value!r}; unset it for the default (tuned)")
    return value


def _glibc():
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:  # pragma: no cover - glibc without the usual soname
        return None


def tune_host_allocator(env: Mapping[str, str] | None = None) -> str:
    """Raise glibc's mmap and trim thresholds once per process; returns the state: ``tuned``,
    ``system`` (opted out with $LCNN_AUDIT_MALLOC) or ``unavailable`` (not glibc, or refused)."""
    global _state
    want = requested(env)
    if _state is not None:
        return _state
    if want == "system":
        return "system"
    libc = _glibc()
    state = "unavailable"
    if libc is not None:
        for value in THRESHOLDS:
            if libc.mallopt(M_MMAP_THRESHOLD, value) == 1 and libc.mallopt(M_TRIM_THRESHOLD, value) == 1:
                state = "tuned"
                break
    _state = state
    return state


def state() -> str:
    """What this process runs with: ``tuned``, or ``system`` when nothing has changed malloc."""
    return "tuned" if _state == "tuned" else "system"
