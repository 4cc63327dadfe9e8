"""torch.distributed set-up for ``torchrun ... -m lcnn_audit COMMAND``.

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK and the rendezvous variables; this module
initialises the process group from them (NCCL when CUDA is available, else gloo;
``LCNN_AUDIT_DIST_BACKEND`` overrides), pins each rank to ``cuda:LOCAL_RANK``, and tears
the group down at exit. The sharding and gathering live in :mod:`lcnn_audit.runner`.
"""

from __future__ import annotations

import os

import torch


def world_size_from_env() -> int:
    """``$WORLD_SIZE`` (1 when unset or malformed)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def local_rank() -> int | None:
    """``$LOCAL_RANK``, or None when unset."""
    v = os.environ.get("LOCAL_RANK")
    return int(v) if v is not None and v.isdigit() else None


def init_from_env() -> bool:
    """Initialise the default process group when launched by torchrun with >1 process."""
    if world_size_from_env() <= 1 or not torch.distributed.is_available() or torch.distributed.is_initialized():
        return False
    backend = os.environ.get("LCNN_AUDIT_DIST_BACKEND") or ("nccl" if torch.cuda.is_available() else "gloo")
    if backend == "nccl" and local_rank() is not None:
        torch.cuda.set_device(local_rank())
    torch.distributed.init_process_group(backend=backend)
    return True


def shutdown() -> None:
    """Destroy the process group, if one is initialised."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
