"""ImageFolder batches are decoded by DataLoader workers, in order, identical to serial decoding."""

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from lcnn_audit.data import load_data
from lcnn_audit.decode import WORKERS_ENV, data_workers, decode_batches


class _Pids(Dataset):
    """Returns the decoding process's pid as the image, to see where decoding ran."""

    def __len__(self):
        return 8

    def __getitem__(self, i):
        return torch.full((1, 1, 1), float(os.getpid())), 0


def test_batches_are_decoded_in_worker_processes():
    out = list(decode_batches(_Pids(), [torch.arange(0, 4), torch.arange(4, 8)], workers=2))
    pids = {int(t.flatten()[0]) for t in out}
    assert os.getpid() not in pids and len(out) == 2
    serial = list(decode_batches(_Pids(), [torch.arange(0, 4)], workers=0))
    assert {int(t.flatten()[0]) for t in serial} == {os.getpid()}


def _folder(root):
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls in ("a", "b", "c"):
        (root / cls).mkdir()
        for i in range(5):
            Image.fromarray(rng.integers(0, 256, (7, 5, 3), dtype=np.uint8)).save(root / cls / f"{i}.png")


def test_image_folder_batches_match_serial_decoding(tmp_path, monkeypatch):
    _folder(tmp_path)
    d = load_data(str(tmp_path), n=11, seed=3, single_split=True)
    monkeypatch.setenv(WORKERS_ENV, "2")
    assert data_workers() == 2
    got = list(d.batches(4, start=1))
    from torchvision.transforms.functional import to_tensor

    from lcnn_audit.data import _pil_loader

    files = [d.lazy.samples[int(i)][0] for i in d.indices[1:]]
    serial = torch.stack([to_tensor(_pil_loader(f)) for f in files])  # torchvision's own float decoding
    assert [len(b.index) for b in got] == [4, 4, 2]
    assert torch.equal(torch.cat([b.x for b in got]), serial)
    assert torch.equal(torch.cat([b.index for b in got]), d.indices[1:])
    assert torch.equal(torch.cat([b.y for b in got]), d.y[d.indices[1:]])


def test_a_damaged_image_is_named_when_decoded_by_workers(tmp_path, monkeypatch):
    """A worker's error comes back as one line naming the file, not the worker's traceback."""
    from lcnn_audit.errors import DataError

    _folder(tmp_path)
    d = load_data(str(tmp_path), single_split=True)
    victim = d.lazy.samples[int(d.indices[3])][0]
    Path(victim).write_bytes(Path(victim).read_bytes()[:40])  # header intact, data truncated
    monkeypatch.setenv("LCNN_AUDIT_DATA_WORKERS", "1")
    with pytest.raises(DataError) as info:
        list(d.batches(4))
    assert str(victim) in str(info.value) and "\n" not in str(info.value)
