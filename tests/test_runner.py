"""The resumable batch loop and the per-sample RNG."""

import json

import pytest
import torch

from lcnn_audit import load_data, rng
from lcnn_audit.errors import ResumeError
from lcnn_audit.runner import run_batches, shard_bounds


def compute(batch):
    return {"index": batch.index, "value": batch.x.flatten(1).sum(1), "flag": batch.y > 4}


def test_interrupt_then_resume_equals_uninterrupted(tmp_path):
    data = load_data("demo", n=50)
    full = run_batches(data, compute, 8)
    calls = {"n": 0}

    def flaky(batch):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return compute(batch)

    state = tmp_path / "r.json.partial"
    part = run_batches(data, flaky, 8, config={"a": 1}, state_path=state)
    assert not part.complete and json.loads(state.read_text())["done"] == 16
    with pytest.raises(ResumeError, match="different options"):
        run_batches(data, compute, 8, config={"a": 2}, state_path=state, resume=True)
    resumed = run_batches(data, compute, 8, config={"a": 1}, state_path=state, resume=True)
    assert resumed.complete and resumed.resumed_from == 16 and not state.exists()
    assert resumed.per_sample == full.per_sample


def test_shards_cover_everything_once():
    for n in (0, 1, 7, 100):
        for world in (1, 2, 3, 8):
            for bs in (1, 4, 32):
                spans = [shard_bounds(n, r, world, bs) for r in range(world)]
                assert spans[0][0] == 0 and spans[-1][1] == n
                assert all(a[1] == b[0] for a, b in zip(spans, spans[1:], strict=False))
                assert all(lo % bs == 0 or lo == n for lo, _ in spans)  # cut at whole batches


def test_per_sample_rng_is_batch_independent_and_well_distributed():
    idx = torch.arange(1000)
    a = rng.per_sample_normal(7, 1, idx, (64,))
    b = torch.cat([rng.per_sample_normal(7, 1, idx[i : i + 37], (64,)) for i in range(0, 1000, 37)])
    assert torch.equal(a, b)
    assert abs(float(a.mean())) < 0.01 and abs(float(a.std()) - 1) < 0.01
    assert not torch.equal(a, rng.per_sample_normal(8, 1, idx, (64,)))
    assert not torch.equal(a, rng.per_sample_normal(7, 2, idx, (64,)))
    u = rng.per_sample_uniform(0, 0, idx, (10,))
    assert 0 < float(u.min()) and float(u.max()) < 1
    s = rng.per_sample_sphere(0, 0, idx[:5], (3, 4))
    assert torch.allclose(s.flatten(1).norm(dim=1), torch.ones(5))
    # correlation between neighbouring samples/positions is negligible
    c = torch.corrcoef(torch.stack([a[:-1].flatten(), a[1:].flatten()]))[0, 1]
    assert abs(float(c)) < 0.01
