"""The bound's rule table (``lcnn_audit.bound.rules``), case by case: every handler in
``MODULE_RULES`` / ``FUNCTION_RULES`` / ``METHOD_RULES`` is exercised by a model below, each
model's bounds hold against dense fp64 Jacobians and Hessians at random inputs (and equal the
dense operator norm where the model is one linear map), and operations without a rule are
refused with the bound's "no rule" error naming them."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lcnn_audit.bound import curvature_bound, rules
from lcnn_audit.errors import ModelError
from lcnn_audit.layers import CenteredSoftplus, LipschitzBatchNorm2d
from lcnn_audit.loading import Normalize


class Lambda(nn.Module):
    """``forward`` is ``fn`` (traced through by torch.fx), after optional leaf modules."""

    def __init__(self, fn, *mods: nn.Module):
        super().__init__()
        self.fn = fn
        self.mods = nn.ModuleList(mods)

    def forward(self, x):
        return self.fn(self, x)


def seq(*mods: nn.Module) -> nn.Module:
    return nn.Sequential(*mods).double().eval()


def fn(f, *mods: nn.Module) -> nn.Module:
    return Lambda(f, *mods).double().eval()


def build(make) -> nn.Module:
    """A case's model, with its weights drawn from seed 0."""
    torch.manual_seed(0)
    return make()


def _bn(cls=nn.BatchNorm2d, c=2, **kw):
    torch.manual_seed(1)
    bn = cls(c, **kw)
    with torch.no_grad():
        bn.running_var.uniform_(0.2, 2.0)
        bn.running_mean.uniform_(-1, 1)
        bn.weight.uniform_(-2, 2)
    return bn


def _concat(_, x):
    a, b = torch.chunk(x, 2, dim=1)
    return torch.cat([b, a], 1) + torch.stack([a, b], 1).flatten(1) * 0.5


def _consts(_, x):
    n = x.size(0)
    return x + torch.zeros_like(x) + x.new_ones(x.shape) * n


def _reshapes(_, x):
    y = x.view(x.size(0), -1).reshape(x.shape[0], 2, -1).permute(0, 2, 1).transpose(1, 2)
    y = torch.flatten(y.unsqueeze(1).squeeze(1), 1).contiguous()
    return -y


def _scales(_, x):
    return torch.mul(x, 0.5) + x / 4 - 3 * x + torch.add(x, 1.0) - torch.sub(x, x, alpha=-1)


def _getitem(_, x):
    return x[:, 1:] + x[:, :-1]


#: name -> (handlers the case exercises, model factory, input shape, the model is one linear map)
CASES = {
    "conv": ({"_conv"}, lambda: seq(nn.Conv2d(2, 3, 3, stride=2, padding=1)), (2, 5, 5), True),
    "conv1d": ({"_conv"}, lambda: seq(nn.Conv1d(2, 2, 3, padding=1)), (2, 6), True),
    "linear": ({"_isometry", "_linear"}, lambda: seq(nn.Flatten(), nn.Linear(6, 4)), (6,), True),
    "batchnorm": ({"_batchnorm"}, lambda: seq(_bn()), (2, 3, 3), True),
    "lipschitz_batchnorm": ({"_lipschitz_batchnorm"},
                            lambda: seq(LipschitzBatchNorm2d.from_batchnorm(_bn(), gamma_init=1.3)), (2, 3, 3), True),
    "isometries": ({"_isometry"}, lambda: seq(nn.Flatten(), nn.Dropout(0.3), nn.Identity(), nn.Unflatten(1, (2, 3))),
                   (6,), True),
    "normalize": ({"_normalize"}, lambda: seq(Normalize([0.1, 0.2], [0.5, 0.25])), (2, 3, 3), True),
    "centered_softplus": ({"_linear", "_centered_softplus"},
                          lambda: seq(nn.Linear(4, 5), CenteredSoftplus(2.0), nn.Linear(5, 3)), (4,), False),
    "softplus": ({"_softplus_module"}, lambda: seq(nn.Linear(4, 5), nn.Softplus(2.0), nn.Linear(5, 3)), (4,), False),
    "relu_family": ({"_relu"}, lambda: seq(nn.Linear(4, 5), nn.ReLU(), nn.ReLU6(), nn.Hardtanh(), nn.Linear(5, 3)),
                    (4,), False),
    "leaky_relu": ({"_leaky_relu_module"}, lambda: seq(nn.Linear(4, 5), nn.LeakyReLU(-1.5), nn.Linear(5, 3)), (4,),
                   False),
    "prelu": ({"_prelu"}, lambda: seq(nn.Linear(4, 5), nn.PReLU(init=1.7), nn.Linear(5, 3)), (4,), False),
    "gelu": ({"_gelu_module"}, lambda: seq(nn.Linear(4, 5), nn.GELU(), nn.Linear(5, 3)), (4,), False),
    "silu_sigmoid_tanh": ({"_silu", "_sigmoid", "_tanh"},
                          lambda: seq(nn.Linear(4, 5), nn.SiLU(), nn.Sigmoid(), nn.Tanh(), nn.Linear(5, 3)), (4,),
                          False),
    "elu": ({"_elu_module"}, lambda: seq(nn.Linear(4, 5), nn.ELU(), nn.ELU(0.5), nn.ELU(2.0), nn.Linear(5, 3)),
            (4,), False),
    "max_pool": ({"_max_pool"}, lambda: seq(nn.MaxPool2d(3, 2, 1)), (1, 5, 5), False),
    "adaptive_max_pool": ({"_adaptive_max_pool"}, lambda: seq(nn.AdaptiveMaxPool2d((2, 3))), (1, 5, 4), False),
    "avg_pool": ({"_other_linear"}, lambda: seq(nn.AvgPool2d(2)), (2, 4, 4), True),
    "conv_transpose": ({"_other_linear"}, lambda: seq(nn.ConvTranspose2d(2, 2, 3, stride=2)), (2, 3, 3), True),
    "pad": ({"_other_linear"}, lambda: seq(nn.ZeroPad2d(1)), (1, 2, 2), True),
    "upsample": ({"_other_linear"}, lambda: seq(nn.Upsample(scale_factor=2, mode="bilinear")), (1, 3, 3), True),
    "constants": ({"_const", "_add"}, lambda: fn(_consts), (4,), True),
    "reshapes": ({"_single_input"}, lambda: fn(_reshapes), (2, 3), True),
    "split_and_concat": ({"_single_input", "_getitem", "_cat", "_scale", "_add"}, lambda: fn(_concat), (4,), False),
    "getitem": ({"_getitem", "_add"}, lambda: fn(_getitem), (5,), False),
    "scaling_and_sums": ({"_scale", "_add"}, lambda: fn(_scales), (4,), False),
    "fn_relu": ({"_relu"}, lambda: fn(lambda s, x: s.mods[1](F.relu6(torch.relu(F.hardtanh(s.mods[0](x).relu())))),
                                      nn.Linear(4, 5), nn.Linear(5, 3)), (4,), False),
    "fn_leaky_relu": ({"_leaky_relu_fn"}, lambda: fn(lambda s, x: s.mods[1](F.leaky_relu(s.mods[0](x), -1.5)),
                                                     nn.Linear(4, 5), nn.Linear(5, 3)), (4,), False),
    "fn_gelu": ({"_gelu_fn"}, lambda: fn(lambda s, x: s.mods[1](F.gelu(s.mods[0](x))), nn.Linear(4, 5),
                                         nn.Linear(5, 3)), (4,), False),
    "fn_silu_sigmoid_tanh": ({"_silu", "_sigmoid", "_tanh"},
                             lambda: fn(lambda s, x: s.mods[1](torch.tanh(F.silu(s.mods[0](x)).sigmoid())),
                                        nn.Linear(4, 5), nn.Linear(5, 3)), (4,), False),
    "fn_elu": ({"_elu_fn"}, lambda: fn(lambda s, x: s.mods[1](F.elu(F.elu(s.mods[0](x)), alpha=0.5)),
                                       nn.Linear(4, 5), nn.Linear(5, 3)), (4,), False),
    "fn_softplus": ({"_softplus_fn"}, lambda: fn(lambda s, x: s.mods[1](F.softplus(s.mods[0](x), beta=3.0)),
                                                 nn.Linear(4, 5), nn.Linear(5, 3)), (4,), False),
    "fn_max_pool": ({"_max_pool_fn"}, lambda: fn(lambda s, x: F.max_pool2d(x, 3, 2, 1)), (1, 5, 5), False),
    "fn_dropout": ({"_dropout_fn"}, lambda: fn(lambda s, x: F.dropout(x, 0.5, training=False)), (4,), True),
    "fn_avg_pool": ({"_linear_fn"}, lambda: fn(lambda s, x: F.avg_pool2d(x, 2)), (1, 4, 4), True),
    "fn_mean": ({"_linear_fn"}, lambda: fn(lambda s, x: x.mean(dim=1, keepdim=True)), (4,), True),
    "fn_pad_interpolate": ({"_linear_fn"}, lambda: fn(
        lambda s, x: F.interpolate(F.pad(x, (1, 1, 0, 1)), scale_factor=2, mode="nearest")), (1, 2, 2), False),
}


def _dense(net: nn.Module, shape, n_points: int = 4):
    """max over random inputs of ‖J(x)‖₂ and of ‖∇²(u·g)(x)‖₂ for a random unit u (fp64)."""
    gen = torch.Generator().manual_seed(1)
    lip, hess = 0.0, 0.0
    for _ in range(n_points):
        x = (torch.rand(shape, generator=gen, dtype=torch.float64) * 4 - 2)

        def g(t):
            return net(t.unsqueeze(0))[0].flatten()

        J = torch.autograd.functional.jacobian(g, x).reshape(-1, x.numel())
        u = torch.randn(J.shape[0], generator=gen, dtype=torch.float64)
        u = u / u.norm()
        H = torch.autograd.functional.hessian(lambda t, u=u: g(t) @ u, x).reshape(x.numel(), -1)
        lip = max(lip, float(torch.linalg.matrix_norm(J, 2)))
        hess = max(hess, float(torch.linalg.matrix_norm(H, 2)))
    return lip, hess


@pytest.mark.parametrize("name", list(CASES))
def test_case_bounds_hold_against_dense_derivatives(name):
    _, make, shape, linear = CASES[name]
    net = build(make)
    s = curvature_bound(net, shape).summary
    lip, hess = _dense(net, shape)
    assert lip <= s["lipschitz"] * (1 + 1e-9)
    assert hess <= s["hessian_logits"] * (1 + 1e-9) + 1e-12
    if linear:  # one linear map: the bound is its operator norm, and the Hessian is 0
        assert s["lipschitz"] == pytest.approx(lip, rel=1e-6)
        assert s["hessian_logits"] == 0 and s["theorem1"] == 0


def _handlers() -> dict[str, object]:
    tables = (rules.MODULE_RULES, rules.FUNCTION_RULES, rules.METHOD_RULES)
    return {h.__name__: h for table in tables for h in table.values()}


def test_every_handler_in_the_table_is_exercised(monkeypatch):
    handlers = _handlers()
    declared = set().union(*(c[0] for c in CASES.values()))
    assert declared == set(handlers), "a case per handler (and no case for a handler that is gone)"
    called: dict[str, set[str]] = {}
    current = [""]
    for table in (rules.MODULE_RULES, rules.FUNCTION_RULES, rules.METHOD_RULES):
        for key, h in list(table.items()):
            def spy(ctx, h=h):
                called.setdefault(current[0], set()).add(h.__name__)
                return h(ctx)

            monkeypatch.setitem(table, key, spy)
    for name, (expected, make, shape, _) in CASES.items():
        current[0] = name
        curvature_bound(build(make), shape)
        assert expected <= called.get(name, set()), f"{name}: {expected - called.get(name, set())} not called"
    assert set().union(*called.values()) == set(handlers)


def test_handlers_return_layer_rules_with_named_fields():
    rule = rules.LayerRule.layer("Linear", lipschitz=2.0, note="n")
    assert (rule.kind, rule.op, rule.lipschitz, rule.second_derivative, rule.curvature) == ("layer", "Linear", 2.0,
                                                                                            0.0, 0.0)
    assert rule.smooth and rule.certified and rule.note == "n"
    assert rules.LayerRule.merge("quad", "cat").combine == "quad"
    with pytest.raises(AttributeError):
        rule.lipschitz = 3.0  # frozen
    # the rule for one activation module, read through the table
    row = curvature_bound(seq(nn.Linear(2, 2), nn.Tanh()), (2,)).layers[1]
    assert (row.op, row.lipschitz, row.second_derivative, row.curvature) == ("Tanh", *rules.TANH_CONSTANTS[:3])


def _no_rule(f, shape=(4,), *mods):
    return (lambda: fn(f, *mods), shape)


UNSUPPORTED = {
    "Hardswish": (lambda: seq(nn.Linear(4, 4), nn.Hardswish()), (4,)),
    "Mish": (lambda: seq(nn.Mish()), (4,)),
    "GELU": (lambda: seq(nn.GELU(approximate="tanh")), (4,)),
    "BatchNorm2d": (lambda: seq(nn.BatchNorm2d(2, track_running_stats=False)), (2, 3, 3)),
    "MaxPool2d": (lambda: fn(lambda s, x: s.mods[0](x)[0], nn.MaxPool2d(2, return_indices=True)), (1, 4, 4)),
    "Upsample": (lambda: seq(nn.Upsample(scale_factor=2, mode="nearest-exact")), (1, 2, 2)),
    "exp": _no_rule(lambda s, x: torch.exp(x)),
    ".exp()": _no_rule(lambda s, x: x.exp()),
    "mul": _no_rule(lambda s, x: x * x),
    "add": _no_rule(lambda s, x: torch.add(x, x, alpha=2)),
    "truediv": _no_rule(lambda s, x: 3 / x),
    "gelu": _no_rule(lambda s, x: F.gelu(x, approximate="tanh")),
    "interpolate": _no_rule(lambda s, x: F.interpolate(x, scale_factor=2, mode="area"), (1, 2, 2)),
}


@pytest.mark.parametrize("op", list(UNSUPPORTED))
def test_operations_without_a_rule_are_refused(op):
    make, shape = UNSUPPORTED[op]
    with pytest.raises(ModelError, match=r"the bound has no rule for 1 operation\(s\): ") as err:
        curvature_bound(build(make), shape)
    assert f"({op})" in str(err.value) and "supported: conv, linear" in str(err.value)


def test_rule_lookup_follows_the_class_hierarchy():
    """A subclass gets its nearest base's rule (as ``isinstance`` did): a γ-Lipschitz batch norm
    is a BatchNorm2d, yet gets min(γ, ‖BN‖₂), and a parametrised conv the conv rule."""
    gbn = LipschitzBatchNorm2d.from_batchnorm(_bn(), gamma_init=1.1).double().eval()
    assert rules.module_handler(gbn).__name__ == "_lipschitz_batchnorm"
    assert rules.module_handler(nn.BatchNorm2d(2)).__name__ == "_batchnorm"

    class MyReLU(nn.ReLU):
        pass

    assert rules.module_handler(MyReLU()).__name__ == "_relu"
    assert rules.module_handler(nn.Hardswish()) is None
    row = curvature_bound(seq(gbn), (2, 3, 3)).layers[0]
    assert row.lipschitz == pytest.approx(min(1.1, float(gbn.bn_norm().detach())))
    assert math.isfinite(row.lipschitz)


def test_rule_tables_list_each_key_once():
    for rows in (rules._MODULE_ROWS, rules._FUNCTION_ROWS, rules._METHOD_ROWS):
        keys = [k for ks, _ in rows for k in ks]
        assert len(keys) == len(set(keys)), [k for k in keys if keys.count(k) > 1]


# --------------------------------------------------------------------------- options


def test_bound_options_list_every_problem():
    from lcnn_audit.bound import BOUND_MAX_ITER, BOUND_TOL, DEFAULT_MAX_ITER, DEFAULT_TOL, BoundOptions
    from lcnn_audit.gates.policy import BoundOptions as PolicyBoundOptions
    from lcnn_audit.layers.spectral import DEFAULT_TOL as SPECTRAL_TOL
    from lcnn_audit.options import OptionsError, flag_label

    assert PolicyBoundOptions is BoundOptions
    assert (DEFAULT_TOL, DEFAULT_MAX_ITER) == (BOUND_TOL, BOUND_MAX_ITER) == (1e-7, 1000)
    assert SPECTRAL_TOL == 1e-6  # the conversion's tolerance, deliberately looser (bound/options.py)
    opts = BoundOptions()
    assert (opts.tol, opts.max_iter, opts.lambda_beta, opts.lambda_gamma) == (1e-7, 1000, 1e-4, 1e-5)
    assert opts.problems() == []
    with pytest.raises(AttributeError):
        opts.tol = 0.1  # frozen
    bad = BoundOptions(input_shape=(0, 3), lambda_beta=float("nan"), tol=2.0, max_iter=0)
    assert [p.field for p in bad.problems()] == ["lambda_beta", "input_shape", "tol", "max_iter"]
    with pytest.raises(OptionsError) as err:
        bad.validate()
    assert str(err.value) == ("lambda_beta must be a finite number, got nan; input_shape must be positive sizes "
                              "[C, H, W], got [0, 3]; tol must lie in (0, 1), got 2.0; max_iter must be >= 1, got 0")
    assert "--max-iter must be >= 1" in err.value.render(flag_label)
    # a NaN tolerance is one problem, not two
    assert [p.render() for p in BoundOptions(tol=float("nan")).problems()] == ["tol must be a finite number, got nan"]


def test_curvature_bound_validates_its_settings_as_bound_options():
    from lcnn_audit.errors import UsageError

    net = seq(nn.Linear(2, 2))
    with pytest.raises(UsageError, match=r"^tol must lie in \(0, 1\), got 2$"):
        curvature_bound(net, (2,), tol=2)
    with pytest.raises(UsageError, match="lambda_gamma must be a finite number"):
        curvature_bound(net, (2,), lambda_gamma=float("inf"))
