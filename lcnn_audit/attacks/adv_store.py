"""``--save-adv``: adversarial examples as one safetensors file, resumable per batch.

Each batch writes a shard ``<PATH>.partial/<first index>.safetensors`` (atomically); a
resumed run recomputes only the batches it lacks, and the finished run merges the shards,
in dataset order, into ``PATH`` (atomically) and removes them. ``<PATH>.partial`` must be a
real directory: a symlink (or a file) there is refused, never followed, so that no shard is
written or deleted outside it; only files named like shards are ever removed.

The merged file holds, for N samples:

* ``index`` (int64), ``label`` (int64), ``x`` (the clean inputs, float32);
* per norm p: ``x_adv_<p>`` (float32, N×…): the adversarial example found at the smallest
  eps of the sweep (clean x where none was found), ``first_eps_<p>`` (float32: that eps,
  inf if none) and ``attack_<p>`` (int8 code of the attack that found it, −1 if none).

The metadata holds ``lcnn_audit.attack_codes`` (JSON list: code → attack), ``eps`` (JSON
per norm) and ``config``. Under torchrun the shards must be on a filesystem every rank
shares; rank 0 merges them.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from pathlib import Path

import torch

from ..errors import CheckFailedError, OutputError
from ..io import partial_path, write_with

SHARD_SUFFIX = ".safetensors"
SHARD_NAME = re.compile(r"\d{12}\.safetensors")


class AdvStore:
    """Adversarial examples of an attack run, written shard by shard into ``<path>.partial/`` and joined at the end."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.dir = partial_path(self.path)

    def check(self) -> None:
        """Refuse a ``<PATH>.partial`` that is a symlink or not a directory (before anything runs)."""
        if self.dir.is_symlink():
            raise OutputError(f"--save-adv: {self.dir} is a symbolic link; lcnn-audit keeps its shards in a real "
                              "directory there and will not follow it: remove the link")
        if self.dir.exists() and not self.dir.is_dir():
            raise OutputError(f"--save-adv: {self.dir} exists and is not a directory; remove it")

    def shards(self) -> list[Path]:
        """The shard files in ``<PATH>.partial`` (regular files named like shards only)."""
        self.check()
        if not self.dir.is_dir():
            return []
        return sorted(f for f in self.dir.iterdir()
                      if SHARD_NAME.fullmatch(f.name) and f.is_file() and not f.is_symlink())

    def reset(self) -> None:
        """Forget shards from an earlier run (called when not resuming)."""
        for f in self.shards():
            f.unlink()

    def write(self, tensors: dict[str, torch.Tensor]) -> None:
        """Write one batch's tensors (keyed by the batch's first dataset index) as a safetensors shard."""
        from safetensors.torch import save_file

        first = int(tensors["index"].min())
        data = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
        self.check()
        self.dir.mkdir(parents=True, exist_ok=True)
        write_with(self.dir / f"{first:012d}{SHARD_SUFFIX}", lambda tmp: save_file(data, str(tmp)))

    def merge(self, indices: torch.Tensor, metadata: dict[str, str]) -> Path:
        """Concatenate the shards covering ``indices`` into ``self.path``; remove the shards."""
        from safetensors.torch import load_file, save_file

        shards = self.shards()
        parts = [load_file(str(f)) for f in shards]
        wanted = set(indices.tolist())
        parts = [p for p in parts if set(p["index"].tolist()) <= wanted]
        merged: dict[str, torch.Tensor] = {}
        if parts:
            keys = parts[0].keys()
            merged = {k: torch.cat([p[k] for p in parts]) for k in keys}
            order = merged["index"].argsort()
            merged = {k: v[order].contiguous() for k, v in merged.items()}
        got = merged.get("index", torch.zeros(0, dtype=torch.long))
        if got.numel() != indices.numel() or not torch.equal(got, indices.sort().values.to(got.dtype)):
            raise CheckFailedError(
                f"--save-adv: shards in {self.dir} cover {got.numel()} of {indices.numel()} samples; under torchrun "
                "every rank must see the same filesystem (rerun without --save-adv or on a shared disk)")
        write_with(self.path, lambda tmp: save_file(merged, str(tmp), metadata=metadata))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(self.path, 0o666 & ~umask)  # safetensors creates its file 0600; use the user's usual mode
        for f in shards:
            f.unlink()
        with contextlib.suppress(OSError):  # only if empty: never delete what someone else put there
            self.dir.rmdir()
        return self.path


def attack_codes_metadata(codes: list[str], eps: dict[str, list[float]], config: dict) -> dict[str, str]:
    """The safetensors metadata of the stored examples: attack codes, eps sweep and run config (JSON)."""
    return {"lcnn_audit.attack_codes": json.dumps(codes), "lcnn_audit.eps": json.dumps(eps),
            "lcnn_audit.config": json.dumps(config, default=str)}
