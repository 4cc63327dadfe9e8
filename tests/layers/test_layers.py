"""LCNN layers against independent oracles: closed forms, finite differences, dense operators."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import fx, nn

from lcnn_audit.errors import UsageError
from lcnn_audit.layers import (
    CenteredSoftplus,
    LipschitzBatchNorm1d,
    LipschitzBatchNorm2d,
    centered_softplus,
    matrix_norm,
    spectral_norm_conv,
    spectral_norm_linear,
    top_singular,
)
from lcnn_audit.layers.spectral import ConvGeometry


def closed_form(x: float, beta: float) -> float:
    """(1/β)·log((1 + exp(βx))/2) in float64 with Python's math (LCNN eq. 4), written as
    log1p(expm1(βx)/2)/β so that it stays accurate for small βx."""
    return math.log1p(math.expm1(beta * x) / 2.0) / beta


# --------------------------------------------------------------------------- centered softplus


@pytest.mark.parametrize("beta", [0.3, 1.0, 5.0, 40.0])
def test_centered_softplus_matches_closed_form(beta):
    xs = [-7.0, -1.3, -0.2, -0.01, 0.0, 0.004, 0.05, 0.9, 3.0, 11.0]
    got = centered_softplus(torch.tensor(xs, dtype=torch.float64), beta)
    for x, g in zip(xs, got.tolist(), strict=True):
        assert g == pytest.approx(closed_form(x, beta), rel=1e-13, abs=1e-15)


def test_centered_softplus_small_beta_series_branch():
    # |βx| < 0.1 takes the Taylor branch; the closed form is still accurate at these sizes in fp64
    for beta in (1e-3, 0.02):
        for x in (-4.0, -0.5, 0.7, 4.9):
            got = float(centered_softplus(torch.tensor(x, dtype=torch.float64), beta))
            assert got == pytest.approx(closed_form(x, beta), rel=1e-12)


def test_centered_softplus_limits():
    x = torch.linspace(-6, 6, 241, dtype=torch.float64)
    # β → 0: x/2 (the second-order term is βx²/8)
    for beta in (1e-4, 1e-8, 1e-12):
        err = (centered_softplus(x, beta) - x / 2).abs()
        assert bool((err <= beta * x**2 / 8 * 1.01 + 1e-15).all())
    assert torch.equal(centered_softplus(x, 0.0), x / 2)
    # β → ∞: ReLU, with |s₀ − ReLU| ≤ log 2 / β
    for beta in (1e2, 1e4, 1e8):
        err = (centered_softplus(x, beta) - x.clamp_min(0)).abs()
        assert float(err.max()) <= math.log(2) / beta + 1e-14  # + rounding of values up to 6
    # s₀(0) = 0 for every β, hence sⁿ(0) = 0 for any composition (the plain softplus gives log(n+1)/β)
    z = torch.zeros(3, dtype=torch.float64)
    for beta in (1e-6, 0.5, 3.0, 1e6):
        assert torch.equal(centered_softplus(z, beta), z)
    layers = nn.Sequential(*[CenteredSoftplus(b) for b in (0.1, 1.0, 7.0, 50.0, 2.0)])
    assert float(layers(torch.zeros(1)).detach().abs()) == 0.0
    plain = torch.zeros(1, dtype=torch.float64)
    for _ in range(5):
        plain = F.softplus(plain, beta=2.0)
    assert float(plain) == pytest.approx(math.log(6) / 2.0)


def test_centered_softplus_derivatives_against_closed_forms_and_finite_differences():
    beta = 3.0
    x = torch.linspace(-4, 4, 801, dtype=torch.float64, requires_grad=True)
    y = centered_softplus(x, beta)
    (g,) = torch.autograd.grad(y.sum(), x, create_graph=True)
    (h,) = torch.autograd.grad(g.sum(), x)
    s = torch.sigmoid(beta * x.detach())
    torch.testing.assert_close(g.detach(), s, rtol=1e-13, atol=1e-15)
    torch.testing.assert_close(h, beta * s * (1 - s), rtol=1e-11, atol=1e-14)
    # eq. 3: |s''/s'| = β(1 − σ(βx)) ≤ β, and s'' ≤ β/4
    assert float((h / g.detach()).max()) <= beta
    assert float(h.max()) <= beta / 4 + 1e-12
    # ∂s₀/∂β by central differences of the closed form, across both numerical branches
    for b in (1e-3, 0.02, 0.7, 6.0):
        for xv in (-2.0, -0.3, 0.05, 1.5):
            bt = torch.tensor(b, dtype=torch.float64, requires_grad=True)
            (gb,) = torch.autograd.grad(centered_softplus(torch.tensor(xv, dtype=torch.float64), bt), bt)
            step = 1e-4 * b
            fd = (closed_form(xv, b + step) - closed_form(xv, b - step)) / (2 * step)
            assert float(gb) == pytest.approx(fd, rel=1e-6, abs=1e-9)


def test_centered_softplus_gradcheck():
    x = torch.randn(40, dtype=torch.float64, requires_grad=True)
    for b in (0.01, 0.7, 30.0):  # 0.01: mostly the series branch; 30: mostly the closed-form branch
        beta = torch.tensor(b, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(centered_softplus, (x, beta))
        assert torch.autograd.gradgradcheck(centered_softplus, (x, beta))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_centered_softplus_finite_for_extreme_beta_and_x(dtype):
    x = torch.tensor([-1e4, -30.0, -1e-6, 0.0, 1e-6, 30.0, 1e4], dtype=dtype, requires_grad=True)
    for b in (1e-30, 1e-8, 1e-3, 1.0, 1e3, 1e8, 1e30):
        beta = torch.tensor(b, dtype=dtype, requires_grad=True)
        y = centered_softplus(x, beta)
        gx, gb = torch.autograd.grad(y.sum(), (x, beta), create_graph=True)
        (hx,) = torch.autograd.grad(gx.sum(), x)
        for t in (y, gx, gb, hx):
            assert bool(torch.isfinite(t).all()), (b, t)
        assert bool(((gx >= 0) & (gx <= 1)).all())


def test_centered_softplus_module():
    m = CenteredSoftplus(2.5)
    assert float(m.beta.detach()) == pytest.approx(2.5)
    assert m.curvature_bound() == pytest.approx(2.5)
    assert m.second_derivative_bound() == pytest.approx(2.5 / 4)
    assert m.lipschitz_constant() == 1.0
    assert [n for n, _ in m.named_parameters()] == ["log_beta"]
    x = torch.randn(5)
    m(x).sum().backward()
    assert m.log_beta.grad is not None and torch.isfinite(m.log_beta.grad)
    with torch.no_grad():
        m.log_beta.fill_(-200.0)  # any raw value gives a positive β
    assert float(m.beta.detach()) >= 0 and bool(torch.isfinite(m(x)).all())
    with pytest.raises(UsageError):
        CenteredSoftplus(0.0)
    with pytest.raises(UsageError):
        centered_softplus(x, -1.0)
    seq = nn.Sequential(nn.Linear(5, 5), CenteredSoftplus(3.0))
    torch.testing.assert_close(fx.symbolic_trace(seq)(x.unsqueeze(0)), seq(x.unsqueeze(0)))  # traceable


# --------------------------------------------------------------------------- γ-Lipschitz batch norm


def _trained_bn(cls=nn.BatchNorm2d, c=6, affine=True):
    bn = cls(c, affine=affine)
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(c))
        bn.running_var.copy_(torch.rand(c) * 3 + 0.05)
        if affine:
            bn.weight.copy_(torch.randn(c) * 2)
            bn.bias.copy_(torch.randn(c))
    return bn.eval()


def _jacobian_norm(layer, shape):
    x = torch.randn(1, *shape, dtype=torch.float64)
    J = torch.autograd.functional.jacobian(lambda t: layer(t).flatten(), x).reshape(-1, x.numel())
    return float(torch.linalg.matrix_norm(J, 2))


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("gamma", [1.2, 3.0, 50.0])
def test_gamma_bn_lipschitz_at_most_gamma(affine, gamma):
    bn = _trained_bn(affine=affine)
    layer = LipschitzBatchNorm2d.from_batchnorm(bn, gamma_init=gamma).double().eval()
    w = bn.weight.detach().abs() if affine else torch.ones(6)
    bn_norm = float((w / torch.sqrt(bn.running_var + bn.eps)).max())
    measured = _jacobian_norm(layer, (6, 3, 2))
    assert measured <= gamma * (1 + 1e-9)
    assert measured == pytest.approx(min(gamma, bn_norm), rel=1e-6)
    assert float(layer.lipschitz_constant().detach()) == pytest.approx(measured, rel=1e-6)
    assert float(layer.gamma.detach()) == pytest.approx(gamma) and float(layer.gamma.detach()) >= 1


def test_gamma_bn_default_gamma_keeps_the_function_and_state():
    bn = _trained_bn()
    layer = LipschitzBatchNorm2d.from_batchnorm(bn).eval()
    assert isinstance(layer, nn.BatchNorm2d)
    assert float(layer.gamma.detach()) >= max(float(layer.bn_norm().detach()), 2.0)
    x = torch.randn(4, 6, 3, 3)
    assert torch.equal(layer(x), bn(x))
    sd, ref = layer.state_dict(), bn.state_dict()
    assert set(sd) == set(ref) | {"gamma_raw"}
    assert all(torch.equal(sd[k], ref[k]) for k in ref)
    # a plain BatchNorm2d state dict loads (γ keeps its value)
    fresh = LipschitzBatchNorm2d(6, gamma_init=4.0)
    fresh.load_state_dict(ref, strict=False)
    assert torch.equal(fresh.running_var, bn.running_var) and float(fresh.gamma.detach()) == pytest.approx(4.0)


def test_gamma_bn_train_mode_updates_running_stats_like_batchnorm():
    bn = _trained_bn().train()
    layer = LipschitzBatchNorm2d.from_batchnorm(bn, gamma_init=1.5).train()
    x = torch.randn(8, 6, 4, 4) * 3 + 1
    y_bn = bn(x)
    y = layer(x)
    torch.testing.assert_close(layer.running_mean, bn.running_mean)
    torch.testing.assert_close(layer.running_var, bn.running_var)
    assert int(layer.num_batches_tracked) == int(bn.num_batches_tracked)
    norm = float((bn.weight.detach().abs() / torch.sqrt(bn.running_var + bn.eps)).max())
    torch.testing.assert_close(y, y_bn * (min(1.5, norm) / norm))
    y.sum().backward()
    assert layer.gamma_raw.grad is not None


def test_gamma_bn_1d_and_validation():
    bn = _trained_bn(nn.BatchNorm1d, c=5)
    layer = LipschitzBatchNorm1d.from_batchnorm(bn, gamma_init=1.1).double().eval()
    assert _jacobian_norm(layer, (5,)) <= 1.1 * (1 + 1e-9)
    with pytest.raises(UsageError):
        LipschitzBatchNorm2d(4, gamma_init=1.0)
    with pytest.raises(UsageError):
        LipschitzBatchNorm2d(4, track_running_stats=False)


# --------------------------------------------------------------------------- spectral normalisation


def dense_operator(conv: nn.Conv2d, shape) -> torch.Tensor:
    """The conv layer's linear map (no bias) as a dense matrix, one basis vector at a time,
    through the module's own forward code in float64."""
    n = math.prod(shape)
    eye = torch.eye(n, dtype=torch.float64).view(n, *shape)
    w = conv.weight.detach().double()
    with torch.no_grad():
        cols = conv._conv_forward(eye, w, None)
    return cols.reshape(n, -1).T


CONV_CASES = {
    "stride1-pad1": dict(cin=3, cout=5, k=3, stride=1, padding=1),
    "stride2-pad1": dict(cin=3, cout=4, k=3, stride=2, padding=1),
    "stride2-odd-size": dict(cin=2, cout=3, k=3, stride=2, padding=0, size=(7, 5)),
    "stride2-k4": dict(cin=2, cout=4, k=4, stride=2, padding=1),
    "groups": dict(cin=4, cout=6, k=3, stride=1, padding=1, groups=2),
    "groups-stride2": dict(cin=6, cout=6, k=3, stride=2, padding=1, groups=3),
    "dilation": dict(cin=2, cout=3, k=3, stride=1, padding=2, dilation=2),
    "stride3": dict(cin=2, cout=2, k=3, stride=3, padding=1),
    "reflect": dict(cin=2, cout=3, k=3, stride=1, padding=1, padding_mode="reflect"),
    "same-even-kernel": dict(cin=2, cout=3, k=4, stride=1, padding="same"),
}


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize("case", list(CONV_CASES))
def test_converted_conv_has_spectral_norm_one(case):
    c = dict(CONV_CASES[case])
    size = c.pop("size", (6, 6))
    conv = nn.Conv2d(c.pop("cin"), c.pop("cout"), c.pop("k"), **c)
    shape = (conv.in_channels, *size)
    sigma0 = float(torch.linalg.matrix_norm(dense_operator(conv, shape), 2))
    res = spectral_norm_conv(conv, shape)
    assert res.converged
    assert res.sigma == pytest.approx(sigma0, rel=1e-4)
    conv.eval()
    assert isinstance(conv, nn.Conv2d)
    A = dense_operator(conv, shape)  # conv.weight is now the normalised weight
    assert float(torch.linalg.matrix_norm(A, 2)) == pytest.approx(1.0, abs=1e-3)
    par = conv.parametrizations.weight[0]
    assert par._v.shape == (1, *shape)
    assert par._u.shape[1] == conv.out_channels and par._u.numel() == A.shape[0]


@pytest.mark.parametrize("case", ["stride2-odd-size", "groups-stride2", "stride3", "dilation"])
def test_conv_adjoint_is_the_transpose(case):
    c = dict(CONV_CASES[case])
    size = c.pop("size", (6, 6))
    conv = nn.Conv2d(c.pop("cin"), c.pop("cout"), c.pop("k"), **c).double()
    geo = ConvGeometry(conv, (conv.in_channels, *size))
    assert geo.use_transpose
    x = torch.randn(1, *geo.input_shape, dtype=torch.float64)
    y = torch.randn(1, *geo.output_shape, dtype=torch.float64)
    w = conv.weight.detach()
    lhs = (geo.apply(x, w) * y).sum()
    rhs = (x * geo.adjoint(y, w)).sum()
    assert float(lhs) == pytest.approx(float(rhs), rel=1e-12)
    A = dense_operator(conv, geo.input_shape)
    torch.testing.assert_close(geo.adjoint(y, w).flatten(), A.T @ y.flatten())


def test_conv_buffers_sized_from_input_and_output_for_stride_2():
    conv = nn.Conv2d(3, 8, 3, stride=2, padding=1)
    spectral_norm_conv(conv, (3, 9, 10))
    par = conv.parametrizations.weight[0]
    assert par._v.shape == (1, 3, 9, 10)
    assert par._u.shape == (1, 8, 5, 5)
    assert conv(torch.randn(2, 3, 9, 10)).shape == (2, 8, 5, 5)


def test_conv_parametrization_trains_and_tracks_the_norm():
    conv = nn.Conv2d(2, 4, 3, stride=2, padding=1)
    shape = (2, 6, 6)
    spectral_norm_conv(conv, shape)
    conv.train()
    opt = torch.optim.SGD(conv.parameters(), lr=0.5)
    for _ in range(3):
        opt.zero_grad()
        conv(torch.randn(4, *shape)).pow(2).sum().backward()
        opt.step()
    for _ in range(200):  # training-mode power steps refine u, v for the updated weight
        with torch.no_grad():
            conv(torch.randn(1, *shape))
    conv.eval()
    assert float(torch.linalg.matrix_norm(dense_operator(conv, shape), 2)) == pytest.approx(1.0, abs=1e-3)


def test_conv1d_spectral_norm():
    conv = nn.Conv1d(3, 4, 5, stride=2, padding=2)
    spectral_norm_conv(conv, (3, 11))
    conv.eval()
    eye = torch.eye(33, dtype=torch.float64).view(33, 3, 11)
    A = conv._conv_forward(eye, conv.weight.detach().double(), None).reshape(33, -1)
    assert float(torch.linalg.matrix_norm(A, 2)) == pytest.approx(1.0, abs=1e-3)


def test_spectral_norm_linear_and_refusals():
    lin = nn.Linear(20, 7)
    sigma0 = float(torch.linalg.matrix_norm(lin.weight.detach().double(), 2))
    res = spectral_norm_linear(lin)
    assert res.sigma == pytest.approx(sigma0, rel=1e-6)
    lin.eval()
    assert isinstance(lin, nn.Linear)
    assert float(torch.linalg.matrix_norm(lin.weight.detach().double(), 2)) == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(UsageError, match="already parametrised"):
        spectral_norm_linear(lin)
    with pytest.raises(UsageError, match="channels"):
        spectral_norm_conv(nn.Conv2d(3, 3, 3), (4, 8, 8))


def test_top_singular_matches_svd():
    torch.manual_seed(1)
    for shape in [(50, 30), (30, 80), (200, 120)]:
        A = torch.randn(*shape, dtype=torch.float64)
        s = float(torch.linalg.matrix_norm(A, 2))
        res = top_singular(lambda v, A=A: A @ v, lambda u, A=A: A.T @ u, torch.randn(shape[1], dtype=torch.float64),
                           tol=1e-10, max_iter=400)
        assert res.converged
        assert res.sigma == pytest.approx(s, rel=1e-9)
        torch.testing.assert_close(A @ res.v, res.sigma * res.u, rtol=0, atol=1e-6 * s)
    big = torch.randn(300, 3000)
    res = matrix_norm(big, exact_flops=0)  # forces the Lanczos path
    assert res.sigma == pytest.approx(float(torch.linalg.matrix_norm(big.double(), 2)), rel=1e-5)
