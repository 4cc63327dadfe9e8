"""Training checkpoints: the resume state of :func:`lcnn_audit.training.train`.

``run_dir/checkpoint.pt`` is written atomically (:func:`lcnn_audit.io.write_with`) after
every epoch and on interruption. It holds the model, optimizer and scheduler states, the
global RNG states (torch CPU, CUDA, python ``random``, numpy), the epoch and step, the
running epoch sums, the history, the recipe and the run's config with its fingerprint. It
holds tensors and plain Python values only and is read with ``weights_only=True``, so a
checkpoint file cannot run code.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from ..errors import CheckpointError, ResumeError
from ..io import write_with

CHECKPOINT_NAME = "checkpoint.pt"
LOG_NAME = "log.json"
FORMAT = "lcnn-audit-train-checkpoint"
FORMAT_VERSION = 1


def read_train_checkpoint(path: Path) -> dict:
    """Load a training checkpoint (``weights_only``: no code is unpickled)."""
    try:
        ck = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch.load raises many types for a bad file
        raise CheckpointError(f"training checkpoint {path} is corrupt or truncated ({type(err).__name__}); "
                              "delete it to start over") from None
    if not isinstance(ck, dict) or ck.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an lcnn-audit training checkpoint")
    if ck.get("version") != FORMAT_VERSION:
        raise CheckpointError(f"training checkpoint {path} has format version {ck.get('version')}; this "
                              f"lcnn-audit reads version {FORMAT_VERSION}")
    return ck


def _resume_key(cfg: dict) -> dict:
    """What must match to resume: the config without the conversion's measurement report
    (σ, γ values at conversion), which is informational and can differ in the last bits
    between thread counts."""
    key = json.loads(json.dumps(cfg))
    convert = (key.get("recipe") or {}).get("convert")
    if isinstance(convert, dict):
        convert.pop("report", None)
    return key


def _short(v, limit: int = 40) -> str:
    text = repr(v)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _config_diff(old: dict, new: dict, prefix: str = "") -> list[str]:
    keys = sorted(set(old) | set(new))
    out = []
    for k in keys:
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _config_diff(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k} ({_short(a)} -> {_short(b)})")
    return out


def write_train_checkpoint(path: Path, state: dict) -> None:
    """Write ``state`` to ``path`` atomically (a reader sees the old file or the new one)."""
    state = {"format": FORMAT, "version": FORMAT_VERSION, **state}
    write_with(path, lambda tmp: torch.save(state, str(tmp)))


def load_resume_state(path: Path, fingerprint: str, config: dict, model: nn.Module, *,
                      optimizer: torch.optim.Optimizer, scheduler) -> dict:
    """Read the checkpoint at ``path``, refuse one of a run with other options (naming the
    differences), and load its model, optimizer and scheduler states; return the checkpoint
    (its ``rng``, ``epoch``, ``step``, ``history``, ``accum``, ``complete``)."""
    ck = read_train_checkpoint(path)
    if ck["fingerprint"] != fingerprint:
        diff = _config_diff(_resume_key(ck.get("config", {})), _resume_key(config))
        raise ResumeError(f"checkpoint {path} belongs to a run with different options"
                          + (f": {'; '.join(diff[:4])}" if diff else "")
                          + "; rerun with the same options or delete it to start over")
    try:
        model.load_state_dict(ck["model"])
    except RuntimeError as err:
        raise CheckpointError(f"checkpoint {path} does not fit the model: {str(err).splitlines()[0]}") from None
    optimizer.load_state_dict(ck["optimizer"])
    scheduler.load_state_dict(ck["scheduler"])
    return ck
