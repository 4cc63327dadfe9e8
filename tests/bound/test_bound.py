"""The data-free bound (LCNN Theorem 1) and the rigorous Lipschitz/Hessian bounds, against hand
computations, dense Hessians and the curvature engine's measurements."""

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from typer.testing import CliRunner

from lcnn_audit.bound import (
    GELU_CONSTANTS,
    SIGMOID_CONSTANTS,
    SILU_CONSTANTS,
    TANH_CONSTANTS,
    _adaptive_overlap,
    _maxpool_overlap,
    bound_audit,
    curvature_bound,
)
from lcnn_audit.cli import app
from lcnn_audit.convert import ConvertOptions, convert_model
from lcnn_audit.data import load_data
from lcnn_audit.errors import ModelError, UsageError
from lcnn_audit.geometry import CurvatureOptions, curvature_audit
from lcnn_audit.layers import CenteredSoftplus, LipschitzBatchNorm2d
from lcnn_audit.loading import load_model, save_model
from lcnn_audit.models import SmallCNN

runner = CliRunner()


def svd_norm(w: torch.Tensor) -> float:
    return float(torch.linalg.svdvals(w.detach().double().reshape(w.shape[0], -1))[0])


def mlp(b1=2.0, b2=0.5):
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(6, 5), CenteredSoftplus(b1), nn.Linear(5, 4), CenteredSoftplus(b2),
                         nn.Linear(4, 3)).double().eval()


class Residual(nn.Module):
    """x + s₀(Wx), then a linear head: a non-sequential graph."""

    def __init__(self, beta=3.0):
        super().__init__()
        self.inner = nn.Linear(4, 4, bias=False)
        self.act = CenteredSoftplus(beta)
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        x = x.flatten(1)
        return self.head(x + self.act(self.inner(x)))


# --------------------------------------------------------------------------- composition


def test_chain_matches_hand_computation():
    net = mlp()
    s1, s2, s3 = (svd_norm(net[i].weight) for i in (1, 3, 5))
    b1, b2 = (float(net[i].beta.detach()) for i in (2, 4))  # 2.0 and 0.5, as stored (exp of a float32 log)
    r = curvature_bound(net, (6,))
    s = r.summary
    assert s["composition"] == "sequential"
    assert s["lipschitz"] == pytest.approx(s1 * s2 * s3, rel=1e-9)
    assert s["theorem1"] == pytest.approx(b1 * s1 + b2 * s1 * s2, rel=1e-9)
    assert s["theorem1_width_weighted"] == pytest.approx(5 * b1 * s1 + 4 * b2 * s1 * s2, rel=1e-9)
    H = b1 / 4 * s1**2 * s2 * s3 + b2 / 4 * (s1 * s2) ** 2 * s3
    assert s["hessian_logits"] == pytest.approx(H, rel=1e-9)
    assert s["hessian_loss"] == pytest.approx(0.5 * (s1 * s2 * s3) ** 2 + math.sqrt(2) * H, rel=1e-9)
    assert [row.op for row in r.layers] == ["Linear", "CenteredSoftplus", "Linear", "CenteredSoftplus", "Linear"]
    assert [row.curvature for row in r.layers] == pytest.approx([0, b1, 0, b2, 0])
    assert [row.second_derivative for row in r.layers] == pytest.approx([0, b1 / 4, 0, b2 / 4, 0])
    assert [row.running_lipschitz for row in r.layers] == pytest.approx(
        [s1, s1, s1 * s2, s1 * s2, s1 * s2 * s3], rel=1e-9)
    assert s["sum_beta"] == pytest.approx(b1 + b2) and s["penalty"] == pytest.approx(1e-4 * (b1 + b2))


def test_residual_graph_composition():
    torch.manual_seed(0)
    net = Residual(3.0).double().eval()
    w, v = svd_norm(net.inner.weight), svd_norm(net.head.weight)
    beta = float(net.act.beta.detach())
    s = curvature_bound(net, (4,)).summary
    assert s["composition"] == "graph" and "upper-bound every path" in s["composition_note"]
    assert s["lipschitz"] == pytest.approx((1 + w) * v, rel=1e-9)
    assert s["hessian_logits"] == pytest.approx(beta / 4 * w**2 * v, rel=1e-9)
    assert s["theorem1"] == pytest.approx(beta * w, rel=1e-9)


def _exact_hessians(net, x, label):
    def logit(t):
        return net(t.unsqueeze(0))[0, label]

    def loss(t):
        return F.cross_entropy(net(t.unsqueeze(0)), torch.tensor([label]))

    norms = []
    for f in (logit, loss):
        H = torch.autograd.functional.hessian(f, x).reshape(x.numel(), -1)
        norms.append(float(torch.linalg.matrix_norm(H, 2)))
    g = torch.autograd.functional.jacobian(lambda t: net(t.unsqueeze(0))[0], x).reshape(-1, x.numel())
    return norms[0], norms[1], float(torch.linalg.matrix_norm(g, 2))


def test_rigorous_bounds_hold_against_dense_hessians():
    torch.manual_seed(0)
    nets = [mlp(3.0, 6.0), Residual(4.0).double().eval()]
    for net in nets:
        shape = (6,) if isinstance(net, nn.Sequential) else (4,)
        s = curvature_bound(net, shape).summary
        worst = [0.0, 0.0, 0.0]
        for i in range(16):
            x = torch.randn(*shape, dtype=torch.float64) * (0.05 if i % 2 else 2.0)
            for label in range(2):
                worst = [max(a, b) for a, b in zip(worst, _exact_hessians(net, x, label), strict=True)]
        assert worst[0] <= s["hessian_logits"] and worst[1] <= s["hessian_loss"] and worst[2] <= s["lipschitz"]
        assert worst[0] > 0


def test_bound_at_least_measured_curvature_on_a_converted_net(tmp_path):
    """The Hessian bounds are ≥ the largest Hessian norm the curvature engine measures (loss and
    logit), and ≥ ‖∇²f‖ = C_f·(‖∇f‖ + ε) for every sample, on a small converted CNN."""
    torch.manual_seed(0)
    net = SmallCNN(width=4, input_size=8).eval()
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.running_var.uniform_(0.2, 2.0)
                m.weight.uniform_(0.5, 2.0)
    model = load_model(net)
    model, _ = convert_model(model, ConvertOptions(beta_init=4.0), input_shape=(1, 8, 8))
    torch.save({"x": torch.rand(6, 1, 8, 8), "y": torch.randint(0, 10, (6,))}, tmp_path / "d.pt")
    data = load_data(str(tmp_path / "d.pt"))
    s = curvature_bound(model, (1, 8, 8)).summary
    for target, key in (("loss", "hessian_loss"), ("logit", "hessian_logits")):
        res = curvature_audit(model, data, CurvatureOptions(target=target, method="lanczos", jacobian="off",
                                                            fro_probes=0, max_iter=40))
        ps = res.per_sample
        assert max(ps["hessian_norm"]) > 0
        assert max(ps["hessian_norm"]) <= s[key]
        for c, g in zip(ps["curvature"], ps["grad_norm"], strict=True):
            assert c <= s[key] / (g + 1e-6) * (1 + 1e-6)
        assert max(ps["grad_norm"]) <= s["lipschitz"] * (math.sqrt(2) if target == "loss" else 1)


def test_theorem1_is_not_a_bound_on_normalised_curvature():
    """f(x) = s₀(x) + s₀(−x): ∇f(0) = 0 while ∇²f(0) = β/2, so C_f(0) = (β/2)/ε exceeds the finite
    Theorem 1 sum; the rigorous Hessian bound β/√2 still holds. A linear model has Theorem 1 sum 0
    but positive loss curvature (the softmax). Both are why the sum is reported, not claimed as a bound."""
    beta, eps = 2.0, 1e-6
    net = nn.Sequential(nn.Linear(1, 2, bias=False), CenteredSoftplus(beta), nn.Linear(2, 1, bias=False)).double()
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0], [-1.0]]))
        net[2].weight.copy_(torch.tensor([[1.0, 1.0]]))
    s = curvature_bound(net, (1,)).summary
    x = torch.zeros(1, 1, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(net(x).sum(), x, create_graph=True)
    (h,) = torch.autograd.grad(g.sum(), x)
    g, h = float(g.detach().abs()), float(h)
    assert g < 1e-12 and h == pytest.approx(beta / 2)
    curvature = h / (g + eps)
    assert s["theorem1"] == pytest.approx(beta * math.sqrt(2)) and curvature > 1e5 * s["theorem1"]
    assert s["hessian_logits"] == pytest.approx(beta / math.sqrt(2)) and s["hessian_logits"] >= h

    linear = nn.Sequential(nn.Flatten(), nn.Linear(3, 4)).double()
    assert curvature_bound(linear, (3,)).summary["theorem1"] == 0
    xin = torch.randn(3, dtype=torch.float64)
    H = torch.autograd.functional.hessian(lambda t: F.cross_entropy(linear(t.view(1, 3)), torch.tensor([1])), xin)
    assert float(torch.linalg.matrix_norm(H, 2)) > 1e-3


# --------------------------------------------------------------------------- per-layer rules


def test_layer_norms_against_dense_operators():
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 3, 3, stride=2, padding=1)
    bn = nn.BatchNorm2d(3)
    with torch.no_grad():
        bn.running_var.uniform_(0.1, 2.0)
        bn.weight.uniform_(-2, 2)
    net = nn.Sequential(conv, bn, nn.AdaptiveAvgPool2d(1), nn.Flatten()).double().eval()
    rows = {r.op: r for r in curvature_bound(net, (2, 7, 5)).layers}

    def dense(f, shape):
        x = torch.zeros(1, *shape, dtype=torch.float64)
        J = torch.autograd.functional.jacobian(lambda t: f(t).flatten(), x).reshape(-1, x.numel())
        return float(torch.linalg.matrix_norm(J, 2))

    assert rows["Conv2d"].lipschitz == pytest.approx(dense(conv, (2, 7, 5)), rel=1e-7)
    assert rows["Conv2d"].lipschitz >= dense(conv, (2, 7, 5))
    assert rows["BatchNorm2d"].lipschitz == pytest.approx(dense(bn, (3, 4, 3)), rel=1e-9)
    assert rows["AdaptiveAvgPool2d"].lipschitz == pytest.approx(1 / math.sqrt(4 * 3), rel=1e-7)
    gbn = LipschitzBatchNorm2d.from_batchnorm(bn, gamma_init=1.3).double().eval()
    row = curvature_bound(nn.Sequential(gbn), (3, 2, 2)).layers[0]
    assert row.lipschitz == pytest.approx(min(1.3, float(gbn.bn_norm().detach())))


def test_functional_ops_compose():
    class Ops(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 4)

        def forward(self, x):
            x = x.view(x.size(0), -1)
            a, b = torch.chunk(x, 2, dim=1)
            const = torch.zeros_like(x) + x.new_ones(x.shape)
            y = self.lin(x) + const + torch.cat([a, b], 1) * 2
            return y - x.mean(dim=1, keepdim=True)

    torch.manual_seed(0)
    net = Ops().double()
    r = curvature_bound(net, (4,))
    w = svd_norm(net.lin.weight)
    # ‖W‖ + 2·√(1² + 1²) (concatenation in quadrature) + ‖mean over 4‖ = 1/2; constants add nothing
    assert r.summary["lipschitz"] == pytest.approx(w + 2 * math.sqrt(2) + 0.5, rel=1e-6)
    assert r.summary["composition"] == "graph" and r.summary["hessian_logits"] == 0
    assert [row.op for row in r.layers] == ["Linear", "cat", "mul", "add", ".mean()", "sub"]


@pytest.mark.parametrize("k,s,p,d,ceil", [(3, 2, 1, 1, False), (2, 2, 0, 1, False), (3, 1, 1, 1, False),
                                          (3, 2, 0, 2, False), (3, 2, 1, 1, True)])
def test_maxpool_overlap_count_and_lipschitz(k, s, p, d, ceil):
    pool = nn.MaxPool2d(k, s, p, d, ceil_mode=ceil)
    shape = (1, 9, 8)
    out = pool(torch.zeros(1, *shape))
    # brute force: which input positions does each window read?
    idx = torch.arange(72, dtype=torch.float64).view(1, 1, 9, 8)
    counts = torch.zeros(72)
    for i in range(out.shape[2]):
        for j in range(out.shape[3]):
            for a in range(k):
                for b in range(k):
                    r, c = i * s - p + a * d, j * s - p + b * d
                    if 0 <= r < 9 and 0 <= c < 8:
                        counts[int(idx[0, 0, r, c])] += 1
    m = _maxpool_overlap(pool, shape, tuple(out.shape[1:]))
    assert m == int(counts.max())
    # the a.e. Jacobian of max-pooling never exceeds √m
    for _ in range(20):
        x = torch.randn(1, *shape, dtype=torch.float64)
        J = torch.autograd.functional.jacobian(lambda t: pool(t).flatten(), x).reshape(-1, x.numel())
        assert float(torch.linalg.matrix_norm(J, 2)) <= math.sqrt(m) + 1e-12
    assert _adaptive_overlap((1, 7), (1, 3)) == 2


@pytest.mark.parametrize("name,act,consts", [
    ("gelu", nn.GELU(), GELU_CONSTANTS), ("silu", nn.SiLU(), SILU_CONSTANTS),
    ("sigmoid", nn.Sigmoid(), SIGMOID_CONSTANTS), ("tanh", nn.Tanh(), TANH_CONSTANTS),
    ("centered_softplus", CenteredSoftplus(3.0).double(), None),
])
def test_activation_constants_against_a_grid(name, act, consts):
    if consts is None:  # (1, β/4, β) with β as stored
        beta = float(act.beta.detach())
        consts = (1.0, beta / 4, beta, True)
    x = torch.linspace(-30, 30, 600001, dtype=torch.float64, requires_grad=True)
    (d1,) = torch.autograd.grad(act(x).sum(), x, create_graph=True)
    (d2,) = torch.autograd.grad(d1.sum(), x)
    d1 = d1.detach()
    a, kappa, C, _ = consts
    assert float(d1.abs().max()) <= a <= float(d1.abs().max()) * (1 + 1e-8)
    assert float(d2.abs().max()) <= kappa <= float(d2.abs().max()) * (1 + 1e-8)
    ratio = (d2.abs() / d1.abs())[d1.abs() > 1e-300]
    assert float(ratio.max()) <= C * (1 + 1e-12)
    if math.isfinite(C):
        assert float(ratio.max()) >= C * (1 - 1e-3)


def test_penalty_is_eq5():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU(), nn.Conv2d(2, 2, 3), nn.BatchNorm2d(2),
                        nn.ReLU(), nn.Flatten(), nn.Linear(2 * 2 * 2, 3)).eval()
    conv, _ = convert_model(net, ConvertOptions(beta_init=1.5, gamma_init=3.0), input_shape=(1, 6, 6))
    with torch.no_grad():
        conv[5].log_beta.fill_(math.log(0.25))
        conv[4].gamma_raw.fill_(math.log(7.0 - 1.0))
    s = curvature_bound(conv, (1, 6, 6), lambda_beta=0.1, lambda_gamma=0.01).summary
    assert s["sum_beta"] == pytest.approx(1.75) and s["sum_log_gamma"] == pytest.approx(math.log(3) + math.log(7))
    assert s["penalty"] == pytest.approx(0.1 * 1.75 + 0.01 * (math.log(3) + math.log(7)))
    assert s["n_softplus"] == 2 and s["n_gamma_bn"] == 2


def test_unsupported_and_untraceable_models_are_refused():
    class Gated(nn.Module):
        def forward(self, x):
            return x * torch.sigmoid(x)  # a product of two data-dependent tensors

    with pytest.raises(ModelError, match="no rule"):
        curvature_bound(nn.Sequential(nn.Flatten(), Gated()), (3,))

    class Branchy(nn.Module):
        def forward(self, x):
            return x if x.sum() > 0 else -x

    with pytest.raises(ModelError, match="cannot trace"):
        curvature_bound(Branchy(), (3,))
    with pytest.raises(UsageError, match="input size"):
        curvature_bound(nn.Linear(3, 2))


# --------------------------------------------------------------------------- CLI


def test_cli_bound(tmp_path):
    torch.manual_seed(0)
    model = load_model("demo")
    model, report = convert_model(model, ConvertOptions(), input_shape=(1, 28, 28))
    path = tmp_path / "c.safetensors"
    save_model(model, path, {k: model.recipe[k] for k in ("arch", "arch_kwargs", "normalize", "convert")})
    js = tmp_path / "b.json"
    res = runner.invoke(app, ["bound", str(path), "--json", str(js)])
    assert res.exit_code == 0, res.output
    assert "Theorem 1 sum" in res.output and "LCNN penalty" in res.output
    d = json.loads(js.read_text())
    assert d["command"] == "bound" and d["summary"]["composition"] == "sequential"
    assert d["summary"]["input_shape"] == [1, 28, 28] and len(d["summary"]["layers"]) == 16
    direct = bound_audit(load_model(path)).summary
    assert d["summary"]["hessian_loss"] == pytest.approx(direct["hessian_loss"], rel=1e-6)

    res = runner.invoke(app, ["bound", "demo"])
    assert res.exit_code == 2 and "error:" in res.output and "--input-shape" in res.output
    assert "Traceback" not in res.output
    res = runner.invoke(app, ["bound", "demo", "--input-shape", "1,28,28"])
    assert res.exit_code == 0 and "almost everywhere" in " ".join(res.output.split()), res.output
    res = runner.invoke(app, ["bound", "demo", "--data", "demo"])
    assert res.exit_code == 0, res.output
