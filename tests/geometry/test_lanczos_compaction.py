"""Batched Lanczos compacts its working set as samples stop: every row must still get exactly
its own iterates (same eigenvalues, iteration counts and vectors as a run on that row alone)."""

import pytest
import torch

from lcnn_audit.geometry.lanczos import lanczos


def _operators(B=12, d=30, seed=0):
    g = torch.Generator().manual_seed(seed)
    mats = []
    for i in range(B):
        Q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
        # spectra from well separated (fast) to clustered ± tops (slow), so rows stop at different steps
        gap = 0.6 ** i
        ev = torch.cat([torch.tensor([1.0, -(1 - gap)], dtype=torch.float64),
                        (torch.rand(d - 2, generator=g, dtype=torch.float64) * 2 - 1) * (1 - gap) * 0.9])
        mats.append(Q @ torch.diag(ev) @ Q.T)
    return torch.stack(mats)


@pytest.mark.parametrize("pass_active", [False, True])
def test_compacted_batch_matches_rows_alone(pass_active):
    A = _operators()
    B, d = A.shape[:2]
    calls = []

    def matvec(v, active=None):
        calls.append(None if active is None else int(active.sum()))
        return torch.einsum("bij,bj->bi", A, v)

    q0 = torch.randn(B, d, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    res = lanczos(matvec, q0, k=1, max_iter=25, tol=1e-6, pass_active=pass_active, keep_basis=True)
    assert len(set(res.iterations.tolist())) > 3  # rows really stop at different steps
    exact = torch.linalg.eigvalsh(A)
    top = exact.gather(1, exact.abs().argmax(1, keepdim=True)).squeeze(1)
    for i in range(B):
        alone = lanczos(lambda v, a=None, i=i: torch.einsum("bij,bj->bi", A[i:i + 1], v), q0[i:i + 1], k=1,
                        max_iter=25, tol=1e-6, pass_active=pass_active, keep_basis=True)
        assert int(alone.iterations[0]) == int(res.iterations[i])
        assert bool(alone.converged[0]) == bool(res.converged[i])
        torch.testing.assert_close(res.eigs[i], alone.eigs[0], rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(res.top_vector[i].abs(), alone.top_vector[0].abs(), rtol=1e-8, atol=1e-10)
        if res.converged[i]:
            assert abs(float(res.eigs[i, 0]) - float(top[i])) <= 1e-5
    if pass_active:
        assert min(c for c in calls if c is not None) < B  # stopped rows were masked out
    plain = lanczos(lambda v, a=None: torch.einsum("bij,bj->bi", A, v), q0, k=1, max_iter=25, tol=1e-6,
                    pass_active=pass_active, keep_basis=True, compact=False)
    assert torch.equal(plain.iterations, res.iterations)
    torch.testing.assert_close(plain.eigs, res.eigs, rtol=1e-12, atol=1e-14)
