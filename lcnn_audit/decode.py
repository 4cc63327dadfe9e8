"""Decoding lazy (file-backed) datasets such as an ImageFolder in worker processes.

A folder of JPEGs decoded serially in the main process starved the audit; here batches come
from a ``torch.utils.data.DataLoader`` with worker processes (``$LCNN_AUDIT_DATA_WORKERS``,
default min(4, CPUs − 1); 0 decodes in the main process) and pinned memory when CUDA is
available, so the copy to the GPU can overlap. The order is the selection's order, and
every batch holds exactly the requested positions, so results do not depend on the workers.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import DataLoader

from .errors import DataError

WORKERS_ENV = "LCNN_AUDIT_DATA_WORKERS"


def data_workers() -> int:
    """Worker processes for decoding file-backed images (``$LCNN_AUDIT_DATA_WORKERS``, else up to 4)."""
    text = os.environ.get(WORKERS_ENV, "").strip()
    if text.isdigit():
        return int(text)
    return max(0, min(4, (os.cpu_count() or 1) - 1))  # leave a core to the main process


def _images(items):
    """Stack a batch in the worker; uint8 images stay uint8 (a quarter of float32 to transfer)."""
    return torch.stack([torch.as_tensor(item[0]) for item in items])


def to_unit_float(x: torch.Tensor) -> torch.Tensor:
    """Images as float32 in [0, 1] (uint8 sources scaled by 1/255)."""
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()


def decode_batches(dataset, batches: Sequence[torch.Tensor], workers: int | None = None) -> Iterator[torch.Tensor]:
    """Yield the stacked float images (uint8 sources scaled to [0, 1]) of ``dataset`` at each
    index tensor of ``batches``, in order."""
    batches = [b.tolist() for b in batches]
    if not batches:
        return
    n_workers = data_workers() if workers is None else workers
    n_workers = min(n_workers, len(batches)) if sum(len(b) for b in batches) > 1 else 0
    loader = DataLoader(dataset, batch_sampler=batches, num_workers=n_workers, collate_fn=_images,
                        pin_memory=torch.cuda.is_available(), persistent_workers=False)
    done = 0
    try:
        for x in loader:
            yield to_unit_float(x)
            done += 1
    except DataError:
        if n_workers == 0:
            raise
        # a worker's DataError arrives wrapped in its traceback text: decode the failing batch
        # here, which raises the same error as one line naming the file
        _images([dataset[i] for i in batches[done]])
        raise
