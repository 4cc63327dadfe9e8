"""Each penalty's value and parameter gradient against a direct, independent computation."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from lcnn_audit.convert import convert_model
from lcnn_audit.errors import ModelError
from lcnn_audit.geometry.jacobian import jacobian_measures, logit_jacobian
from lcnn_audit.penalties import (
    PENALTIES,
    PenaltyBatch,
    PenaltyConfig,
    cross_lipschitz_penalty,
    cure_direction,
    cure_penalty,
    gradreg_penalty,
    jacobian_penalty,
    lcnn_parameters,
    lcnn_penalty,
)
from tests.conftest import softplus_cnn


def tiny(seed=0):
    """A smooth fp64 CNN (no BatchNorm, so per-sample quantities are exact) and a batch."""
    model = softplus_cnn(side=6, beta=3.0, classes=4, seed=seed).double()
    x = torch.rand(5, 1, 6, 6, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 3, 1])
    return model, x, y


def per_sample_loss(model, params, xi, yi):
    return F.cross_entropy(functional_call(model, params, (xi.unsqueeze(0),)), yi.view(1))


def direct_grads(model, params, x, y, create_graph=True):
    """∇ₓℓᵢ for each sample separately with torch.autograd.functional.jacobian."""
    return [torch.autograd.functional.jacobian(lambda xi, i=i: per_sample_loss(model, params, xi, y[i]), x[i],
                                               create_graph=create_graph) for i in range(len(x))]


def param_grad(model, value_fn):
    """(value, flat gradient) of value_fn(params) w.r.t. the model's parameters."""
    params = dict(model.named_parameters())
    v = value_fn(params)
    return v.detach(), flat_grad(v, list(params.values()))


def flat_grad(v, params):
    """∂v/∂params flattened; a parameter v does not depend on (e.g. the last bias for a
    Jacobian penalty) contributes zeros."""
    g = torch.autograd.grad(v, params, allow_unused=True)
    return torch.cat([torch.zeros_like(p).flatten() if t is None else t.flatten() for t, p in zip(g, params,
                                                                                                  strict=True)])


def penalty_grad(model, fn, x, y, **kw):
    batch = PenaltyBatch(model, x, y)
    v = fn(batch, **kw)
    return v.detach(), flat_grad(v, list(model.parameters()))


def test_gradreg_matches_functional_jacobian():
    model, x, y = tiny()
    lam = 1e-1

    def direct(params):
        return lam * torch.stack([g.pow(2).sum() for g in direct_grads(model, params, x, y)]).mean()

    v_ref, g_ref = param_grad(model, direct)
    v, g = penalty_grad(model, gradreg_penalty, x, y, weight=lam)
    assert v.item() > 0
    torch.testing.assert_close(v, v_ref, rtol=1e-10, atol=0)
    torch.testing.assert_close(g, g_ref, rtol=1e-8, atol=1e-14)


def test_cure_matches_explicit_finite_difference():
    model, x, y = tiny(1)
    lam, h = 2.0, 0.3
    params0 = dict(model.named_parameters())
    z = [cure_direction(g.unsqueeze(0))[0] for g in direct_grads(model, params0, x, y, create_graph=False)]
    for zi in z:  # z = sign(g)/‖sign(g)‖: unit norm, entries ±1/√d
        assert zi.norm().item() == pytest.approx(1.0)
        assert torch.allclose(zi.abs(), torch.full_like(zi, 1 / 6))

    def direct(params):
        g0 = direct_grads(model, params, x, y)
        g1 = direct_grads(model, params, x + h * torch.stack(z), y)
        return lam * torch.stack([(a - b).pow(2).sum() for a, b in zip(g1, g0, strict=True)]).mean()

    v_ref, g_ref = param_grad(model, direct)
    v, g = penalty_grad(model, cure_penalty, x, y, weight=lam, h=h)
    torch.testing.assert_close(v, v_ref, rtol=1e-10, atol=0)
    torch.testing.assert_close(g, g_ref, rtol=1e-8, atol=1e-14)


def test_cure_is_a_finite_difference_hessian_along_z():
    """For small h, CURE/h² → ‖H z‖² (CURE §4), with H from torch.autograd.functional.hvp."""
    model, x, y = tiny(2)
    params = dict(model.named_parameters())
    ref = []
    for i in range(len(x)):
        def f(xi, i=i):
            return per_sample_loss(model, params, xi, y[i])

        g = torch.autograd.functional.jacobian(f, x[i])
        _, hz = torch.autograd.functional.hvp(f, x[i], cure_direction(g.unsqueeze(0))[0])
        ref.append(hz.pow(2).sum())
    ref = torch.stack(ref).mean()
    h = 1e-5
    v = cure_penalty(PenaltyBatch(model, x, y), weight=1.0, h=h).detach() / h**2
    assert v.item() == pytest.approx(ref.item(), rel=1e-4)
    assert cure_penalty(PenaltyBatch(model, x, y), weight=1.0, h=0.0).item() == 0.0


def exact_jacobians(model, params, x):
    return torch.stack([torch.autograd.functional.jacobian(
        lambda xi: functional_call(model, params, (xi.unsqueeze(0),))[0], x[i], create_graph=True).flatten(1)
        for i in range(len(x))])  # (B, C, d)


def test_jacobian_exact_and_gradient():
    model, x, y = tiny(3)
    lam = 0.5

    def direct(params):
        return lam * exact_jacobians(model, params, x).pow(2).sum((1, 2)).mean()

    v_ref, g_ref = param_grad(model, direct)
    v, g = penalty_grad(model, jacobian_penalty, x, y, weight=lam, probes=0)
    torch.testing.assert_close(v, v_ref, rtol=1e-10, atol=0)
    torch.testing.assert_close(g, g_ref, rtol=1e-8, atol=1e-14)
    # the geometry module's exact Jacobian agrees too
    batch = PenaltyBatch(model, x, y)
    fro, _ = jacobian_measures(logit_jacobian(batch.x, batch.logits))
    assert (lam * fro.pow(2).mean()).item() == pytest.approx(v.item(), rel=1e-10)


def test_cross_lipschitz_exact_matches_pairwise_sum():
    model, x, y = tiny(4)
    lam = 0.5

    def direct(params):
        J = exact_jacobians(model, params, x)  # (B, K, d)
        K = J.shape[1]
        diff = J[:, :, None, :] - J[:, None, :, :]  # ∇gᵢ − ∇gⱼ for every pair
        return lam * (diff.pow(2).sum((1, 2, 3)) / K**2).mean()

    v_ref, g_ref = param_grad(model, direct)
    v, g = penalty_grad(model, cross_lipschitz_penalty, x, y, weight=lam, probes=0)
    torch.testing.assert_close(v, v_ref, rtol=1e-10, atol=0)
    torch.testing.assert_close(g, g_ref, rtol=1e-8, atol=1e-14)


@pytest.mark.parametrize("fn", [jacobian_penalty, cross_lipschitz_penalty])
def test_projection_estimates_are_unbiased(fn):
    """Random-projection estimates average to the exact value and gradient: P probes in one call
    are the mean of P single-probe estimates (value and gradient are linear in that mean)."""
    model, x, y = tiny(5)
    exact, g_exact = penalty_grad(model, fn, x, y, weight=1.0, probes=0)
    est, g_est = penalty_grad(model, fn, x, y, weight=1.0, probes=400)
    assert est.item() == pytest.approx(exact.item(), rel=0.05)
    assert F.cosine_similarity(g_est, g_exact, dim=0).item() > 0.99
    assert (g_est.norm() / g_exact.norm()).item() == pytest.approx(1.0, rel=0.05)
    singles = torch.stack([fn(PenaltyBatch(model, x, y, seed=s), weight=1.0, probes=1).detach() for s in range(100)])
    assert singles.std().item() > 0  # genuinely random per seed...
    assert singles.mean().item() == pytest.approx(exact.item(), rel=0.15)  # ...and centred on the exact value


def test_projections_depend_on_seed_and_index_not_batch():
    model, x, y = tiny(6)
    idx = torch.tensor([10, 11, 12, 13, 14])
    a = jacobian_penalty(PenaltyBatch(model, x, y, index=idx, seed=3), weight=1.0, probes=2)
    b = jacobian_penalty(PenaltyBatch(model, x, y, index=idx, seed=3), weight=1.0, probes=2)
    c = jacobian_penalty(PenaltyBatch(model, x, y, index=idx, seed=4), weight=1.0, probes=2)
    assert a.item() == b.item() != c.item()
    # a sample's term is the same in a batch of one and in the full batch
    per = [jacobian_penalty(PenaltyBatch(model, x[i:i + 1], y[i:i + 1], index=idx[i:i + 1], seed=3),
                            weight=1.0, probes=2) for i in range(5)]
    assert torch.stack(per).mean().item() == pytest.approx(a.item(), rel=1e-12)


@pytest.mark.parametrize("name", sorted(PENALTIES))
def test_registry_contract(name):
    """Every penalty: a finite scalar with a graph, deterministic, model mode and flags unchanged."""
    if name == "lcnn":
        model = _lcnn_model()
        x = torch.rand(4, 1, 6, 6)
        y = torch.tensor([0, 1, 2, 3])
    else:
        model, x, y = tiny(7)
    kw = PenaltyConfig(lambda_beta=1e-2, lambda_gamma=1e-2, gradreg=1.0, cure=1.0, jacobian=1.0,
                       cross_lipschitz=1.0).active(1.0)[name]
    model.train()
    flags = [p.requires_grad for p in model.parameters()]
    v1 = PENALTIES[name](PenaltyBatch(model, x, y, seed=1), **kw)
    v2 = PENALTIES[name](PenaltyBatch(model, x, y, seed=1), **kw)
    assert v1.ndim == 0 and torch.isfinite(v1) and v1.requires_grad
    assert v1.item() == v2.item()
    assert model.training and flags == [p.requires_grad for p in model.parameters()]


def test_lcnn_penalty_closed_form():
    """R = λβ·Σβ + λγ·Σ log γ (LCNN eq. 5) with β = exp(log_beta), γ = 1 + exp(gamma_raw):
    ∂R/∂log_beta = λβ·β and ∂R/∂gamma_raw = λγ·(γ − 1)/γ."""
    model = _lcnn_model()
    softplus, bn = lcnn_parameters(model)
    assert len(softplus) == 1 and len(bn) == 1
    with torch.no_grad():
        softplus[0].log_beta.fill_(math.log(7.0))
        bn[0].gamma_raw.fill_(math.log(2.0))  # γ = 3
    lb, lg = 1e-2, 1e-3
    v = lcnn_penalty(PenaltyBatch(model, torch.rand(4, 1, 6, 6), torch.tensor([0, 1, 2, 3])), lambda_beta=lb,
                     lambda_gamma=lg)
    assert v.item() == pytest.approx(lb * 7.0 + lg * math.log(3.0), rel=1e-6)
    g_beta, g_gamma = torch.autograd.grad(v, [softplus[0].log_beta, bn[0].gamma_raw])
    assert g_beta.item() == pytest.approx(lb * 7.0, rel=1e-6)
    assert g_gamma.item() == pytest.approx(lg * 2.0 / 3.0, rel=1e-6)
    # only β: the γ term vanishes; a model without LCNN layers is refused
    only_beta = lcnn_penalty(PenaltyBatch(model, torch.rand(2, 1, 6, 6), torch.tensor([0, 1])), lambda_beta=lb,
                             lambda_gamma=0.0)
    assert only_beta.item() == pytest.approx(lb * 7.0, rel=1e-6)
    plain, x, y = tiny()
    with pytest.raises(ModelError, match="convert it first"):
        lcnn_penalty(PenaltyBatch(plain, x, y), lambda_beta=lb, lambda_gamma=lg)


def test_config_active_and_cure_schedule():
    cfg = PenaltyConfig(gradreg=1e-3, cure=4.0, cure_h=1.5, cure_h_warmup=5)
    assert list(cfg.active()) == ["gradreg", "cure"]
    assert cfg.cure_h_at(0) == 0.0 and cfg.cure_h_at(2.5) == pytest.approx(0.75) and cfg.cure_h_at(9) == 1.5
    assert cfg.active(1.0)["cure"] == {"weight": 4.0, "h": pytest.approx(0.3)}
    assert cfg.needs_input_grad and not PenaltyConfig(lambda_beta=1e-4).needs_input_grad
    assert PenaltyConfig().active() == {}
    probs = PenaltyConfig(gradreg=-1, cure_h=-1, jacobian_probes=-2).problems()
    assert len(probs) == 3


def _lcnn_model():
    """A converted tiny CNN (centered softplus + Lipschitz batch norm + spectral norms)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Softplus(beta=5.0), nn.Flatten(),
                        nn.Linear(4 * 36, 4))
    model, _ = convert_model(net, None, (1, 6, 6))
    return model
