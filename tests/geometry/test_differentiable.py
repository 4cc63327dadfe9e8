"""Ops without double backward (SDPA kernels, hardsigmoid/hardswish) and --smooth-relu's coverage
of the ReLU family (issue #18)."""

import math

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.ops import SqueezeExcitation

from lcnn_audit.errors import ModelError
from lcnn_audit.geometry import CurvatureOptions, compute_geometry
from lcnn_audit.geometry.differentiable import hardsigmoid, hardswish, twice_differentiable
from lcnn_audit.geometry.hvp import BatchedHVP
from lcnn_audit.geometry.objective import make_objective
from lcnn_audit.geometry.smooth import (
    SmoothHardsigmoid,
    SmoothHardswish,
    SmoothHardtanh,
    SmoothLeakyReLU,
    smooth_relu_report,
)
from lcnn_audit.geometry.state import measurement_state

FAST = {"max_iter": 4, "fro_probes": 0, "jacobian": "off"}


def _geometry(model, x, y, **kw):
    with measurement_state(model, **{k: kw.pop(k) for k in ("dtype", "smooth_relu_beta") if k in kw}) as prep:
        fields, method = compute_geometry(prep.model, x, y, torch.arange(len(x)), CurvatureOptions(**{**FAST, **kw}))
    return fields, method, prep.notices


def _off_kinks(n, kinks=(-3.0, 3.0)):
    x = torch.linspace(-5, 5, n, dtype=torch.float64) + 1e-3
    for k in kinks:
        assert (x - k).abs().min() > 1e-4
    return x


@pytest.mark.parametrize("ours,theirs", [(hardsigmoid, F.hardsigmoid), (hardswish, F.hardswish)])
def test_clamp_forms_equal_torch_values_and_gradients(ours, theirs):
    x = _off_kinks(1001).requires_grad_(True)
    a, b = ours(x), theirs(x)
    assert torch.equal(a, b) or torch.allclose(a, b, rtol=0, atol=1e-15)
    (ga,) = torch.autograd.grad(a.sum(), x, create_graph=True)
    (gb,) = torch.autograd.grad(b.sum(), x)
    # torch's fp64 hardsigmoid backward multiplies by 1/6 rounded to float32 (0.1666666716): 3e-8 off
    assert torch.allclose(ga, gb, rtol=5e-8, atol=1e-15)
    # the second derivative torch's kernel cannot give (hardsigmoid: piecewise linear, no graph)
    h = torch.autograd.grad(ga.sum(), x)[0] if ga.requires_grad else torch.zeros_like(ga)
    inside = (x.detach().abs() < 3)
    expected = torch.where(inside, torch.full_like(h, 1 / 3 if ours is hardswish else 0.0), torch.zeros_like(h))
    assert torch.allclose(h, expected, atol=1e-15)


class _MobileBlock(nn.Module):
    """MobileNetV3-like: conv → Hardswish → SE(Hardsigmoid) → functional hardswish → linear."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.act = nn.Hardswish()
        self.se = SqueezeExcitation(4, 2, scale_activation=nn.Hardsigmoid)
        self.fc = nn.Linear(4 * 64, 5)

    def forward(self, x):
        return self.fc(F.hardswish(self.se(self.act(3 * self.conv(x)))).flatten(1))


def test_hvp_of_hard_activations_matches_finite_differences_of_torch_gradient():
    """HVPs in the clamp form equal central differences of the gradient of the untouched
    model (fused kernels), exact for piecewise-quadratic functions away from kinks."""
    torch.manual_seed(0)
    model = _MobileBlock().double().eval()
    x, y = torch.rand(3, 3, 8, 8, dtype=torch.float64), torch.tensor([0, 1, 2])
    v = torch.randn_like(x)
    obj = make_objective(model, y)

    def grad(z):
        z = z.detach().requires_grad_(True)
        f, _ = obj(z)
        return torch.autograd.grad(f.sum(), z)[0]

    with pytest.raises(ModelError, match="derivative for"):  # torch's own kernels: no double backward
        BatchedHVP(obj, x)(v)
    with twice_differentiable() as mode:
        hv = BatchedHVP(obj, x)(v)
        g_ours = grad(x)
    h = 1e-6
    fd = (grad(x + h * v) - grad(x - h * v)) / (2 * h)
    g = grad(x)
    assert (g_ours - g).norm() <= 1e-7 * g.norm()  # torch's kernels use 1/6 rounded to fp32
    assert (hv - fd).norm() <= 1e-6 * fd.norm()
    assert mode.seen["hardswish"] >= 3 and mode.seen["hardsigmoid"] >= 1


class _Untraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(192, 5)

    def forward(self, x):
        if float(x.sum()) > -1:  # data-dependent control flow: torch.fx cannot trace this
            x = F.hardswish(4 * x - 2)
        return self.fc(x.flatten(1))


def test_functional_hardswish_in_untraceable_model_audits_with_notice():
    x, y = torch.rand(2, 3, 8, 8), torch.tensor([0, 1])
    fields, method, notices = _geometry(_Untraceable().eval(), x, y)
    assert method == "lanczos" and (fields["hessian_norm"] > 0).all()
    assert any("clamp form" in n for n in notices)


def test_mobilenet_v3_curvature():
    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v3_small(num_classes=10).eval()
    fields, method, notices = _geometry(model, torch.rand(2, 3, 32, 32), torch.tensor([0, 1]))
    assert method == "lanczos" and torch.isfinite(fields["hessian_norm"]).all()
    assert any("hardsigmoid/hardswish" in n for n in notices)


def tiny_vit():
    return torchvision.models.VisionTransformer(image_size=16, patch_size=8, num_layers=1, num_heads=2,
                                                hidden_dim=16, mlp_dim=32, num_classes=10)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device"))])
def test_vit_curvature_runs_on_the_math_kernel(device):
    torch.manual_seed(0)
    model = tiny_vit().eval().to(device)
    nn.init.normal_(model.heads.head.weight)  # torchvision zero-initialises the head (H = 0)
    x, y = torch.rand(2, 3, 16, 16, device=device), torch.tensor([0, 1], device=device)
    fields, method, notices = _geometry(model, x, y)
    assert (fields["hessian_norm"] > 0).all()
    assert any("sdpa_kernel(SDPBackend.MATH)" in n for n in notices)


def test_mha_without_math_kernel_fails_and_with_it_matches_explicit_attention():
    """nn.MultiheadAttention(need_weights=False) uses SDPA; its HVP equals the one through the
    explicit softmax(QKᵀ/√d)V path (need_weights=True), which needs no SDPA kernel."""
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(8, 2, batch_first=True).double().eval()
    for p in mha.parameters():
        p.requires_grad_(False)

    def objective(need_weights):
        def fn(x):
            t = x.view(x.shape[0], 4, 8)
            out = mha(t, t, t, need_weights=need_weights)[0].flatten(1)[:, :5]
            return F.cross_entropy(out, torch.tensor([0, 1]), reduction="none"), out
        return fn

    x, v = torch.rand(2, 32, dtype=torch.float64), torch.randn(2, 32, dtype=torch.float64)
    with pytest.raises(ModelError, match="derivative for"):
        BatchedHVP(objective(False), x)(v)
    with twice_differentiable():
        fused = BatchedHVP(objective(False), x)(v)
    explicit = BatchedHVP(objective(True), x)(v)
    assert torch.allclose(fused, explicit, rtol=1e-10, atol=1e-12)


# --------------------------------------------------------------------------- --smooth-relu


@pytest.mark.parametrize("smooth,orig", [
    (SmoothHardtanh(0.0, 6.0), F.relu6), (SmoothHardtanh(-1.0, 2.0), lambda x: F.hardtanh(x, -1.0, 2.0)),
    (SmoothLeakyReLU(0.1), lambda x: F.leaky_relu(x, 0.1)), (SmoothHardsigmoid(), F.hardsigmoid),
    (SmoothHardswish(), F.hardswish)])
def test_smooth_surrogates_tend_to_the_originals(smooth, orig):
    x = torch.linspace(-10, 10, 2001, dtype=torch.float64)
    for beta in (10.0, 1000.0):
        smooth.beta = beta
        err = (smooth(x) - orig(x)).abs().max()
        assert err <= 2 * 5 * math.log(2) / beta  # ≤ two softplus gaps, times |x| ≤ 10 / 2 for hardswish
    xr = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(smooth(xr).sum(), xr, create_graph=True)
    (h,) = torch.autograd.grad(g.sum(), xr)
    assert h.abs().max() > 0  # a second derivative exists


class _Functional(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.prelu = nn.PReLU(4)
        self.fc = nn.Linear(256, 5)

    def forward(self, x):
        h = F.relu6(self.conv(x) * 4)
        h = F.leaky_relu(h - 1, negative_slope=0.2) + F.hardtanh(h, -0.5, 0.5) + torch.relu(h - 2)
        return self.fc(self.prelu(h).flatten(1))


def test_smooth_relu_replaces_functional_forms_and_prelu():
    torch.manual_seed(0)
    model = _Functional().eval()
    out, notices = smooth_relu_report(model, 1e6)
    names = {type(m).__name__ for m in out.modules()}
    assert {"SmoothHardtanh", "SmoothLeakyReLU", "SmoothReLU"} <= names and "PReLU" not in names
    assert not notices
    x = torch.rand(4, 3, 8, 8)
    with torch.no_grad():
        assert torch.allclose(out(x), model(x), atol=1e-4)  # β = 1e6: within a few log 2/β
    fields, method, _ = _geometry(model, x, torch.arange(4), smooth_relu_beta=1000.0)
    assert method == "lanczos" and (fields["hessian_norm"] > 0).all()


def test_smooth_relu_names_what_it_cannot_replace():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Threshold(0.1, 0.0), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Linear(36, 5)).eval()
    _, notices = smooth_relu_report(model, 1000.0)
    assert len(notices) == 1 and "MaxPool2d ×1" in notices[0] and "Threshold ×1" in notices[0]


def test_mobilenet_v2_smooth_relu_leaves_gauss_newton():
    """ReLU6 used to stay in place, so --smooth-relu 1000 still took the exact Gauss-Newton path."""
    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v2(num_classes=10).eval()
    x, y = torch.rand(2, 3, 32, 32), torch.tensor([0, 1])
    _, method, _ = _geometry(model, x, y)
    assert method == "gauss-newton"
    out, notices = smooth_relu_report(model, 1000.0)
    assert not any(isinstance(m, (nn.ReLU, nn.ReLU6)) for m in out.modules()) and not notices
    _, method, _ = _geometry(model, x, y, smooth_relu_beta=1000.0)
    assert method == "lanczos"


class _HardAttention(nn.Module):
    """1×28×28 → 7×7 patches → Hardswish → MultiheadAttention (SDPA path) → logits."""

    def __init__(self):
        super().__init__()
        self.patch = nn.Conv2d(1, 8, 7, stride=7)
        self.act = nn.Hardswish()
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        t = self.act(self.patch(x)).flatten(2).transpose(1, 2)
        return self.fc(self.attn(t, t, t, need_weights=False)[0].mean(1))


def test_gradient_penalty_training_through_attention_and_hardswish():
    """GradReg differentiates ∇ₓℓ, so training needs the same substitutions as measuring."""
    from lcnn_audit.data import load_data
    from lcnn_audit.loading import AuditModel
    from lcnn_audit.penalties import PenaltyConfig
    from lcnn_audit.training import TrainConfig, train

    torch.manual_seed(0)
    model = AuditModel(_HardAttention())
    cfg = TrainConfig(epochs=1, batch_size=16, lr=0.01, curvature_n=0, eval_batch_size=16, seed=0,
                      penalties=PenaltyConfig(gradreg=1.0))
    res = train(model, load_data("demo", "train", n=16, seed=0), None, cfg, handle_sigint=False)
    assert res.summary["epochs"][0]["penalties"]["gradreg"] > 0


def test_clamp_hardswish_hvp_equals_torch_native_double_backward():
    """torch 2.14 differentiates hardswish's backward: the clamp form must agree with it."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Hardswish(), nn.Flatten(), nn.Linear(256, 5))
    model = model.double().eval()
    x, y = torch.rand(2, 3, 8, 8, dtype=torch.float64), torch.tensor([0, 1])
    v = torch.randn_like(x)
    native = BatchedHVP(make_objective(model, y), x)(v)
    with twice_differentiable():
        ours = BatchedHVP(make_objective(model, y), x)(v)
    assert (ours - native).norm() <= 1e-7 * native.norm()
