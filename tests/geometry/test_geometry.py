"""Correctness of the curvature engine against independent oracles."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lcnn_audit.errors import ModelError, UsageError
from lcnn_audit.geometry import CurvatureOptions, compute_geometry
from lcnn_audit.geometry.lanczos import lanczos, power_iteration
from lcnn_audit.geometry.state import measurement_state
from tests.conftest import relu_cnn, softplus_cnn


def exact_hessians(model, x, y, target="loss"):
    """Full per-sample input Hessians in fp64 via torch.autograd.functional.hessian."""
    m64 = model.double()
    out = []
    for i in range(len(x)):
        def f(xi, i=i):
            logits = m64(xi.unsqueeze(0))
            if target == "loss":
                return F.cross_entropy(logits, y[i : i + 1])
            return logits[0, y[i]]

        H = torch.autograd.functional.hessian(f, x[i].double(), vectorize=True)
        out.append(H.reshape(x[0].numel(), -1))
    model.float()
    return torch.stack(out)


def run(model, x, y, **kw):
    kw.setdefault("jacobian", "off")
    with measurement_state(model) as prep:
        fields, method = compute_geometry(prep.model, x, y, torch.arange(len(x)), CurvatureOptions(**kw))
    return fields, method


class Quadratic(nn.Module):
    """logit_c(x) = ½ xᵀA_c x + b_cᵀx: the label logit has Hessian A_y exactly."""

    def __init__(self, d=16, classes=3):
        super().__init__()
        # indefinite, with a few dominant eigenvalues and a small full-rank tail, like loss Hessians
        Q, _ = torch.linalg.qr(torch.randn(classes, d, d))
        lam = 0.05 * torch.randn(classes, d)
        lam[:, :3] = torch.tensor([10.0, -8.0, 5.0]) * torch.rand(classes, 1).add(0.5)
        self.A = nn.Parameter(Q @ torch.diag_embed(lam) @ Q.transpose(1, 2))
        self.b = nn.Parameter(torch.randn(classes, d))

    def forward(self, x):
        v = x.flatten(1)
        return 0.5 * torch.einsum("bi,cij,bj->bc", v, self.A, v) + v @ self.b.T


def test_quadratic_logit_closed_form():
    model = Quadratic().eval()
    x, y = torch.rand(6, 1, 4, 4), torch.tensor([0, 1, 2, 0, 1, 2])
    fields, method = run(model, x, y, target="logit", profile=3, fro_probes=4)
    assert method == "lanczos"
    for i in range(6):
        A = model.A[y[i]].detach().double()
        ev = torch.linalg.eigvalsh(A)
        top = ev[ev.abs().argsort(descending=True)][:3]
        assert fields["hessian_norm"][i] == pytest.approx(float(torch.linalg.matrix_norm(A, 2)), rel=1e-4)
        assert fields["hessian_fro"][i] == pytest.approx(float(torch.linalg.matrix_norm(A, "fro")), rel=1e-3)
        assert torch.allclose(fields["hessian_eigs"][i], top, rtol=1e-4, atol=1e-5)
        grad = A @ x[i].flatten().double() + model.b[y[i]].detach().double()
        assert fields["grad_norm"][i] == pytest.approx(float(grad.norm()), rel=1e-5)
        assert fields["curvature"][i] == pytest.approx(float(torch.linalg.matrix_norm(A, 2) / (grad.norm() + 1e-6)),
                                                       rel=1e-4)
    assert bool(fields["converged"].all())


def test_linear_model_has_zero_curvature():
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval()
    x, y = torch.rand(5, 1, 8, 8), torch.randint(0, 10, (5,))
    for method in ("lanczos", "power", "gauss-newton", "auto"):
        fields, _ = run(model, x, y, target="logit", method=method)
        assert torch.equal(fields["hessian_norm"], torch.zeros(5, dtype=torch.float64)), method
        assert torch.equal(fields["curvature"], torch.zeros(5, dtype=torch.float64)), method
        W = model[1].weight.detach()
        assert torch.allclose(fields["grad_norm"].float(), W[y].norm(dim=1), rtol=1e-6)


def test_linear_model_loss_hessian_closed_form():
    """For a linear model the cross-entropy Hessian is Wᵀ(diag p − ppᵀ)W exactly."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 4)).eval()
    x, y = torch.rand(4, 1, 4, 4), torch.tensor([0, 1, 2, 3])
    W = model[1].weight.detach().double()
    for method in ("lanczos", "gauss-newton"):
        fields, _ = run(model, x, y, method=method, jacobian="exact")
        for i in range(4):
            p = torch.softmax(model(x[i : i + 1]).detach().double(), 1)[0]
            H = W.T @ (torch.diag(p) - torch.outer(p, p)) @ W
            assert fields["hessian_norm"][i] == pytest.approx(float(torch.linalg.matrix_norm(H, 2)), rel=1e-4)
            assert fields["hessian_fro"][i] == pytest.approx(float(torch.linalg.matrix_norm(H, "fro")), rel=1e-3)
            assert fields["jacobian_fro"][i] == pytest.approx(float(W.norm()), rel=1e-5)


@pytest.mark.parametrize("side,beta,seed", [(8, 1.0, 0), (8, 10.0, 1), (8, 3.0, 2), (28, 5.0, 3)])
def test_against_exact_hessian(side, beta, seed):
    """Random-init softplus nets (near-degenerate / ± top pairs): rel. error <= 1e-3 on every sample."""
    model = softplus_cnn(side, beta, seed=seed)
    n = 12 if side == 8 else 3
    torch.manual_seed(seed)
    x, y = torch.rand(n, 1, side, side), torch.randint(0, 10, (n,))
    H = exact_hessians(model, x, y)
    ev, U = torch.linalg.eigh(H)
    top_idx = ev.abs().argmax(1)
    exact_norm = ev.abs().max(1).values
    fields, _ = run(model, x, y, profile=3)
    rel = (fields["hessian_norm"] - exact_norm).abs() / exact_norm
    assert float(rel.max()) <= 1e-3, rel
    assert bool(fields["converged"].all())
    # profile: the 3 largest-magnitude signed eigenvalues
    order = ev.abs().argsort(1, descending=True)[:, :3]
    top3 = ev.gather(1, order)
    # magnitudes match the exact top-3 magnitudes, and each signed value is an eigenvalue (within
    # tol·‖H‖, the residual bound); signs are compared this way because |λ3| ≈ |λ4| ties occur
    lim = 1e-3 * exact_norm[:, None]
    assert bool(((fields["hessian_eigs"].abs() - top3.abs()).abs() <= lim).all())
    nearest = (fields["hessian_eigs"][:, :, None] - ev[:, None, :]).abs().min(2).values
    assert bool((nearest <= lim).all())
    # Frobenius: exact Krylov part + Hutchinson remainder
    fro = torch.linalg.matrix_norm(H, "fro")
    assert float(((fields["hessian_fro"] - fro).abs() / fro).max()) < 0.05
    # alignment |g·u1|/|g| against the exact top eigenvector
    xr = x.clone().requires_grad_(True)
    g = torch.autograd.grad(F.cross_entropy(model(xr), y, reduction="sum"), xr)[0].flatten(1).double()
    u1 = U[torch.arange(n), :, top_idx]
    align = (g * u1).sum(1).abs() / g.norm(dim=1)
    assert torch.allclose(fields["alignment"], align, atol=2e-3)


def test_piecewise_linear_exact_path_equals_full_hessian():
    model = relu_cnn()
    x, y = torch.rand(6, 1, 8, 8), torch.randint(0, 10, (6,))
    H = exact_hessians(model, x, y)
    ev = torch.linalg.eigvalsh(H)
    fields, method = run(model, x, y, method="auto", jacobian="exact", profile=4)
    assert method == "gauss-newton"
    exact_norm = ev.abs().max(1).values
    assert torch.allclose(fields["hessian_norm"], exact_norm, rtol=1e-5)
    assert torch.allclose(fields["hessian_fro"], torch.linalg.matrix_norm(H, "fro"), rtol=1e-5)
    top4 = ev.gather(1, ev.abs().argsort(1, descending=True)[:, :4])
    assert torch.allclose(fields["hessian_eigs"], top4, rtol=1e-4, atol=1e-6 * float(exact_norm.max()))
    lan, _ = run(model, x, y, method="lanczos")
    assert torch.allclose(lan["hessian_norm"], exact_norm, rtol=1e-3)


def test_jacobian_and_cross_lipschitz_against_pairwise_definition():
    model = softplus_cnn(8, 2.0, classes=5)
    x, y = torch.rand(3, 1, 8, 8), torch.randint(0, 5, (3,))
    fields, _ = run(model, x, y, jacobian="exact")
    for i in range(3):
        J = torch.autograd.functional.jacobian(lambda v: model(v.unsqueeze(0))[0], x[i]).reshape(5, -1).double()
        assert fields["jacobian_fro"][i] == pytest.approx(float(J.norm()), rel=1e-5)
        nu2 = sum(float((J[a] - J[b]).pow(2).sum()) for a in range(5) for b in range(5)) / 25
        assert fields["cross_lipschitz"][i] == pytest.approx(nu2, rel=1e-5)
    est, _ = run(model, x, y, jacobian="estimate")
    # unbiased random-projection estimate (32 probes): within a loose band
    assert torch.allclose(est["jacobian_fro"], fields["jacobian_fro"], rtol=0.35)


def test_fd_curvature_matches_direct_computation():
    model = softplus_cnn(8, 2.0)
    x, y = torch.rand(4, 1, 8, 8), torch.randint(0, 10, (4,))
    h = 0.5
    fields, _ = run(model, x, y, fd_h=h)

    def grad(v):
        v = v.clone().requires_grad_(True)
        return torch.autograd.grad(F.cross_entropy(model(v), y, reduction="sum"), v)[0]

    g = grad(x)
    z = torch.sign(g) / torch.sign(g).flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    expect = (grad(x + h * z) - g).flatten(1).norm(dim=1)
    assert torch.allclose(fields["fd_curvature"].float(), expect, rtol=1e-4)


def test_batched_equals_per_sample_and_is_deterministic():
    model = softplus_cnn(8, 4.0)
    x, y = torch.rand(8, 1, 8, 8), torch.randint(0, 10, (8,))
    idx = torch.arange(8)
    opts = CurvatureOptions(jacobian="exact", profile=2)
    with measurement_state(model) as prep:
        batched, _ = compute_geometry(prep.model, x, y, idx, opts)
        again, _ = compute_geometry(prep.model, x, y, idx, opts)
        single = [compute_geometry(prep.model, x[i : i + 1], y[i : i + 1], idx[i : i + 1], opts)[0]
                  for i in range(8)]
    for key in ("grad_norm", "hessian_norm", "curvature", "hessian_fro", "jacobian_fro", "hessian_eigs"):
        assert torch.equal(batched[key], again[key]), key
        loop = torch.cat([s[key] for s in single])
        assert torch.allclose(batched[key], loop, rtol=1e-5, atol=1e-7), key


def test_power_iteration_reads_low_on_plus_minus_pair():
    """A ± pair defeats power iteration; Lanczos gets it right."""
    d = 20
    Q, _ = torch.linalg.qr(torch.randn(d, d, dtype=torch.float64))
    ev = torch.linspace(-0.5, 0.5, d, dtype=torch.float64)
    ev[0], ev[1] = 1.0, -0.999
    H = Q @ torch.diag(ev) @ Q.T
    q0 = torch.randn(1, d, dtype=torch.float64)
    lan = lanczos(lambda v: v @ H, q0, max_iter=20, tol=1e-8)
    assert float(lan.eigs[0, 0]) == pytest.approx(1.0, rel=1e-8)
    pw = power_iteration(lambda v: v @ H, q0, iters=1)
    assert float(pw.eigs[0, 0].abs()) < 0.999


def test_lanczos_marks_stragglers_and_counts_iterations():
    d = 50
    ev = torch.linspace(1.0, 2.0, d, dtype=torch.float64)  # clustered top: slow convergence
    H = torch.diag(ev)
    q0 = torch.ones(2, d, dtype=torch.float64)
    q0[1] = 0
    q0[1, -1] = 1.0  # exact eigenvector: converges in one step
    res = lanczos(lambda v: v @ H, q0, max_iter=3, tol=1e-12)
    assert res.converged.tolist() == [False, True]
    assert res.iterations.tolist() == [3, 1]
    assert float(res.eigs[1, 0]) == pytest.approx(2.0)


def test_model_state_restored_and_train_bn_notice():
    model = relu_cnn().train()
    model[0].weight.requires_grad_(True)
    model[4 + 1].weight.requires_grad_(False)
    flags = [p.requires_grad for p in model.parameters()]
    with measurement_state(model) as prep:
        assert not prep.model.training
        assert any("train mode" in n for n in prep.notices)
    assert model.training and all(m.training for m in model.modules())
    assert [p.requires_grad for p in model.parameters()] == flags


class NoDoubleBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.tanh(x)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * (1 - torch.tanh(x) ** 2)


def test_model_without_double_backward_gets_clear_error():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(16, 3)

        def forward(self, x):
            return self.lin(NoDoubleBackward.apply(x.flatten(1)))

    for target in ("loss", "logit"):
        with pytest.raises(ModelError, match="not differentiable|double backward"):
            run(M().eval(), torch.rand(2, 1, 4, 4), torch.tensor([0, 1]), method="lanczos", target=target)


def test_options_are_validated():
    with pytest.raises(UsageError, match="method"):
        CurvatureOptions(method="magic").validate()
    with pytest.raises(UsageError, match="target"):
        CurvatureOptions(target="prob").validate()


def test_smooth_relu_measures_softplus_surrogate():
    model = relu_cnn()
    x, y = torch.rand(3, 1, 8, 8), torch.randint(0, 10, (3,))
    with measurement_state(model, smooth_relu_beta=7.0) as prep:
        assert not any(isinstance(m, nn.ReLU) for m in prep.model.modules())
        sp = [m for m in prep.model.modules() if isinstance(m, nn.Softplus)]
        assert len(sp) == 1 and sp[0].beta == 7.0
        fields, method = compute_geometry(prep.model, x, y, torch.arange(3), CurvatureOptions(jacobian="off"))
    assert method == "lanczos"
    assert any(isinstance(m, nn.ReLU) for m in model.modules())  # the user's model is untouched
    assert bool(torch.isfinite(fields["curvature"]).all()) and not math.isnan(float(fields["curvature"][0]))


def test_label_pred_uses_predicted_class():
    model = softplus_cnn(8, 2.0)
    x = torch.rand(4, 1, 8, 8)
    pred = model(x).argmax(1)
    wrong = (pred + 1) % 10
    a, _ = run(model, x, wrong, label="pred")
    b, _ = run(model, x, pred)
    assert torch.equal(a["label"], pred)
    assert torch.allclose(a["grad_norm"], b["grad_norm"])


def test_spectrally_normalised_relu_net_is_still_piecewise_linear():
    from lcnn_audit.geometry.gauss_newton import is_piecewise_linear

    sn = torch.nn.utils.parametrizations.spectral_norm
    model = nn.Sequential(nn.Flatten(), sn(nn.Linear(64, 10)), nn.ReLU(), nn.Linear(10, 3)).eval()
    assert is_piecewise_linear(model) and not is_piecewise_linear(nn.Sequential(nn.Tanh()))
    x, y = torch.rand(4, 1, 8, 8), torch.randint(0, 3, (4,))
    _, method = run(model, x, y)
    assert method == "gauss-newton"


def test_smooth_relu_function_matches_softplus_to_second_order():
    from lcnn_audit.geometry.smooth import SmoothReLU

    x = (torch.randn(40, dtype=torch.float64) * 0.01).requires_grad_(True)
    fast, ref = SmoothReLU(beta=300.0), nn.Softplus(beta=300.0)
    assert torch.equal(fast(x), ref(x))
    assert torch.autograd.gradcheck(fast, (x,)) and torch.autograd.gradgradcheck(fast, (x,))
    g1 = torch.autograd.grad(fast(x).sum(), x, create_graph=True)[0]
    g2 = torch.autograd.grad(ref(x).sum(), x, create_graph=True)[0]
    assert torch.allclose(g1, g2, rtol=1e-12)
    h1 = torch.autograd.grad(g1.sum(), x)[0]
    h2 = torch.autograd.grad(g2.sum(), x)[0]
    assert torch.allclose(h1, h2, rtol=1e-10)
    # inside a network: identical Hessian norms to the plain Softplus surrogate
    model = relu_cnn()
    x4, y4 = torch.rand(3, 1, 8, 8), torch.randint(0, 10, (3,))
    with measurement_state(model, smooth_relu_beta=20.0) as prep:
        fast_fields, _ = compute_geometry(prep.model, x4, y4, torch.arange(3), CurvatureOptions(jacobian="off"))
    plain = relu_cnn()
    plain[2] = nn.Softplus(beta=20.0)
    slow_fields, _ = run(plain, x4, y4)
    assert torch.allclose(fast_fields["hessian_norm"], slow_fields["hessian_norm"], rtol=1e-5)
