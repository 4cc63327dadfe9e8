"""The bound's per-operation rules: one handler per kind of graph node, in three tables.

A handler takes the node's :class:`NodeContext` and returns a :class:`LayerRule` (what the
node does to the composed bound), or ``None`` when the bound has no rule for it (the model is
then refused, naming the node). :data:`MODULE_RULES` is keyed by module type and looked up
along the module's class hierarchy (a subclass gets its nearest base's rule, as
``isinstance`` would); :data:`FUNCTION_RULES` by the function an ``fx`` node calls, and
:data:`METHOD_RULES` by the tensor method's name. The kinds come from :mod:`lcnn_audit.nn_kinds`.

Per layer fᵢ: the Lipschitz constant Lᵢ (``lipschitz``: exact operator norms of conv/linear
layers to a residual certificate, closed forms otherwise), the second-derivative bound κᵢ =
supₓ|fᵢ''| and the curvature Cᵢ = supₓ|fᵢ''/fᵢ'| (LCNN eq. 3: β for a centered softplus;
0 for affine maps), as :mod:`lcnn_audit.bound` composes them.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import fx, nn

from ..layers import CenteredSoftplus, LipschitzBatchNorm1d, LipschitzBatchNorm2d, bn_spectral_norm
from ..layers.spectral import conv_operator_norm, matrix_norm
from ..loading import Normalize
from ..nn_kinds import ADAPTIVE_MAX_POOLS, BOUND_UPSAMPLE_MODES, CONVS, FIXED_MAX_POOLS, ISOMETRIES, OTHER_LINEAR
from .norms import adaptive_overlap, certified, generic_norm, maxpool_overlap

_SQRT2 = math.sqrt(2.0)
_PHI_SQRT2 = math.exp(-1.0) / math.sqrt(2 * math.pi)
#: (slope bound a, second-derivative bound κ, curvature bound C, smooth) of fixed activations
GELU_CONSTANTS = (0.5 * (1 + math.erf(1.0)) + _SQRT2 * _PHI_SQRT2, math.sqrt(2 / math.pi), math.inf, True)
SILU_CONSTANTS = (1.0998393201288670 + 1e-15, 0.5, math.inf, True)  # a = silu'(2.39936), κ = silu''(0)
SIGMOID_CONSTANTS = (0.25, 1 / (6 * math.sqrt(3)), 1.0, True)  # κ = max σ(1−σ)(1−2σ), C = sup|1 − 2σ|
TANH_CONSTANTS = (1.0, 4 / (3 * math.sqrt(3)), 2.0, True)  # κ = max 2 tanh(1 − tanh²), C = sup|2 tanh|
RELU_CONSTANTS = (1.0, 0.0, 0.0, False)

_PIECEWISE = "piecewise linear: bounds hold almost everywhere"


# --------------------------------------------------------------------------- rule and context


@dataclass(frozen=True)
class LayerRule:
    """What one graph node does to the bound.

    ``kind``: ``"layer"`` (a map with Lipschitz constant ``lipschitz``, second-derivative bound
    ``second_derivative`` and curvature ``curvature``, composed by the chain rule), ``"pass"``
    (norm-preserving: reshapes, projections, dropout in eval), ``"const"`` (depends on the
    input's shape only) or ``"merge"`` (branches combined: ``combine`` ``"sum"`` for additions,
    ``"quad"`` for concatenations). ``certified``: a closed form, exact SVD or converged
    Lanczos certificate; ``smooth``: no kinks."""

    kind: str
    op: str = ""
    lipschitz: float = 1.0
    second_derivative: float = 0.0
    curvature: float = 0.0
    smooth: bool = True
    certified: bool = True
    note: str = ""
    combine: str = ""

    @classmethod
    def layer(cls, op: str, lipschitz: float, second_derivative: float = 0.0, curvature: float = 0.0, *,
              smooth: bool = True, certified: bool = True, note: str = "") -> LayerRule:
        """A map fᵢ with Lᵢ = ``lipschitz``, κᵢ = ``second_derivative`` and Cᵢ = ``curvature``."""
        return cls("layer", op, lipschitz, second_derivative, curvature, smooth, certified, note)

    @classmethod
    def merge(cls, combine: str, op: str) -> LayerRule:
        """Branches combined by a sum (``"sum"``) or a concatenation (``"quad"``)."""
        return cls("merge", op, combine=combine)


#: the rule of a norm-preserving node, and of one that depends on the input's shape only
PASS = LayerRule("pass")
CONST = LayerRule("const")


@dataclass(frozen=True)
class NodeContext:
    """What a handler may read about one graph node: the node, its display name ``op``, the
    module it calls (``call_module`` nodes), the recorded values of every node (one sample's
    forward pass), its data-dependent inputs ``ins`` and the operator-norm settings."""

    node: fx.Node
    op: str
    values: dict
    ins: list
    tol: float
    max_iter: int
    module: nn.Module | None = None

    @property
    def value(self):
        """The node's recorded output."""
        return self.values.get(self.node)

    @property
    def x_value(self):
        """The recorded value of the node's (first) data input."""
        return self.values.get(self.ins[0])

    @property
    def single(self) -> bool:
        """One data-dependent input (the other arguments are constants)."""
        return len(self.ins) == 1

    def arg(self, i: int, name: str, default):
        """Argument ``i`` (after the input) of a functional call, positional or keyword."""
        return self.node.args[i] if len(self.node.args) > i else self.node.kwargs.get(name, default)

    def concrete(self, a):
        """An argument with every fx node replaced by its recorded value."""
        return self.values.get(a, a) if isinstance(a, fx.Node) else a

    def shapes(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Per-sample input and output shapes."""
        return tuple(self.x_value.shape[1:]), tuple(self.value.shape[1:])


Handler = Callable[[NodeContext], "LayerRule | None"]


def _scalar(v) -> float | None:
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return float(v)
    if isinstance(v, torch.Tensor) and v.numel() == 1:
        return float(v)
    return None


def _norm_rule(op: str, res, note: str = "") -> LayerRule:
    return LayerRule.layer(op, certified(res), certified=res.converged, note=note)


def _pool_rule(op: str, k: int) -> LayerRule:
    return LayerRule.layer(op, math.sqrt(k), smooth=False,
                           note=f"√(max windows per input) = √{k}; {_PIECEWISE}")


# --------------------------------------------------------------------------- module rules


def _conv(ctx: NodeContext) -> LayerRule:
    """Exact operator norm of the convolution on its real input size (layers/spectral.py)."""
    shape = tuple(ctx.x_value.shape[1:])
    res = conv_operator_norm(ctx.module, shape, tol=ctx.tol, max_iter=ctx.max_iter, dtype=torch.float64)
    return _norm_rule(ctx.op, res, f"operator norm on input {shape}")


def _linear(ctx: NodeContext) -> LayerRule:
    """Spectral norm of the weight matrix."""
    return _norm_rule(ctx.op, matrix_norm(ctx.module.weight.double(), tol=ctx.tol, max_iter=ctx.max_iter))


def _lipschitz_batchnorm(ctx: NodeContext) -> LayerRule:
    """γ-Lipschitz batch norm (LCNN §3.4.2): min(γ, ‖BN‖₂)."""
    m = ctx.module
    return LayerRule.layer(ctx.op, float(m.lipschitz_constant().detach()),
                           note=f"min(γ, ‖BN‖₂) with γ = {float(m.gamma.detach()):.4g}")


def _batchnorm(ctx: NodeContext) -> LayerRule | None:
    """Eval-mode batch norm: ‖BN‖₂ = maxᵢ |wᵢ|/√(varᵢ + ε); no rule without running statistics."""
    m = ctx.module
    if not m.track_running_stats:
        return None
    w = m.weight.detach() if m.affine else None
    return LayerRule.layer(ctx.op, float(bn_spectral_norm(w, m.running_var, m.eps)), note="‖BN‖₂")


def _isometry(ctx: NodeContext) -> LayerRule:
    """Reshapes, identity and dropout (in eval mode): norm-preserving."""
    return PASS


def _normalize(ctx: NodeContext) -> LayerRule:
    """(x − mean)/std: Lipschitz constant max 1/std."""
    return LayerRule.layer(ctx.op, float((1.0 / ctx.module.std).max()))


def _centered_softplus(ctx: NodeContext) -> LayerRule:
    """s₀(x; β) (LCNN eq. 4): slope ≤ 1, |s₀''| ≤ β/4, curvature ≤ β (eq. 3)."""
    b = float(ctx.module.beta.detach())
    return LayerRule.layer(ctx.op, 1.0, b / 4.0, b)


def _softplus_module(ctx: NodeContext) -> LayerRule:
    """torch's Softplus(β): as s₀, but the identity above threshold/β (a tiny derivative jump)."""
    m = ctx.module
    b = float(m.beta)
    return LayerRule.layer(ctx.op, 1.0, b / 4.0, b, smooth=False,
                           note=(f"torch Softplus is the identity above threshold/β = {m.threshold / b:.3g} "
                                 "(a ~2e-9 derivative jump): bounds hold almost everywhere"))


def _fixed_activation(name: str, constants: tuple, note: str = "") -> Handler:
    """The handler of an activation with fixed (a, κ, C, smooth), module or function alike."""
    a, kappa, C, smooth = constants

    def handler(ctx: NodeContext) -> LayerRule | None:
        return LayerRule.layer(ctx.op, a, kappa, C, smooth=smooth, note=note) if ctx.single else None

    handler.__name__ = handler.__qualname__ = f"_{name}"
    handler.__doc__ = f"{name}: (a, κ, C) = {constants[:3]}"
    return handler


_relu = _fixed_activation("relu", RELU_CONSTANTS, _PIECEWISE)
_gelu = _fixed_activation("gelu", GELU_CONSTANTS)
_silu = _fixed_activation("silu", SILU_CONSTANTS)
_sigmoid = _fixed_activation("sigmoid", SIGMOID_CONSTANTS)
_tanh = _fixed_activation("tanh", TANH_CONSTANTS)


def _leaky_relu_module(ctx: NodeContext) -> LayerRule:
    """LeakyReLU: slope max(1, |negative_slope|), piecewise linear."""
    return LayerRule.layer(ctx.op, max(1.0, abs(ctx.module.negative_slope)), smooth=False, note=_PIECEWISE)


def _prelu(ctx: NodeContext) -> LayerRule:
    """PReLU: slope max(1, max |a|) over its learnt slopes, piecewise linear."""
    return LayerRule.layer(ctx.op, max(1.0, float(ctx.module.weight.detach().abs().max())), smooth=False,
                           note=_PIECEWISE)


def _gelu_module(ctx: NodeContext) -> LayerRule | None:
    """Exact GELU only (the tanh approximation has other constants)."""
    return _gelu(ctx) if ctx.module.approximate == "none" else None


def _elu_rule(op: str, alpha: float) -> LayerRule:
    smooth = alpha == 1.0
    return LayerRule.layer(op, max(1.0, alpha), alpha, 1.0, smooth=smooth,
                           note="" if smooth else "ELU with alpha != 1 has a derivative jump at 0: bounds hold "
                                                  "almost everywhere")


def _elu_module(ctx: NodeContext) -> LayerRule:
    """ELU(α): slope max(1, α), |f''| ≤ α, curvature ≤ 1; smooth only for α = 1."""
    return _elu_rule(ctx.op, ctx.module.alpha)


def _max_pool(ctx: NodeContext) -> LayerRule | None:
    """Max-pooling: √(most windows an input belongs to), piecewise linear."""
    if getattr(ctx.module, "return_indices", False):
        return None
    return _pool_rule(ctx.op, maxpool_overlap(ctx.module, *ctx.shapes()))


def _adaptive_max_pool(ctx: NodeContext) -> LayerRule | None:
    """Adaptive max-pooling: as :func:`_max_pool`, with the adaptive windows."""
    if ctx.module.return_indices:
        return None
    return _pool_rule(ctx.op, adaptive_overlap(*ctx.shapes()))


def _other_linear(ctx: NodeContext) -> LayerRule | None:
    """Average pooling, transposed convolution, padding, upsampling: a generic operator norm."""
    if isinstance(ctx.module, nn.Upsample) and ctx.module.mode not in BOUND_UPSAMPLE_MODES:
        return None
    return _norm_rule(ctx.op, generic_norm(ctx.module, ctx.x_value, ctx.tol, ctx.max_iter),
                      "operator norm (autograd adjoint)")


def _table(rows: tuple[tuple[tuple, Handler], ...]) -> dict:
    """``{key: handler}`` from ``(keys, handler)`` rows (tests/bound/test_rules.py checks that no
    key is listed twice)."""
    return {k: handler for keys, handler in rows for k in keys}


_MODULE_ROWS = (
    (CONVS, _conv),
    ((nn.Linear,), _linear),
    ((LipschitzBatchNorm1d, LipschitzBatchNorm2d), _lipschitz_batchnorm),
    ((nn.modules.batchnorm._BatchNorm,), _batchnorm),
    (ISOMETRIES, _isometry),
    ((CenteredSoftplus,), _centered_softplus),
    ((nn.Softplus,), _softplus_module),
    ((nn.ReLU, nn.ReLU6, nn.Hardtanh), _relu),
    ((nn.LeakyReLU,), _leaky_relu_module),
    ((nn.PReLU,), _prelu),
    ((nn.GELU,), _gelu_module),
    ((nn.SiLU,), _silu),
    ((nn.Sigmoid,), _sigmoid),
    ((nn.Tanh,), _tanh),
    ((nn.ELU,), _elu_module),
    (FIXED_MAX_POOLS, _max_pool),
    (ADAPTIVE_MAX_POOLS, _adaptive_max_pool),
    (OTHER_LINEAR, _other_linear),
    ((Normalize,), _normalize),
)
#: module type -> handler (looked up along the module's MRO, see :func:`module_handler`)
MODULE_RULES: dict[type, Handler] = _table(_MODULE_ROWS)


def module_handler(m: nn.Module) -> Handler | None:
    """The rule of the nearest class in ``type(m)``'s MRO that :data:`MODULE_RULES` lists."""
    for cls in type(m).__mro__:
        handler = MODULE_RULES.get(cls)
        if handler is not None:
            return handler
    return None


# --------------------------------------------------------------------------- function and method rules


def _const(ctx: NodeContext) -> LayerRule:
    """zeros_like, new_ones, size & co.: data-free."""
    return CONST


def _single_input(ctx: NodeContext) -> LayerRule | None:
    """Reshapes, splits and negation of one data input: norm-preserving."""
    return PASS if ctx.single else None


def _getitem(ctx: NodeContext) -> LayerRule | None:
    """Basic indexing (ints, slices, None, ...) of one data input: a projection."""
    idx = ctx.node.args[1]
    basic = all(isinstance(i, (int, slice, type(None), type(Ellipsis))) for i in
                (idx if isinstance(idx, tuple) else (idx,)))
    return PASS if ctx.single and ctx.node.args[0] is ctx.ins[0] and basic else None


def _add(ctx: NodeContext) -> LayerRule | None:
    """a ± b (alpha ±1): a sum of branches; with one data input, a shift."""
    alpha = _scalar(ctx.node.kwargs.get("alpha", 1))
    if alpha is None or abs(alpha) != 1:
        return None
    return LayerRule.merge("sum", ctx.op) if len(ctx.ins) > 1 else PASS


_DIVISIONS = {operator.truediv, operator.itruediv, torch.div, "div", "div_", "__truediv__"}


def _scale(ctx: NodeContext) -> LayerRule | None:
    """c·f(x) or f(x)/c for a constant c: Lipschitz constant |c| (or 1/|c|); c/f(x) has no rule."""
    if not ctx.single:
        return None
    node = ctx.node
    other = [a for a in (*node.args, *node.kwargs.values()) if a is not ctx.ins[0]]
    consts = [_scalar(ctx.concrete(a)) for a in other]
    if len(consts) != 1 or consts[0] is None:
        return None
    div = node.target in _DIVISIONS
    if div and node.args[0] is not ctx.ins[0]:
        return None  # c / f(x) is not linear
    return LayerRule.layer(ctx.op, abs(1.0 / consts[0] if div else consts[0]), note="scaling")


def _cat(ctx: NodeContext) -> LayerRule | None:
    """Concatenation (and stacking) of branches: combined in quadrature."""
    if ctx.node.kwargs.get("out") is not None:
        return None
    return LayerRule.merge("quad", ctx.op) if len(ctx.ins) > 1 else PASS


def _leaky_relu_fn(ctx: NodeContext) -> LayerRule | None:
    """F.leaky_relu: slope max(1, |negative_slope|)."""
    slope = ctx.arg(1, "negative_slope", 0.01)
    return LayerRule.layer(ctx.op, max(1.0, abs(float(slope))), smooth=False, note=_PIECEWISE) if ctx.single else None


def _gelu_fn(ctx: NodeContext) -> LayerRule | None:
    """F.gelu, exact form only."""
    return _gelu(ctx) if ctx.node.kwargs.get("approximate", "none") == "none" else None


def _elu_fn(ctx: NodeContext) -> LayerRule | None:
    """F.elu(x, alpha)."""
    return _elu_rule(ctx.op, float(ctx.arg(1, "alpha", 1.0))) if ctx.single else None


def _softplus_fn(ctx: NodeContext) -> LayerRule | None:
    """F.softplus(x, beta): as the Softplus module."""
    if not ctx.single:
        return None
    b = float(ctx.arg(1, "beta", 1.0))
    return LayerRule.layer(ctx.op, 1.0, b / 4.0, b, smooth=False,
                           note="torch softplus is the identity above threshold/β: bounds hold a.e.")


_MAX_POOL_FNS = {F.max_pool1d: nn.MaxPool1d, F.max_pool2d: nn.MaxPool2d, F.max_pool3d: nn.MaxPool3d}


def _max_pool_fn(ctx: NodeContext) -> LayerRule | None:
    """F.max_pool{1,2,3}d: as the module of the same arguments."""
    if not ctx.single:
        return None
    pool = _MAX_POOL_FNS[ctx.node.target](*ctx.node.args[1:], **ctx.node.kwargs)
    return _pool_rule(ctx.op, maxpool_overlap(pool, *ctx.shapes()))


def _dropout_fn(ctx: NodeContext) -> LayerRule | None:
    """F.dropout with training=False: the identity."""
    node = ctx.node
    return None if node.kwargs.get("training", node.args[2] if len(node.args) > 2 else True) else PASS


def _linear_fn(ctx: NodeContext) -> LayerRule | None:
    """Functional average pooling, mean, sum, padding, interpolation: a generic operator norm of
    the call with its other arguments fixed."""
    node = ctx.node
    if not ctx.single or node.args[0] is not ctx.ins[0]:
        return None
    target = node.target
    rest = [ctx.concrete(a) for a in node.args[1:]]
    kwargs = {k: ctx.concrete(v) for k, v in node.kwargs.items()}
    if node.op == "call_method":
        def fn(t):
            return getattr(t, target)(*rest, **kwargs)
    else:
        def fn(t):
            return target(t, *rest, **kwargs)
    if target is F.interpolate and kwargs.get("mode", rest[2] if len(rest) > 2 else "nearest") not in (
            BOUND_UPSAMPLE_MODES):
        return None
    return _norm_rule(ctx.op, generic_norm(fn, ctx.x_value, ctx.tol, ctx.max_iter), "operator norm (autograd adjoint)")


_FUNCTION_ROWS = (
    ((torch.zeros_like, torch.ones_like, torch.full_like, torch.empty_like, torch.randn_like, torch.rand_like), _const),
    ((torch.flatten, torch.reshape, torch.permute, torch.transpose, torch.squeeze, torch.unsqueeze, torch.t,
      torch.clone, torch.Tensor.contiguous,  # reshapes
      torch.split, torch.chunk, torch.unbind, torch.tensor_split,  # splits
      operator.neg, torch.neg), _single_input),
    ((operator.getitem,), _getitem),
    ((operator.add, operator.iadd, torch.add, operator.sub, operator.isub, torch.sub), _add),
    ((operator.mul, operator.imul, torch.mul, operator.truediv, operator.itruediv, torch.div), _scale),
    ((torch.cat, torch.concat, torch.concatenate, torch.stack), _cat),
    ((F.relu, torch.relu, F.relu_, F.relu6, F.hardtanh), _relu),  # F.relu_ is torch.relu_
    ((F.leaky_relu,), _leaky_relu_fn),
    ((F.gelu,), _gelu_fn),
    ((F.silu,), _silu),
    ((F.elu,), _elu_fn),
    ((F.softplus,), _softplus_fn),
    ((torch.sigmoid, F.sigmoid), _sigmoid),
    ((torch.tanh, F.tanh), _tanh),
    (tuple(_MAX_POOL_FNS), _max_pool_fn),
    ((F.dropout,), _dropout_fn),
    ((F.avg_pool1d, F.avg_pool2d, F.avg_pool3d, F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d,
      torch.mean, torch.sum, F.pad, F.interpolate), _linear_fn),
)
#: the function an fx ``call_function`` node calls -> handler
FUNCTION_RULES: dict[Callable, Handler] = _table(_FUNCTION_ROWS)

_METHOD_ROWS = (
    (("new_zeros", "new_ones", "new_full", "new_empty", "size", "dim", "numel"), _const),
    (("flatten", "view", "reshape", "contiguous", "permute", "transpose", "squeeze", "unsqueeze", "clone", "t",
      "view_as", "reshape_as", "float", "to", "type_as", "detach",  # reshapes and casts
      "split", "chunk", "unbind", "tensor_split", "neg", "__neg__"), _single_input),
    (("add", "add_", "sub", "sub_", "__add__", "__radd__", "__sub__", "__rsub__"), _add),
    (("mul", "mul_", "div", "div_", "__mul__", "__rmul__", "__truediv__"), _scale),
    (("relu", "relu_"), _relu),
    (("sigmoid",), _sigmoid),
    (("tanh",), _tanh),
    (("mean", "sum"), _linear_fn),
)
#: the tensor method an fx ``call_method`` node calls -> handler
METHOD_RULES: dict[str, Handler] = _table(_METHOD_ROWS)


def rule_for(node: fx.Node, op: str, values: dict, ins: list, *, tol: float, max_iter: int,
             module: nn.Module | None = None) -> LayerRule | None:
    """The rule of ``node`` (``module``: the module a ``call_module`` node calls), or None."""
    ctx = NodeContext(node, op, values, ins, tol, max_iter, module)
    if node.op == "call_module":
        handler = module_handler(module) if len(ins) == 1 else None
    elif node.op == "call_method":
        handler = METHOD_RULES.get(node.target)
    else:
        handler = FUNCTION_RULES.get(node.target)
    return handler(ctx) if handler is not None else None
