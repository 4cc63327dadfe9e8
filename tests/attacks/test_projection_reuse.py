"""BoxBallProjection (the step loops' projection, bounds and scratch kept between calls)
against a fresh :func:`project` per call and the float64 sorted/Dykstra oracles.

A stale scratch buffer (one call's breakpoints, squares or mask read by the next), a
returned tensor that aliases scratch, or a gather/scatter of the wrong rows would make
one of these calls differ.
"""

import pytest
import torch

from lcnn_audit.attacks.base import BoxBallProjection, flat_norm, project
from tests.attacks.test_attacks import dykstra
from tests.attacks.test_pgd_projection import _cases, _oracle


def _sequence(x, v):
    """Steps of very different kinds on one x: every row outside, some, none, a zero step."""
    rows = torch.arange(x.shape[0])
    return [v * 3.0, v * 0.01, torch.where((rows % 3 == 0).view(-1, *([1] * (x.ndim - 1))), v, 0.01 * v),
            torch.zeros_like(v), -2.0 * v, v[torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(4))]]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("eps", [0.05, 0.4, 2.0])
def test_reused_projection_equals_a_fresh_one_bit_for_bit(dtype, eps):
    x, v = _cases(dtype)
    proj = BoxBallProjection(x, "l2", eps)
    outs = []
    for d in _sequence(x, v):
        p = proj(d)
        assert torch.equal(p, project(x, d, "l2", eps))
        outs.append((d, p.clone(), p))
        tol = 1e-12 if dtype == torch.float64 else 2e-7
        torch.testing.assert_close(p.double(), _oracle(x, d, eps), rtol=0, atol=tol)
        assert (flat_norm(p.double(), "l2") <= eps * (1 + 1e-6)).all()
        assert ((x + p) >= 0).all() and ((x + p) <= 1).all()
    for _, kept, p in outs:  # later calls never wrote into an earlier result
        assert torch.equal(kept, p)


def test_reused_projection_matches_dykstra_and_linf_clipping():
    x, v = _cases(torch.float64, shape=(12, 1, 4, 4), seed=5)
    proj = BoxBallProjection(x, "l2", 0.3)
    for d in _sequence(x, 0.8 * v):
        torch.testing.assert_close(proj(d), dykstra(x, d, "l2", 0.3), rtol=0, atol=1e-9)
    lin = BoxBallProjection(x, "linf", 0.1)
    for d in _sequence(x, v):
        assert torch.equal(lin(d), project(x, d, "linf", 0.1))
        torch.testing.assert_close(lin(d), torch.minimum(torch.maximum(d, torch.maximum(-x, torch.tensor(-0.1,
                                   dtype=x.dtype))), torch.minimum(1 - x, torch.tensor(0.1, dtype=x.dtype))),
                                   rtol=0, atol=0)


def test_reused_branchless_projection_equals_a_fresh_one():
    x, v = _cases(torch.float32)
    proj = BoxBallProjection(x, "l2", 0.4, branchless=True)
    for d in _sequence(x, v):
        assert torch.equal(proj(d), project(x, d, "l2", 0.4, branchless=True))


@pytest.mark.parametrize("branchless", [False, True])
def test_negative_zero_coordinates_are_never_clipped(branchless):
    """A step whose coordinate is −0.0 (e.g. eps·g/‖g‖ where the gradient is −0.0, as in FGM)
    never moves that coordinate: it must not count as clipped at its bound. It did (its
    breakpoint bound/(−0.0) was −inf), which left the projection short of the sphere."""
    g = torch.Generator().manual_seed(7)
    x = 0.1 + 0.8 * torch.rand(8, 1, 6, 6, generator=g, dtype=torch.float64)
    x[:, :, 3:] = 0.0  # the box binds where v < 0 there, so the answer is not the ball projection
    v = 3.0 * torch.randn(x.shape, generator=g, dtype=torch.float64)
    v[:, :, 0] = -0.0  # at interior pixels: a breakpoint (1 − x)/(−0.0) = −inf
    assert torch.signbit(v[:, :, 0]).all()
    for eps in (0.05, 0.4):
        p = project(x, v, "l2", eps, branchless=branchless)
        torch.testing.assert_close(p, _oracle(x, v, eps), rtol=0, atol=1e-9)
        torch.testing.assert_close(p, dykstra(x, v, "l2", eps), rtol=0, atol=1e-8)
        torch.testing.assert_close(flat_norm(p, "l2"), torch.full((8,), eps, dtype=torch.float64), rtol=1e-12, atol=0)
