"""Contract over operator families: the default curvature engine against exact fp64 Hessians.

One hand-built model per operator family at 3×8×8 (random weights, eval mode). The oracle is
``torch.func.hessian`` (forward-over-reverse, independent of the engine's reverse-over-reverse
HVPs and of Lanczos) of the audited objective f(x) = cross-entropy(model(x), y) in float64
(``objective.per_sample_objective``), for each sample separately. Every sample the engine marks
``converged`` must match max |eig| within the tolerance, and the gradient norm within 1e-9.
For hardswish/hardsigmoid the oracle runs an independent ``torch.where`` form of torch's
definition (torch's hardsigmoid kernel has no second derivative for the oracle either).
"""

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torchvision.ops import SqueezeExcitation

from lcnn_audit.geometry import CurvatureOptions, compute_geometry
from lcnn_audit.geometry.state import measurement_state

C = 5


def head(d: int) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(d, C))


def act_net(act: nn.Module) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), act, head(4 * 64))


class Attention(nn.Module):
    """Patchify (4×4) → 4 tokens of width 8 → single-head SDPA → mean → linear."""

    def __init__(self):
        super().__init__()
        self.patch = nn.Conv2d(3, 8, 4, stride=4)
        self.qkv = nn.Linear(8, 24)
        self.out = nn.Linear(8, C)

    def forward(self, x):
        t = self.patch(x).flatten(2).transpose(1, 2)  # (B, 4, 8)
        q, k, v = self.qkv(t).chunk(3, dim=-1)
        return self.out(F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None])[:, 0].mean(1))


class MHA(nn.Module):
    """nn.MultiheadAttention (2 heads, need_weights=False: the SDPA path) on 4 patch tokens."""

    def __init__(self):
        super().__init__()
        self.patch = nn.Conv2d(3, 8, 4, stride=4)
        self.ln = nn.LayerNorm(8)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.out = nn.Linear(8, C)

    def forward(self, x):
        t = self.ln(self.patch(x).flatten(2).transpose(1, 2))
        a, _ = self.attn(t, t, t, need_weights=False)
        return self.out((t + a).mean(1))


class ResidualBN(nn.Module):
    """conv → eval-mode BN (non-trivial running statistics) + skip → ReLU: piecewise linear."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)
        with torch.no_grad():
            self.bn.running_mean.uniform_(-0.5, 0.5)
            self.bn.running_var.uniform_(0.5, 2.0)
            self.bn.weight.uniform_(0.5, 1.5)
            self.bn.bias.uniform_(-0.2, 0.2)
        self.head = head(3 * 64)

    def forward(self, x):
        return self.head(F.relu(x + self.bn(self.conv(x))))


class InForwardNorm(nn.Module):
    """(x − mean)/std inside forward, then conv → tanh → linear."""

    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.tensor([0.4, 0.5, 0.6]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.2, 0.25, 0.3]).view(1, 3, 1, 1))
        self.body = act_net(nn.Tanh())

    def forward(self, x):
        return self.body((x - self.mean) / self.std)


def _hardsigmoid_ref(x):
    return torch.where(x <= -3, torch.zeros_like(x), torch.where(x >= 3, torch.ones_like(x), x / 6 + 0.5))


class _Ref(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


def _scale_net(act):
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Tanh(), SqueezeExcitation(4, 2, scale_activation=act),
                         head(4 * 64))


MODELS = {
    "gelu": lambda: act_net(nn.GELU()),
    "silu": lambda: act_net(nn.SiLU()),
    "tanh": lambda: act_net(nn.Tanh()),
    "elu": lambda: act_net(nn.ELU()),
    "layernorm": lambda: nn.Sequential(nn.Flatten(), nn.Linear(192, 16), nn.LayerNorm(16), nn.Linear(16, C)),
    "groupnorm": lambda: nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.GroupNorm(2, 4), nn.Tanh(), head(256)),
    "depthwise": lambda: nn.Sequential(nn.Conv2d(3, 6, 3, padding=1, groups=3), nn.SiLU(), nn.Conv2d(6, 4, 1),
                                       head(256)),
    "squeeze_excitation": lambda: _scale_net(nn.Sigmoid),
    "sdpa_attention": Attention,
    "multihead_attention": MHA,
    "avg_pool": lambda: nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Softplus(2.0), nn.AvgPool2d(2), head(64)),
    "residual_eval_bn": ResidualBN,
    "hardswish": lambda: act_net(nn.Hardswish()),
    "hardsigmoid": lambda: act_net(nn.Hardsigmoid()),  # piecewise linear: the exact Gauss-Newton path
    "hardsigmoid_se": lambda: _scale_net(nn.Hardsigmoid),
    "in_forward_normalisation": InForwardNorm,
}
# the oracle's stand-ins for ops torch.func cannot differentiate twice
REFERENCE = {nn.Hardswish: lambda: _Ref(lambda x: x * _hardsigmoid_ref(x)),
             nn.Hardsigmoid: lambda: _Ref(_hardsigmoid_ref)}


def _reference(model: nn.Module) -> nn.Module:
    import copy

    ref = copy.deepcopy(model).double()
    for name, m in list(ref.named_modules()):
        if type(m) in REFERENCE:
            parent, _, attr = name.rpartition(".")
            setattr(ref.get_submodule(parent) if parent else ref, attr, REFERENCE[type(m)]())
    return ref


def exact(model, x, y):
    """(‖∇f‖, max |eig ∇²f|) per sample from torch.func in float64."""
    ref = _reference(model)
    gn, hn = [], []
    for i in range(len(x)):
        def f(xi, i=i):
            return F.cross_entropy(ref(xi[None]), y[i : i + 1])

        xi = x[i].double()
        with sdpa_kernel([SDPBackend.MATH]):
            g = torch.func.grad(f)(xi)
            H = torch.func.hessian(f)(xi).reshape(xi.numel(), -1)
        gn.append(g.norm())
        hn.append(torch.linalg.eigvalsh(0.5 * (H + H.T)).abs().max())
    return torch.stack(gn), torch.stack(hn)


@pytest.mark.parametrize("name", list(MODELS))
def test_engine_matches_exact_hessian(name):
    torch.manual_seed(1)
    model = MODELS[name]().eval()
    x, y = torch.rand(3, 3, 8, 8), torch.tensor([0, 2, 4])
    with measurement_state(model, dtype="float64") as prep:
        fields, method = compute_geometry(prep.model, x.double(), y, torch.arange(3), CurvatureOptions())
    g_ref, h_ref = exact(model, x, y)
    conv = fields["converged"]
    assert conv.all(), f"{name}: samples not converged {fields['iterations'].tolist()}"
    assert torch.allclose(fields["grad_norm"], g_ref, rtol=1e-9, atol=0), name
    err = (fields["hessian_norm"] - h_ref).abs() / h_ref
    tol = 1e-3  # the default Lanczos residual tolerance; the Gauss-Newton path is exact
    assert (h_ref > 0).all() and (err[conv] <= tol).all(), f"{name} ({method}): rel. errors {err.tolist()}"
    if name in ("residual_eval_bn", "hardsigmoid"):
        assert method == "gauss-newton" and (err <= 1e-9).all()
    else:
        assert method == "lanczos"
