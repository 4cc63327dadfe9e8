"""PGD's starts, step rules and step loop: clean first start, uniform restarts, APGD, no host syncs."""

import math

import pytest
import torch

from lcnn_audit.attacks import PGD
from lcnn_audit.attacks.base import flat_norm, project
from lcnn_audit.attacks.pgd import apgd_checkpoints
from lcnn_audit.data import load_data
from lcnn_audit.errors import UsageError
from lcnn_audit.loading import load_model
from tests.attacks.test_attacks import reference_pgd


def test_first_restart_starts_at_x_and_later_ones_inside_the_ball():
    x = torch.rand(6, 1, 4, 4)
    idx = torch.arange(6)
    for norm in ("l2", "linf"):
        atk = PGD(norm, 0.3, restarts=3)
        assert torch.equal(atk.initial(x, idx, 0), torch.zeros_like(x))
        later = atk.initial(x, idx, 1)
        assert (flat_norm(later, norm) > 0).all() and (flat_norm(later, norm) <= 0.3 + 1e-6).all()
        assert ((x + later) >= 0).all() and ((x + later) <= 1).all()
        assert not torch.equal(PGD(norm, 0.3, start="random").initial(x, idx, 0), torch.zeros_like(x))
        assert torch.equal(PGD(norm, 0.3, random_start=False).initial(x, idx, 2), torch.zeros_like(x))


def test_random_starts_are_uniform_in_the_ball():
    """L2: P(‖δ‖ ≤ r·eps) = r^d and a mean-zero direction; linf: uniform on [−eps, eps] per coordinate."""
    n, shape, eps = 20000, (1, 2, 2), 0.5
    d = math.prod(shape)
    x = torch.zeros(n, *shape)
    idx = torch.arange(n)
    delta = PGD("l2", eps).start(x, idx, 1)
    r = flat_norm(delta, "l2") / eps
    assert r.max() <= 1 + 1e-6
    for q in (0.5, 0.8, 0.95):
        assert abs(float((r <= q).float().mean()) - q**d) < 0.015
    assert delta.flatten(1).mean(0).abs().max() < 0.01
    cube = PGD("linf", eps).start(x, idx, 1).flatten()
    assert cube.abs().max() <= eps and abs(float(cube.var()) - eps**2 / 3) < 0.005
    assert abs(float((cube <= -eps / 2).float().mean()) - 0.25) < 0.01


def test_branchless_projection_equals_the_exact_one():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(64, 1, 5, 5, generator=g)
    x[:, :, 0] = 0.0
    x[:, :, -1] = 1.0
    for scale in (0.05, 0.5, 3.0):
        v = torch.randn(x.shape, generator=g) * scale
        exact = project(x, v, "l2", 0.4)
        fast = project(x, v, "l2", 0.4, branchless=True)
        torch.testing.assert_close(fast, exact, rtol=0, atol=1e-6)
        assert (flat_norm(fast, "l2") <= 0.4 * (1 + 1e-6)).all()


def test_apgd_checkpoints_follow_the_reference_schedule():
    # auto-attack's apgd: first check after max(int(0.22 n), 1) steps, then the interval shrinks by
    # max(int(0.03 n), 1) down to max(int(0.06 n), 1)
    assert sorted(apgd_checkpoints(100)) == [22, 41, 57, 70, 80, 87, 93, 99]
    assert sorted(apgd_checkpoints(10)) == list(range(2, 11))
    assert PGD("l2", 0.1).step_rule == "apgd" and PGD("l2", 0.1, step_size=0.01).step_rule == "fixed"
    with pytest.raises(UsageError, match="step_rule"):
        PGD("l2", 0.1, step_rule="adam")


@pytest.fixture(scope="module")
def demo():
    model = load_model("demo")
    x, y = load_data("demo", n=48, seed=2).tensors()
    with torch.no_grad():
        correct = model(x).argmax(1) == y
    return model, x, y, correct


@pytest.mark.parametrize("norm,eps", [("l2", 0.5), ("linf", 4 / 255)])
@pytest.mark.parametrize("rule", ["apgd", "fixed"])
def test_default_pgd_beats_fixed_step_pgd_without_and_with_a_random_start(demo, norm, eps, rule):
    """The issue's comparison: at 10 steps, the clean first start (and APGD's rule) is at least as
    strong as fixed-step PGD from x and from a uniform start."""
    model, x, y, correct = demo
    ours = PGD(norm, eps, steps=10, step_rule=rule)
    with torch.no_grad():
        mine = int(((model(ours(model, x, y)).argmax(1) != y) & correct).sum())
    alpha = 2.5 * eps / 10
    for start in (False, True):
        ref = int((reference_pgd(model, x, y, norm, eps, 10, alpha, random_start=start) & correct).sum())
        assert mine >= ref, (rule, start, mine, ref)


def test_pgd_keeps_the_best_iterate_and_reports_its_path(demo):
    model, x, y, correct = demo
    out = PGD("l2", 0.3, steps=6).run(model, x, y, trace=True)
    assert out.trace.shape == (len(y), 7)
    assert torch.equal(out.path_adversarial | ~out.adversarial, torch.ones_like(out.adversarial))
    assert (out.loss >= out.trace.amax(dim=1) - 1e-6)[~out.adversarial].all()  # the best loss of restart 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="host syncs only matter on an accelerator")
@pytest.mark.parametrize("rule", ["apgd", "fixed"])
@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_step_loop_has_no_host_sync_on_gpu(norm, rule):
    model = load_model("demo").cuda()
    x, y = load_data("demo", n=16).tensors()
    x, y = x.cuda(), y.cuda()
    atk = PGD(norm, 0.5 if norm == "l2" else 8 / 255, steps=5, step_rule=rule)
    delta = torch.zeros_like(x)
    body = atk._restart_apgd if rule == "apgd" else atk._restart
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        body(model, x, y, delta)
    finally:
        torch.cuda.set_sync_debug_mode("default")
