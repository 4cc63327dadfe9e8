"""Data-free curvature bounds (LCNN Theorem 1) and the LCNN penalty (eq. 5).

For a model built from layers fᵢ with Lipschitz constants Lᵢ = supₓ‖∇fᵢ‖₂, curvatures
Cᵢ = supₓ C_{fᵢ} (β for centered softplus, eq. 3; 0 for affine maps) and second-derivative
bounds κᵢ = supₓ|fᵢ''| (β/4 for centered softplus), :func:`curvature_bound` reports, for
the model as built and its real input size:

* per layer: Cᵢ, κᵢ, Lᵢ (the exact operator spectral norm of conv/linear layers, by Lanczos
  to a residual certificate; closed forms for batch norm and activations) and the running
  products;
* ``theorem1`` = Σᵢ Cᵢ·Πⱼ≤ᵢ Lⱼ, the right-hand side of Theorem 1 (Srinivas et al., NeurIPS
  2022, eq. 2, in the width-free form of the arXiv version; ``theorem1_width_weighted``
  multiplies each term by the layer width nᵢ as the NeurIPS statement and the arXiv
  appendix A do);
* ``penalty`` R_f = λβ·Σβᵢ + λγ·Σ log γⱼ (eq. 5; λβ = 1e-4, λγ = 1e-5 as in the arXiv
  appendix);
* rigorous data-free bounds that hold at every input: the Lipschitz constant L of the
  logits, ``hessian_logits`` H ≥ supₓ‖∇²ₓ g(x)‖ (g the logits, as a vector-valued bilinear
  map, so also for each single logit) and ``hessian_loss`` = ½L² + √2·H ≥ supₓ‖∇²ₓ ℓ(x)‖
  for the cross-entropy ℓ (its Hessian is JᵀAJ + Σₖ(pₖ − yₖ)∇²gₖ with ‖A‖ ≤ ½, ‖p − y‖ ≤ √2).

How the bounds compose. Every node of the torch.fx graph carries (L, H, T): after an affine
map A, (‖A‖L, ‖A‖H, T); after an elementwise activation with slope ≤ a, |s''| ≤ κ and
curvature ≤ C, (aL, aH + κL², T + C·aL) — the chain rule, with ‖s''⊙Ju⊙Jv‖ ≤ κ‖Ju‖‖Jv‖;
after an addition (residual connection), (L₁ + L₂, H₁ + H₂, T₁ + T₂); after a
concatenation, the quadrature sums √(L₁² + L₂²), √(H₁² + H₂²) and T₁ + T₂. For a chain
this is exactly H = Σᵢ κᵢ(Πⱼ<ᵢ Lⱼ)²Πⱼ>ᵢ Lⱼ and the Theorem 1 sum; on a graph, L and H
upper-bound every path (triangle inequality). ReLU and max-pooling have no second
derivative at their kinks: the Hessian bounds then hold almost everywhere (wherever the
Hessian exists), which is also what an autograd measurement sees.

What is and is not a bound. L, ``hessian_logits`` and ``hessian_loss`` are upper bounds on
the measured gradient and Hessian norms (``lcnn-audit curvature``'s ``grad_norm`` and
``hessian_norm``), up to the operator-norm certificates. The Theorem 1 sum is *not* an upper
bound on the normalised curvature C_f = ‖∇²f‖/(‖∇f‖ + ε) in general: no data-free bound can
be, since ∇f can vanish where ∇²f does not (f(x) = s₀(x) + s₀(−x) has ∇f(0) = 0,
∇²f(0) = β/2), and for the loss the softmax adds curvature that Theorem 1 does not count
(a linear model has a Theorem 1 sum of 0 and positive loss curvature). It is reported as the
paper's per-layer curvature budget, the quantity the LCNN penalty controls; C_f(x) ≤
``hessian_*``/(‖∇f(x)‖ + ε) is the valid pointwise statement.
"""

from __future__ import annotations

import math
import operator
import time
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import fx, nn

from .errors import ModelError, UsageError
from .layers import CenteredSoftplus, LipschitzBatchNorm1d, LipschitzBatchNorm2d, bn_spectral_norm
from .layers.spectral import CONVS, conv_operator_norm, matrix_norm, top_singular
from .nn_kinds import ADAPTIVE_MAX_POOLS, BOUND_UPSAMPLE_MODES, FIXED_MAX_POOLS, ISOMETRIES, OTHER_LINEAR

LAMBDA_BETA = 1e-4
LAMBDA_GAMMA = 1e-5
DEFAULT_TOL = 1e-7
DEFAULT_MAX_ITER = 1000

_SQRT2 = math.sqrt(2.0)
_PHI_SQRT2 = math.exp(-1.0) / math.sqrt(2 * math.pi)
#: (slope bound a, second-derivative bound κ, curvature bound C, smooth) of fixed activations
GELU_CONSTANTS = (0.5 * (1 + math.erf(1.0)) + _SQRT2 * _PHI_SQRT2, math.sqrt(2 / math.pi), math.inf, True)
SILU_CONSTANTS = (1.0998393201288670 + 1e-15, 0.5, math.inf, True)  # a = silu'(2.39936), κ = silu''(0)
SIGMOID_CONSTANTS = (0.25, 1 / (6 * math.sqrt(3)), 1.0, True)  # κ = max σ(1−σ)(1−2σ), C = sup|1 − 2σ|
TANH_CONSTANTS = (1.0, 4 / (3 * math.sqrt(3)), 2.0, True)  # κ = max 2 tanh(1 − tanh²), C = sup|2 tanh|
RELU_CONSTANTS = (1.0, 0.0, 0.0, False)


# --------------------------------------------------------------------------- results


@dataclass
class LayerBound:
    """One layer (graph node) of the bound; see the module docstring for the columns."""

    name: str
    op: str
    curvature: float  # Cᵢ = sup |fᵢ''/fᵢ'| (0 for affine maps)
    second_derivative: float  # κᵢ = sup |fᵢ''|
    lipschitz: float  # Lᵢ
    width: int  # nᵢ, output size per sample
    running_lipschitz: float  # Lipschitz bound of x ↦ this layer's output (Πⱼ≤ᵢ Lⱼ on a chain)
    running_hessian: float  # bound on ‖∇²ₓ (this layer's output)‖
    theorem1: float  # Σ over layers up to here of Cⱼ·Πₖ≤ⱼ Lₖ
    smooth: bool = True
    certified: bool = True  # closed form, exact SVD, or a converged Lanczos certificate
    note: str = ""


@dataclass
class BoundReport:
    layers: list[LayerBound]
    summary: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"summary": self.summary, "layers": [asdict(layer) for layer in self.layers]}


@dataclass
class _State:
    L: float
    H: float
    T: float
    Tw: float

    @staticmethod
    def const() -> _State:
        return _State(0.0, 0.0, 0.0, 0.0)


# --------------------------------------------------------------------------- tracing


class _Tracer(fx.Tracer):
    """Keeps every layer the bound knows as one node (including parametrised modules)."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        from .loading import Normalize  # noqa: PLC0415

        known = (*CONVS, nn.Linear, nn.modules.batchnorm._BatchNorm, CenteredSoftplus, Normalize)
        return isinstance(m, known) or super().is_leaf_module(m, qualname)


class _Recorder(fx.Interpreter):
    def __init__(self, gm):
        super().__init__(gm)
        self.values: dict[fx.Node, object] = {}

    def run_node(self, n):
        out = super().run_node(n)
        self.values[n] = out
        return out


def _model_parts(model: nn.Module):
    from .loading import AuditModel, Normalize  # noqa: PLC0415

    if isinstance(model, AuditModel):
        norm = model.normalize if isinstance(model.normalize, Normalize) else None
        return model.net, norm, model.output_key, getattr(model, "recipe", {}) or {}
    return model, None, None, {}


def _input_shape(model, recipe, input_shape):
    if input_shape is not None:
        shape = tuple(int(s) for s in input_shape)
        if not shape or any(s <= 0 for s in shape):
            raise UsageError(f"input shape must be positive sizes (C,H,W), got {input_shape}")
        return shape
    conv = recipe.get("convert") or {}
    if conv.get("input_shape"):
        return tuple(int(s) for s in conv["input_shape"])
    raise UsageError("the bound needs the model's input size (conv operator norms depend on it): pass --input-shape "
                     "C,H,W or --data; converted checkpoints record it")


# --------------------------------------------------------------------------- per-op rules


_RESHAPES_F = {torch.flatten, torch.reshape, torch.permute, torch.transpose, torch.squeeze, torch.unsqueeze,
               torch.t, torch.clone, torch.Tensor.contiguous}
_RESHAPES_M = {"flatten", "view", "reshape", "contiguous", "permute", "transpose", "squeeze", "unsqueeze", "clone",
               "t", "view_as", "reshape_as", "float", "to", "type_as", "detach"}
_CONST_F = {torch.zeros_like, torch.ones_like, torch.full_like, torch.empty_like, torch.randn_like, torch.rand_like}
_CONST_M = {"new_zeros", "new_ones", "new_full", "new_empty", "size", "dim", "numel"}
_SPLITS_F = {torch.split, torch.chunk, torch.unbind, torch.tensor_split}
_SPLITS_M = {"split", "chunk", "unbind", "tensor_split"}
_ADD_F = {operator.add, operator.iadd, torch.add, operator.sub, operator.isub, torch.sub}
_ADD_M = {"add", "add_", "sub", "sub_", "__add__", "__radd__", "__sub__", "__rsub__"}
_MUL_F = {operator.mul, operator.imul, torch.mul, operator.truediv, operator.itruediv, torch.div}
_MUL_M = {"mul", "mul_", "div", "div_", "__mul__", "__rmul__", "__truediv__"}
_NEG = {operator.neg, torch.neg, "neg", "__neg__"}
_CAT = {torch.cat, torch.concat, torch.concatenate, torch.stack}
_LINEAR_F = {F.avg_pool1d, F.avg_pool2d, F.avg_pool3d, F.adaptive_avg_pool1d, F.adaptive_avg_pool2d,
             F.adaptive_avg_pool3d, torch.mean, torch.sum, F.pad, F.interpolate}
_LINEAR_M = {"mean", "sum"}
_LINEAR_MODULES = OTHER_LINEAR
_ISOMETRY_MODULES = ISOMETRIES
_MAXPOOL_MODULES = FIXED_MAX_POOLS
_ACT_F = {F.relu: "relu", torch.relu: "relu", F.relu_: "relu", torch.relu_: "relu", F.relu6: "relu6",
          F.leaky_relu: "leaky_relu", F.hardtanh: "relu6", F.gelu: "gelu", F.silu: "silu", F.elu: "elu",
          F.softplus: "softplus", torch.sigmoid: "sigmoid", F.sigmoid: "sigmoid", torch.tanh: "tanh",
          F.tanh: "tanh"}
_ACT_M = {"relu": "relu", "relu_": "relu", "sigmoid": "sigmoid", "tanh": "tanh"}


def _module_activation(m: nn.Module):
    """(a, κ, C, smooth, note) for an activation module, or None."""
    if isinstance(m, CenteredSoftplus):
        b = float(m.beta.detach())
        return 1.0, b / 4.0, b, True, ""
    if isinstance(m, nn.Softplus):
        b = float(m.beta)
        return 1.0, b / 4.0, b, False, (f"torch Softplus is the identity above threshold/β = {m.threshold / b:.3g} "
                                         "(a ~2e-9 derivative jump): bounds hold almost everywhere")
    if isinstance(m, (nn.ReLU, nn.ReLU6, nn.Hardtanh)):
        return (*RELU_CONSTANTS, "piecewise linear: bounds hold almost everywhere")
    if isinstance(m, nn.LeakyReLU):
        return max(1.0, abs(m.negative_slope)), 0.0, 0.0, False, "piecewise linear: bounds hold almost everywhere"
    if isinstance(m, nn.PReLU):
        return (max(1.0, float(m.weight.detach().abs().max())), 0.0, 0.0, False,
                "piecewise linear: bounds hold almost everywhere")
    if isinstance(m, nn.GELU) and m.approximate == "none":
        return (*GELU_CONSTANTS, "")
    if isinstance(m, nn.SiLU):
        return (*SILU_CONSTANTS, "")
    if isinstance(m, nn.Sigmoid):
        return (*SIGMOID_CONSTANTS, "")
    if isinstance(m, nn.Tanh):
        return (*TANH_CONSTANTS, "")
    if isinstance(m, nn.ELU):
        return _elu(m.alpha)
    return None


def _elu(alpha: float):
    smooth = alpha == 1.0
    return (max(1.0, alpha), alpha, 1.0, smooth,
            "" if smooth else "ELU with alpha != 1 has a derivative jump at 0: bounds hold almost everywhere")


def _functional_activation(kind: str, node: fx.Node):
    kw = dict(node.kwargs)
    if kind == "relu" or kind == "relu6":
        return (*RELU_CONSTANTS, "piecewise linear: bounds hold almost everywhere")
    if kind == "leaky_relu":
        slope = node.args[1] if len(node.args) > 1 else kw.get("negative_slope", 0.01)
        return max(1.0, abs(float(slope))), 0.0, 0.0, False, "piecewise linear: bounds hold almost everywhere"
    if kind == "gelu":
        if kw.get("approximate", "none") != "none":
            return None
        return (*GELU_CONSTANTS, "")
    if kind == "silu":
        return (*SILU_CONSTANTS, "")
    if kind == "sigmoid":
        return (*SIGMOID_CONSTANTS, "")
    if kind == "tanh":
        return (*TANH_CONSTANTS, "")
    if kind == "elu":
        return _elu(float(node.args[1] if len(node.args) > 1 else kw.get("alpha", 1.0)))
    if kind == "softplus":
        b = float(node.args[1] if len(node.args) > 1 else kw.get("beta", 1.0))
        return 1.0, b / 4.0, b, False, "torch softplus is the identity above threshold/β: bounds hold a.e."
    return None


def _maxpool_overlap(pool: nn.Module, in_shape, out_shape) -> int:
    """Largest number of pooling windows any input element belongs to (exact, per dim)."""
    nd = len(in_shape) - 1
    k = pool.kernel_size if isinstance(pool.kernel_size, tuple) else (pool.kernel_size,) * nd
    s = pool.stride if isinstance(pool.stride, tuple) else (pool.stride,) * nd
    p = pool.padding if isinstance(pool.padding, tuple) else (pool.padding,) * nd
    d = pool.dilation if isinstance(pool.dilation, tuple) else (pool.dilation,) * nd
    m = 1
    for i in range(nd):
        n, n_out = in_shape[1 + i], out_shape[1 + i]
        counts = [0] * n
        for o in range(n_out):
            for t in range(k[i]):
                j = o * s[i] - p[i] + t * d[i]
                if 0 <= j < n:
                    counts[j] += 1
        m *= max(counts) if counts else 1
    return m


def _adaptive_overlap(in_shape, out_shape) -> int:
    m = 1
    for n, n_out in zip(in_shape[1:], out_shape[1:], strict=True):
        counts = [0] * n
        for o in range(n_out):
            for j in range((o * n) // n_out, -((-(o + 1) * n) // n_out)):
                counts[j] += 1
        m *= max(counts)
    return m


def _generic_norm(fn, x_value: torch.Tensor, tol: float, max_iter: int):
    """Operator norm of the affine map ``fn`` at the shape of ``x_value`` (one sample),
    A v = fn(v) − fn(0) and Aᵀ by autograd."""
    x0 = torch.zeros((1, *x_value.shape[1:]), dtype=x_value.dtype, device=x_value.device)
    with torch.no_grad():
        f0 = fn(x0)

    def op(v):
        with torch.no_grad():
            return fn(v) - f0

    def adj(u):
        with torch.enable_grad():
            x = x0.clone().requires_grad_(True)
            (g,) = torch.autograd.grad(fn(x), x, grad_outputs=u)
        return g

    gen = torch.Generator().manual_seed(0)
    v0 = torch.randn(x0.shape, generator=gen, dtype=torch.float64).to(x0.device, x0.dtype)
    return top_singular(op, adj, v0, tol=tol, max_iter=max_iter)


# --------------------------------------------------------------------------- the bound


def curvature_bound(model: nn.Module, input_shape=None, *, lambda_beta: float = LAMBDA_BETA,
                    lambda_gamma: float = LAMBDA_GAMMA, tol: float = DEFAULT_TOL,
                    max_iter: int = DEFAULT_MAX_ITER, progress=None) -> BoundReport:
    """Theorem 1 data-free bound, rigorous Lipschitz/Hessian bounds and the LCNN penalty of
    ``model`` (eval mode) on inputs of ``input_shape`` (C, H, W); see the module docstring.

    An :class:`~lcnn_audit.loading.AuditModel` includes its input normalisation as the first
    layer; a converted checkpoint's recipe supplies the input shape. ``progress(done, total)``
    counts the graph nodes bounded.
    """
    if not (0 < tol < 1) or max_iter < 1:
        raise UsageError("tol must lie in (0, 1) and max_iter be >= 1")
    net, normalize, output_key, recipe = _model_parts(model)
    shape = _input_shape(model, recipe, input_shape)
    bad = [n for n, p in net.named_parameters() if p.is_floating_point() and not bool(torch.isfinite(p).all())]
    bad += [n for n, m in net.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
            and m.running_var is not None and not bool(torch.isfinite(m.running_var).all())]
    if bad:
        raise ModelError(f"the model's weights hold NaN or infinite values ({', '.join(bad[:4])}"
                         f"{', ...' if len(bad) > 4 else ''}), so no bound can be computed; check the checkpoint")
    ref = next((t for t in list(net.parameters()) + list(net.buffers()) if t.is_floating_point()), None)
    device = ref.device if ref is not None else torch.device("cpu")
    dtype = ref.dtype if ref is not None else torch.float32
    t0 = time.perf_counter()
    training = {m: m.training for m in model.modules()}
    model.eval()  # before tracing: code that branches on self.training is traced in eval mode
    try:
        try:
            graph = _Tracer().trace(net)
        except Exception as err:  # noqa: BLE001 - torch.fx raises many types for untraceable code
            msg = str(err).splitlines()[0][:160] if str(err) else type(err).__name__
            raise ModelError(f"the bound composes layer bounds along the model's graph, and torch.fx cannot trace "
                             f"this model ({type(err).__name__}: {msg})") from None
        gm = fx.GraphModule(net, graph)
        x = torch.rand((1, *shape), generator=torch.Generator().manual_seed(0)).to(device, dtype)
        with torch.no_grad():
            if normalize is not None:
                x = normalize(x)
            rec = _Recorder(gm)
            try:
                rec.run(x)
            except (RuntimeError, ValueError, TypeError, IndexError) as err:
                msg = str(err).splitlines()[0][:160] if str(err) else type(err).__name__
                raise ModelError(f"the model failed on an input of shape {(1, *shape)}: {msg}") from None
        report = _propagate(gm, rec.values, normalize, output_key, tol, max_iter, progress)
    finally:
        for m, t in training.items():
            m.training = t
    report.summary.update(_penalty(net, lambda_beta, lambda_gamma))
    report.summary["input_shape"] = list(shape)
    report.summary["seconds"] = time.perf_counter() - t0
    return report


def bound_audit(model: nn.Module, input_shape=None, *, lambda_beta: float = LAMBDA_BETA,
                lambda_gamma: float = LAMBDA_GAMMA, tol: float = DEFAULT_TOL, max_iter: int = DEFAULT_MAX_ITER,
                config: dict | None = None, progress=None):
    """:func:`curvature_bound` as an :class:`~lcnn_audit.results.AuditResult` (command ``bound``):
    the totals in ``summary``, one entry per layer in ``summary["layers"]``."""
    from .results import AuditResult, environment  # noqa: PLC0415

    report = curvature_bound(model, input_shape, lambda_beta=lambda_beta, lambda_gamma=lambda_gamma, tol=tol,
                             max_iter=max_iter, progress=progress)
    d = report.to_dict()
    summary = {**d["summary"], "layers": d["layers"]}
    from .notices import emit_notices  # noqa: PLC0415

    emit_notices("bound", summary["notes"][1:])  # the first note explains the bound, it is no caveat
    cfg = {"input_shape": summary["input_shape"], "tol": tol, "max_iter": max_iter, "lambda_beta": lambda_beta,
           "lambda_gamma": lambda_gamma, "model": dict(getattr(model, "recipe", {}) or {}), **(config or {})}
    ref = next((t for t in model.parameters()), None)
    return AuditResult(command="bound", config=cfg, summary=summary, per_sample={},
                       timing={"seconds": summary.pop("seconds")},
                       environment=environment(ref.device if ref is not None else None))


def _penalty(net: nn.Module, lambda_beta: float, lambda_gamma: float) -> dict:
    betas = [float(m.beta.detach()) for m in net.modules() if isinstance(m, CenteredSoftplus)]
    gammas = [float(m.gamma.detach()) for m in net.modules()
              if isinstance(m, (LipschitzBatchNorm1d, LipschitzBatchNorm2d))]
    sum_beta, sum_log_gamma = sum(betas), sum(math.log(g) for g in gammas)
    return {"sum_beta": sum_beta, "sum_log_gamma": sum_log_gamma, "n_softplus": len(betas), "n_gamma_bn": len(gammas),
            "lambda_beta": lambda_beta, "lambda_gamma": lambda_gamma,
            "penalty": lambda_beta * sum_beta + lambda_gamma * sum_log_gamma}


def _propagate(gm: fx.GraphModule, values: dict, normalize, output_key, tol, max_iter,
               progress=None) -> BoundReport:
    states: dict[fx.Node, object] = {}
    layers: list[LayerBound] = []
    unsupported: list[str] = []
    merges = 0
    smooth_all = True
    certified_all = True

    def state_of(a):
        if isinstance(a, fx.Node):
            return states.get(a, _State.const())
        return _State.const()

    def data_args(node):
        found = []
        for a in _flat_args(node):
            st = state_of(a)
            if isinstance(st, _State) and (st.L > 0 or st.H > 0):
                found.append(a)
        return found

    def add_row(node, op, a, kappa, C, smooth, certified, note, width, st_out):
        nonlocal smooth_all, certified_all
        smooth_all &= smooth
        certified_all &= certified
        layers.append(LayerBound(name=_node_name(node), op=op, curvature=C, second_derivative=kappa, lipschitz=a,
                                 width=width, running_lipschitz=st_out.L, running_hessian=st_out.H,
                                 theorem1=st_out.T, smooth=smooth, certified=certified, note=note))

    first = True
    n_nodes = len(gm.graph.nodes)
    for k, node in enumerate(gm.graph.nodes):
        if progress is not None:
            progress(k, n_nodes)
        val = values.get(node)
        if node.op == "placeholder":
            if first:
                first = False
                st = _State(1.0, 0.0, 0.0, 0.0)
                if normalize is not None:
                    a = float((1.0 / normalize.std).max())
                    st = _State(a, 0.0, 0.0, 0.0)
                    layers.append(LayerBound("normalize", "Normalize", 0.0, 0.0, a, int(val[0].numel()), a, 0.0, 0.0))
                states[node] = st
            else:
                states[node] = _State.const()
            continue
        if node.op == "get_attr":
            states[node] = _State.const()
            continue
        if node.op == "output":
            break
        ins = data_args(node)
        tensorish = isinstance(val, torch.Tensor) or (
            isinstance(val, (tuple, list)) and any(isinstance(v, torch.Tensor) for v in val))
        if not tensorish or not ins:  # sizes, dims and other non-tensor values are data-free
            states[node] = _State.const()
            continue
        width = int(val[0].numel()) if isinstance(val, torch.Tensor) and val.ndim > 0 else 0
        rule = _rule(gm, node, val, values, ins, state_of, tol, max_iter)
        if rule is None:
            unsupported.append(f"{_node_name(node)} ({_op_name(gm, node)})")
            states[node] = _State(math.inf, math.inf, math.inf, math.inf)
            continue
        kind = rule[0]
        if kind == "const":  # zeros_like & co.: depends on the input's shape only
            states[node] = _State.const()
            continue
        if kind == "pass":  # reshapes, projections, dropout in eval
            states[node] = state_of(ins[0])
            continue
        if kind == "merge":
            _, combine, op = rule
            sts = [state_of(a) for a in ins]
            merges += 1
            if combine == "sum":
                out = _State(sum(s.L for s in sts), sum(s.H for s in sts), sum(s.T for s in sts),
                             sum(s.Tw for s in sts))
            else:
                out = _State(math.sqrt(sum(s.L ** 2 for s in sts)), math.sqrt(sum(s.H ** 2 for s in sts)),
                             sum(s.T for s in sts), sum(s.Tw for s in sts))
            states[node] = out
            add_row(node, op, 1.0, 0.0, 0.0, True, True, f"{combine} of {len(sts)} branches", width, out)
            continue
        _, op, a, kappa, C, smooth, certified, note = rule
        st = state_of(ins[0])
        L_out = a * st.L
        out = _State(L_out, a * st.H + kappa * st.L ** 2, st.T + C * L_out if C else st.T,
                     st.Tw + width * C * L_out if C else st.Tw)
        states[node] = out
        add_row(node, op, a, kappa, C, smooth, certified, note, width, out)

    if unsupported:
        raise ModelError(f"the bound has no rule for {len(unsupported)} operation(s): {', '.join(unsupported[:6])}"
                         + (" ..." if len(unsupported) > 6 else "")
                         + "; supported: conv, linear, batch norm, centered softplus and common activations, "
                           "pooling, residual additions, concatenation, reshapes")
    if progress is not None:
        progress(n_nodes, n_nodes)
    out_node = next(n for n in gm.graph.nodes if n.op == "output")
    final = _select(out_node.args[0], output_key)
    st = state_of(final)
    composition = "sequential" if merges == 0 else "graph"
    summary = {
        "lipschitz": st.L,
        "hessian_logits": st.H,
        "hessian_loss": 0.5 * st.L ** 2 + _SQRT2 * st.H,
        "theorem1": st.T,
        "theorem1_width_weighted": st.Tw,
        "composition": composition,
        "composition_note": _COMPOSITION[composition],
        "smooth": smooth_all,
        "certified": certified_all,
        "n_layers": len(layers),
        "notes": _notes(smooth_all, certified_all),
    }
    return BoundReport(layers=layers, summary=summary)


_COMPOSITION = {
    "sequential": "sequential chain: L = Πᵢ Lᵢ, H = Σᵢ κᵢ·(Πⱼ<ᵢ Lⱼ)²·Πⱼ>ᵢ Lⱼ, Theorem 1 sum = Σᵢ Cᵢ·Πⱼ≤ᵢ Lⱼ",
    "graph": "non-sequential graph (e.g. residual blocks): bounds propagate node by node; an addition adds the "
             "Lipschitz and Hessian bounds of its inputs (‖J₁ + J₂‖ ≤ ‖J₁‖ + ‖J₂‖), a concatenation combines them in "
             "quadrature, so L and H upper-bound every path through the graph; the Theorem 1 sum (stated for "
             "chains) adds the terms of all branches",
}


def _notes(smooth: bool, certified: bool) -> list[str]:
    notes = ["lipschitz, hessian_logits and hessian_loss are upper bounds at every input; the Theorem 1 sum is the "
             "paper's curvature budget, not an upper bound on the normalised curvature ‖∇²f‖/(‖∇f‖+ε), which no "
             "data-free quantity can bound (∇f may vanish where ∇²f does not)"]
    if not smooth:
        notes.append("the model has kinks (ReLU, max-pool, ...): the Hessian bounds hold almost everywhere")
    if not certified:
        notes.append("some operator norms did not converge within --max-iter: those layers' norms may be "
                     "slightly underestimated")
    return notes


def _flat_args(node: fx.Node) -> list[fx.Node]:
    found: list[fx.Node] = []
    fx.node.map_arg((node.args, node.kwargs), lambda n: found.append(n) or n)
    return found


def _select(out, key):
    if key is None:
        return out
    if isinstance(out, (tuple, list)):
        return out[int(key)]
    if isinstance(out, dict):
        return out[key]
    raise ModelError(f"the bound cannot follow --output-key {key!r} through the model's graph")


def _node_name(node: fx.Node) -> str:
    return str(node.target) if node.op == "call_module" else node.name


def _op_name(gm, node) -> str:
    if node.op == "call_module":
        return type(gm.get_submodule(node.target)).__name__.removeprefix("Parametrized")
    if node.op == "call_method":
        return f".{node.target}()"
    return getattr(node.target, "__name__", str(node.target))


def _scalar(v) -> float | None:
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return float(v)
    if isinstance(v, torch.Tensor) and v.numel() == 1:
        return float(v)
    return None


def _rule(gm, node, val, values, ins, state_of, tol, max_iter):
    """('const',) | ('pass',) | ('merge', 'sum'|'quad', op) | ('layer', op, a, κ, C, smooth, certified, note)
    | None (no rule)."""
    op = _op_name(gm, node)
    x_val = values.get(ins[0])
    if node.op == "call_module":
        m = gm.get_submodule(node.target)
        if len(ins) != 1:
            return None
        if isinstance(m, CONVS):
            res = conv_operator_norm(m, tuple(x_val.shape[1:]), tol=tol, max_iter=max_iter, dtype=torch.float64)
            return ("layer", op, res.sigma * math.sqrt(1 + res.residual), 0.0, 0.0, True, res.converged,
                    f"operator norm on input {tuple(x_val.shape[1:])}")
        if isinstance(m, nn.Linear):
            res = matrix_norm(m.weight.double(), tol=tol, max_iter=max_iter)
            return "layer", op, res.sigma * math.sqrt(1 + res.residual), 0.0, 0.0, True, res.converged, ""
        if isinstance(m, (LipschitzBatchNorm1d, LipschitzBatchNorm2d)):
            return ("layer", op, float(m.lipschitz_constant().detach()), 0.0, 0.0, True, True,
                    f"min(γ, ‖BN‖₂) with γ = {float(m.gamma.detach()):.4g}")
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            if not m.track_running_stats:
                return None
            w = m.weight.detach() if m.affine else None
            return "layer", op, float(bn_spectral_norm(w, m.running_var, m.eps)), 0.0, 0.0, True, True, "‖BN‖₂"
        if isinstance(m, _ISOMETRY_MODULES):
            return ("pass",)
        act = _module_activation(m)
        if act is not None:
            a, kappa, C, smooth, note = act
            return "layer", op, a, kappa, C, smooth, True, note
        if isinstance(m, _MAXPOOL_MODULES):
            if getattr(m, "return_indices", False):
                return None
            k = _maxpool_overlap(m, tuple(x_val.shape[1:]), tuple(val.shape[1:]))
            return ("layer", op, math.sqrt(k), 0.0, 0.0, False, True,
                    f"√(max windows per input) = √{k}; piecewise linear: bounds hold almost everywhere")
        if isinstance(m, ADAPTIVE_MAX_POOLS):
            if m.return_indices:
                return None
            k = _adaptive_overlap(tuple(x_val.shape[1:]), tuple(val.shape[1:]))
            return ("layer", op, math.sqrt(k), 0.0, 0.0, False, True,
                    f"√(max windows per input) = √{k}; piecewise linear: bounds hold almost everywhere")
        if isinstance(m, _LINEAR_MODULES):
            if isinstance(m, nn.Upsample) and m.mode not in BOUND_UPSAMPLE_MODES:
                return None
            res = _generic_norm(m, x_val, tol, max_iter)
            return ("layer", op, res.sigma * math.sqrt(1 + res.residual), 0.0, 0.0, True, res.converged,
                    "operator norm (autograd adjoint)")
        from .loading import Normalize  # noqa: PLC0415

        if isinstance(m, Normalize):
            return "layer", op, float((1.0 / m.std).max()), 0.0, 0.0, True, True, ""
        return None
    target = node.target
    is_m = node.op == "call_method"
    if (target in _CONST_M) if is_m else (target in _CONST_F):
        return ("const",)
    if (target in _RESHAPES_M) if is_m else (target in _RESHAPES_F):
        return ("pass",) if len(ins) == 1 else None
    if (target in _SPLITS_M) if is_m else (target in _SPLITS_F):
        return ("pass",) if len(ins) == 1 else None
    if target is operator.getitem:
        idx = node.args[1]
        basic = all(isinstance(i, (int, slice, type(None), type(Ellipsis))) for i in
                    (idx if isinstance(idx, tuple) else (idx,)))
        return ("pass",) if len(ins) == 1 and node.args[0] is ins[0] and basic else None
    if target in _NEG:
        return ("pass",) if len(ins) == 1 else None
    if (target in _ADD_M) if is_m else (target in _ADD_F):
        alpha = _scalar(node.kwargs.get("alpha", 1))
        if alpha is None or abs(alpha) != 1:
            return None
        return ("merge", "sum", op) if len(ins) > 1 else ("pass",)
    if (target in _MUL_M) if is_m else (target in _MUL_F):
        if len(ins) != 1:
            return None
        other = [a for a in (*node.args, *node.kwargs.values()) if a is not ins[0]]
        consts = [_scalar(values.get(a, a) if isinstance(a, fx.Node) else a) for a in other]
        if len(consts) != 1 or consts[0] is None:
            return None
        div = (target in ("div", "div_", "__truediv__")) if is_m else target in (operator.truediv,
                                                                                  operator.itruediv, torch.div)
        if div and node.args[0] is not ins[0]:
            return None  # c / f(x) is not linear
        c = abs(1.0 / consts[0] if div else consts[0])
        return "layer", op, c, 0.0, 0.0, True, True, "scaling"
    if target in _CAT:
        if node.kwargs.get("out") is not None:
            return None
        return ("merge", "quad", op) if len(ins) > 1 else ("pass",)
    kind = _ACT_M.get(target) if is_m else _ACT_F.get(target)
    if kind is not None:
        act = _functional_activation(kind, node)
        if act is None or len(ins) != 1:
            return None
        a, kappa, C, smooth, note = act
        return "layer", op, a, kappa, C, smooth, True, note
    if target in (F.max_pool1d, F.max_pool2d, F.max_pool3d) and len(ins) == 1:
        nd = {F.max_pool1d: 1, F.max_pool2d: 2, F.max_pool3d: 3}[target]
        pool = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)[nd - 1](*node.args[1:], **node.kwargs)
        k = _maxpool_overlap(pool, tuple(x_val.shape[1:]), tuple(val.shape[1:]))
        return ("layer", op, math.sqrt(k), 0.0, 0.0, False, True,
                f"√(max windows per input) = √{k}; piecewise linear: bounds hold almost everywhere")
    if target is F.dropout and not node.kwargs.get("training", node.args[2] if len(node.args) > 2 else True):
        return ("pass",)
    if (target in _LINEAR_M) if is_m else (target in _LINEAR_F):
        if len(ins) != 1 or node.args[0] is not ins[0]:
            return None
        rest = [values.get(a, a) if isinstance(a, fx.Node) else a for a in node.args[1:]]
        kwargs = {k: values.get(v, v) if isinstance(v, fx.Node) else v for k, v in node.kwargs.items()}
        if is_m:
            def fn(t):
                return getattr(t, target)(*rest, **kwargs)
        else:
            def fn(t):
                return target(t, *rest, **kwargs)
        if target is F.interpolate and kwargs.get("mode", rest[2] if len(rest) > 2 else "nearest") not in (
                "nearest", "linear", "bilinear", "trilinear", "bicubic"):
            return None
        res = _generic_norm(fn, x_val, tol, max_iter)
        return ("layer", op, res.sigma * math.sqrt(1 + res.residual), 0.0, 0.0, True, res.converged,
                "operator norm (autograd adjoint)")
    return None
