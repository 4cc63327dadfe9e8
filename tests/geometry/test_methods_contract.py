"""Contract of every curvature method (``geometry.measures.METHODS``): on a tiny model each
one agrees with the exact fp64 input Hessian (``torch.func.hessian``), is deterministic and
leaves the model as it found it. Gauss-Newton is exact only for piecewise-linear nets, so it
(and ``auto``, which picks it there) also runs on a ReLU net."""

from __future__ import annotations

from contextlib import nullcontext

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lcnn_audit.geometry import CurvatureOptions, curvature_audit
from lcnn_audit.geometry.measures import METHODS
from lcnn_audit.notices import LcnnAuditNotice

#: relative tolerance on ‖∇²f‖₂ per method (power and the reference estimator after 200 steps;
#: the reference one is biased low: a Rayleigh quotient from a random start)
TOL = {"auto": 1e-6, "lanczos": 1e-6, "power": 1e-6, "reference": 1e-3, "gauss-newton": 1e-6}
#: the networks each method is exact for
NETS = {m: ("tanh", "relu") for m in METHODS} | {"gauss-newton": ("relu",)}
EPS = 1e-6


def _net(kind: str) -> nn.Module:
    torch.manual_seed(0)
    act = nn.Tanh() if kind == "tanh" else nn.ReLU()
    return nn.Sequential(nn.Flatten(), nn.Linear(9, 8), act, nn.Linear(8, 4)).double().eval()


def _oracle(model: nn.Module, x: torch.Tensor, y: torch.Tensor):
    """Exact per-sample ‖∇f‖₂ and ‖∇²f‖₂ (largest |eigenvalue| of the dense fp64 Hessian)."""
    hs, gs = [], []
    for xi, yi in zip(x, y, strict=True):
        def f(z, yi=yi):
            return F.cross_entropy(model(z[None]), yi[None])

        d = xi.numel()
        hs.append(torch.linalg.eigvalsh(torch.func.hessian(f)(xi).reshape(d, d)).abs().max())
        gs.append(torch.func.grad(f)(xi).norm())
    return torch.stack(hs).detach(), torch.stack(gs).detach()


@pytest.fixture(scope="module")
def batch():
    gen = torch.Generator().manual_seed(1)
    return torch.rand(6, 1, 3, 3, dtype=torch.float64, generator=gen), torch.randint(0, 4, (6,), generator=gen)


def test_every_method_has_a_tolerance_and_a_net():
    assert set(TOL) == set(METHODS) == set(NETS)


@pytest.mark.parametrize("method, kind", [(m, k) for m in METHODS for k in NETS[m]])
def test_method_agrees_with_the_exact_hessian(method, kind, batch):
    x, y = batch
    model = _net(kind)
    model[1].weight.requires_grad_(False)  # a flag the audit must leave as it was
    hn_exact, gn_exact = _oracle(model, x, y)
    opts = CurvatureOptions(method=method, dtype="float64", tol=1e-9, max_iter=30, iters=200, fro_probes=0, eps=EPS)
    with _relu_notice(kind):
        res = curvature_audit(model, (x, y), opts)
    hn = torch.tensor(res.per_sample["hessian_norm"], dtype=torch.float64)
    gn = torch.tensor(res.per_sample["grad_norm"], dtype=torch.float64)
    c = torch.tensor(res.per_sample["curvature"], dtype=torch.float64)
    assert torch.allclose(gn, gn_exact, rtol=1e-8)
    assert ((hn - hn_exact).abs() / hn_exact).max() <= TOL[method], (method, kind)
    assert torch.allclose(c, hn_exact / (gn_exact + EPS), rtol=TOL[method] * 2)
    if method == "reference":
        assert bool((hn <= hn_exact * (1 + 1e-9)).all())  # a Rayleigh quotient never exceeds ‖H‖₂
    else:
        assert all(res.per_sample["converged"])
    if method == "auto":
        assert res.summary["method"] == ("gauss-newton" if kind == "relu" else "lanczos")
    assert not model.training and model[1].weight.requires_grad is False and model[3].weight.requires_grad
    with _relu_notice(kind):
        again = curvature_audit(model, (x, y), opts)
    assert again.per_sample["hessian_norm"] == res.per_sample["hessian_norm"]  # deterministic


def _relu_notice(kind: str):
    """A ReLU net gets the notice that its Hessian is only the softmax part."""
    return pytest.warns(LcnnAuditNotice, match="ReLU") if kind == "relu" else nullcontext()
