"""The fast L2 box+ball projection (counted fixed point) against independent exact oracles.

Oracles: the sorted closed form :func:`_l2_box_path` (breakpoints sorted, piece solved in
float64) and Dykstra's alternating projections, on random inputs that hit every branch:
the clipped point already inside the ball, the ball projection already inside the box,
coordinates at the box (pixels at 0 and 1), zero coordinates where the box is tight (0/0
breakpoints), all-zero rows, and full-size 1×28×28 float32 batches.
"""

import pytest
import torch

from lcnn_audit.attacks.base import _l2_box_fixed_point, _l2_box_path, flat_norm, project
from tests.attacks.test_attacks import dykstra


def _cases(dtype, shape=(48, 1, 6, 6), seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=g, dtype=dtype)
    x[: shape[0] // 2, :, 0] = 0.0  # background at 0 and saturated pixels at 1: the box binds
    x[: shape[0] // 2, :, -1] = 1.0
    v = torch.randn(shape, generator=g, dtype=dtype)
    v[::5, :, -1] = 0.0  # 0/0 breakpoints where x = 1
    v[3] = 0.0  # an all-zero row
    return x, v


def _oracle(x, v, eps):
    """Clip when the clipped point is inside the ball, else the sorted closed form (float64)."""
    xd, vd = x.double(), v.double()
    full = torch.maximum(torch.minimum(vd, 1 - xd), -xd)
    inside = flat_norm(full, "l2") <= eps
    path = _l2_box_path(vd.flatten(1), (-xd).flatten(1), (1 - xd).flatten(1), eps).view_as(vd)
    return torch.where(inside.view(-1, *([1] * (x.ndim - 1))), full, path)


@pytest.mark.parametrize("scale", [0.02, 0.3, 1.0, 5.0])
@pytest.mark.parametrize("eps", [0.05, 0.4, 2.0])
def test_fast_projection_equals_the_sorted_closed_form_in_float64(scale, eps):
    x, v = _cases(torch.float64)
    v = v * scale
    p = project(x, v, "l2", eps)
    torch.testing.assert_close(p, _oracle(x, v, eps), rtol=0, atol=1e-12)
    assert (flat_norm(p, "l2") <= eps * (1 + 1e-12)).all()
    assert ((x + p) >= 0).all() and ((x + p) <= 1).all()
    torch.testing.assert_close(project(x, v, "l2", eps, branchless=True), p, rtol=0, atol=1e-9)


def test_fast_projection_equals_dykstra():
    x, v = _cases(torch.float64, shape=(12, 1, 4, 4), seed=5)
    for eps in (0.1, 0.6):
        torch.testing.assert_close(project(x, 0.8 * v, "l2", eps), dykstra(x, 0.8 * v, "l2", eps),
                                   rtol=0, atol=1e-9)


def test_ball_projection_inside_the_box_is_returned_as_is():
    """Interior x, a long v, a small eps: the ball projection eps·v/‖v‖ lies in the box."""
    g = torch.Generator().manual_seed(1)
    x = 0.25 + 0.5 * torch.rand(16, 1, 8, 8, generator=g, dtype=torch.float64)
    v = 10.0 * torch.randn(x.shape, generator=g, dtype=torch.float64)
    ball = v * (0.5 / flat_norm(v, "l2")).view(-1, 1, 1, 1)
    assert ((x + ball) > 0).all() and ((x + ball) < 1).all()  # the case under test
    torch.testing.assert_close(project(x, v, "l2", 0.5), ball, rtol=0, atol=1e-14)
    rows, done = _l2_box_fixed_point(v.flatten(1), (-x).flatten(1), (1 - x).flatten(1), 0.5, iters=None)
    assert done.all()
    torch.testing.assert_close(rows, ball.flatten(1), rtol=0, atol=1e-14)


def test_fast_projection_float32_demo_sized_batches():
    """1×28×28 float32 rows with the demo data's mix of 0/1 pixels: equal to the float64 oracle
    to float32 rounding, never outside the set, and the fixed point converges on every row."""
    g = torch.Generator().manual_seed(2)
    x = torch.rand(64, 1, 28, 28, generator=g)
    x = torch.where(x < 0.4, torch.zeros_like(x), torch.where(x > 0.9, torch.ones_like(x), x))
    for eps, scale in ((0.5, 0.03), (0.5, 0.3), (1.0, 0.1), (0.25, 1.0)):
        v = scale * torch.randn(x.shape, generator=g)
        p = project(x, v, "l2", eps)
        assert p.dtype == torch.float32
        torch.testing.assert_close(p.double(), _oracle(x, v, eps), rtol=0, atol=2e-7)
        assert (flat_norm(p.double(), "l2") <= eps * (1 + 1e-6)).all()
        assert ((x + p) >= 0).all() and ((x + p) <= 1).all()
        lo, hi = (-x).flatten(1), (1 - x).flatten(1)
        _, done = _l2_box_fixed_point(v.flatten(1), lo, hi, eps, iters=None)
        assert done.all()
