"""The batched, resumable, interruptible loop every per-sample audit runs in.

``run_batches`` feeds ``ImageData`` to a ``compute(batch) -> {field: per-sample values}``
function and concatenates the fields in dataset order. With a ``state_path`` it writes
the per-sample values done so far after every batch (atomically), so ``resume=True``
continues an interrupted run; Ctrl-C (and SIGTERM under the CLI) stops after saving and
returns ``complete=False``. A complete run removes its state file, unless ``keep_state``:
the CLI keeps it until the result file is written, so that a failed write loses nothing.
Under ``torch.distributed`` each rank computes a deterministic shard of the samples and
rank 0 receives all of them, in dataset order.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from .data import Batch, ImageData
from .errors import ResumeError
from .io import write_json

Compute = Callable[[Batch], dict[str, torch.Tensor | list]]
Progress = Callable[[int, int], None]
logger = logging.getLogger(__name__)


@dataclass
class RunOutput:
    """What :func:`run_batches` returns: per-sample fields, completeness, seconds, the resumed count."""

    per_sample: dict[str, list]
    complete: bool
    seconds: float
    resumed_from: int = 0


def fingerprint(config: dict) -> str:
    """A stable hash of a run's config, to refuse resuming a different run."""
    blob = json.dumps(config, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _to_list(v, n: int) -> list:
    if isinstance(v, torch.Tensor):
        v = v.detach().cpu()
        if v.dtype == torch.bool:
            return [bool(b) for b in v.tolist()]
        return v.tolist()
    v = list(v)
    if len(v) != n:
        raise ValueError(f"per-sample field has {len(v)} entries for a batch of {n}")
    return v


def dist_info() -> tuple[int, int]:
    """(rank, world size); (0, 1) outside torch.distributed."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def shard_bounds(n: int, rank: int, world: int, batch_size: int = 1) -> tuple[int, int]:
    """Contiguous, deterministic shard [lo, hi) of n positions for ``rank``, cut at whole
    batches: every batch then holds the same samples as in a single-process run, so the
    per-sample results are bitwise identical whatever the number of processes."""
    batches = -(-n // batch_size)
    base, extra = divmod(batches, world)
    lo_b = rank * base + min(rank, extra)
    hi_b = lo_b + base + (1 if rank < extra else 0)
    return min(lo_b * batch_size, n), min(hi_b * batch_size, n)


def run_batches(
    data: ImageData,
    compute: Compute,
    batch_size: int,
    *,
    config: dict | None = None,
    state_path: str | Path | None = None,
    resume: bool = False,
    progress: Progress | None = None,
    keep_state: bool = False,
) -> RunOutput:
    """Run ``compute`` over ``data`` in batches; see the module docstring."""
    rank, world = dist_info()
    lo, hi = shard_bounds(len(data), rank, world, batch_size)
    fp = fingerprint(config or {})
    state_path = Path(state_path) if state_path else None
    if world > 1 and state_path is not None:
        state_path = part_state_path(state_path, f"rank{rank}")
    fields: dict[str, list] = {}
    done = lo
    if resume and state_path is not None and state_path.exists():
        state = read_state(state_path)
        if state.get("fingerprint") != fp:
            raise ResumeError(f"resume state {state_path} belongs to a run with different options; "
                              "rerun with the same options or delete the file to start over")
        fields, done = state["per_sample"], state["done"]
        if not lo <= done <= hi or any(len(v) != done - lo for v in fields.values()):
            raise ResumeError(f"resume state {state_path} does not match this data ({done} of samples {lo}..{hi} "
                              "done); delete it to start over")
    resumed_from = done - lo
    t0 = time.perf_counter()
    complete = True
    if progress:
        progress(done - lo, hi - lo)
    try:
        for batch in data.batches(batch_size, start=done, stop=hi):
            tb = time.perf_counter()
            out = compute(batch)
            n = len(batch.index)
            logger.debug("batch of %d sample(s) in %.2f s (%d/%d done)", n, time.perf_counter() - tb,
                         done + n - lo, hi - lo)
            for k, v in out.items():
                fields.setdefault(k, []).extend(_to_list(v, n))
            done += n
            if state_path is not None:
                write_json(state_path, {"fingerprint": fp, "done": done, "per_sample": fields})
            if progress:
                progress(done - lo, hi - lo)
    except KeyboardInterrupt:
        complete = False
    seconds = time.perf_counter() - t0
    if world > 1:
        fields, complete = _gather(fields, complete, rank, world)
    if complete and not keep_state and state_path is not None and state_path.exists():
        state_path.unlink()
    return RunOutput(per_sample=fields, complete=complete, seconds=seconds, resumed_from=resumed_from)


def read_state(path: Path) -> dict:
    """A resume state file, checked: ``{"fingerprint": str, "done": int, "per_sample": {field: list}}``."""
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ResumeError(f"resume state {path} is corrupt (not JSON text); delete it to start over") from None
    except OSError as err:
        raise ResumeError(f"cannot read resume state {path}: {err.strerror}") from None
    ok = (isinstance(state, dict) and isinstance(state.get("fingerprint"), str)
          and isinstance(state.get("done"), int) and not isinstance(state.get("done"), bool)
          and isinstance(state.get("per_sample"), dict)
          and all(isinstance(v, list) for v in state["per_sample"].values()))
    if not ok:
        raise ResumeError(f"resume state {path} is not an lcnn-audit resume state (fingerprint, done, per_sample); "
                          "delete it to start over")
    return state


def state_files(state_path: str | Path) -> list[Path]:
    """Every resume state file a run with ``state_path`` may leave: the file itself, one per
    discrepancy split (``.train``, ``.test``) and, under torchrun, one per rank (``.rankN``)."""
    p = Path(state_path)
    rank, world = dist_info()
    bases = [p, part_state_path(p, "train"), part_state_path(p, "test")]
    if world > 1:
        bases = [part_state_path(b, f"rank{rank}") for b in bases]
    return [b for b in bases if b.is_file()]


def part_state_path(state_path: str | Path, part: str) -> Path:
    """``PATH.partial`` -> ``PATH.partial.PART``: the resume state of one part of a run (a
    discrepancy split, ``train``/``test``; a torchrun rank, ``rankN``). The state of
    ``--json PATH`` itself is :func:`lcnn_audit.io.partial_path`."""
    p = Path(state_path)
    return p.with_name(f"{p.name}.{part}")


def _gather(fields: dict[str, list], complete: bool, rank: int, world: int):
    """Concatenate every rank's shard on rank 0 (shards are contiguous, so order is kept)."""
    gathered: list = [None] * world if rank == 0 else None
    torch.distributed.gather_object((fields, complete), gathered, dst=0)
    if rank != 0:
        return fields, complete
    merged: dict[str, list] = {}
    for shard, _ in gathered:
        for k, v in shard.items():
            merged.setdefault(k, []).extend(v)
    return merged, all(c for _, c in gathered)
