"""The bound composed along the model's torch.fx graph (how, see :mod:`lcnn_audit.bound`).

Every node carries (L, H, T, Tw): a Lipschitz bound of x ↦ the node's value, a bound on its
input Hessian, and the Theorem 1 sum up to it (plain and width-weighted). A node's
:class:`~lcnn_audit.bound.rules.LayerRule` updates them: a layer by the chain rule
(aL, aH + κL², T + C·aL), a sum of branches by adding, a concatenation in quadrature.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import fx, nn

from ..errors import ModelError
from ..layers import CenteredSoftplus
from ..loading import Normalize
from ..nn_kinds import CONVS
from .result import BoundReport, LayerBound
from .rules import LayerRule, rule_for

_SQRT2 = math.sqrt(2.0)

_COMPOSITION = {
    "sequential": "sequential chain: L = Πᵢ Lᵢ, H = Σᵢ κᵢ·(Πⱼ<ᵢ Lⱼ)²·Πⱼ>ᵢ Lⱼ, Theorem 1 sum = Σᵢ Cᵢ·Πⱼ≤ᵢ Lⱼ",
    "graph": "non-sequential graph (e.g. residual blocks): bounds propagate node by node; an addition adds the "
             "Lipschitz and Hessian bounds of its inputs (‖J₁ + J₂‖ ≤ ‖J₁‖ + ‖J₂‖), a concatenation combines them in "
             "quadrature, so L and H upper-bound every path through the graph; the Theorem 1 sum (stated for "
             "chains) adds the terms of all branches",
}
_SUPPORTED = ("conv, linear, batch norm, centered softplus and common activations, pooling, residual additions, "
              "concatenation, reshapes")


# --------------------------------------------------------------------------- tracing


class _Tracer(fx.Tracer):
    """Keeps every layer the bound knows as one node (including parametrised modules)."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        known = (*CONVS, nn.Linear, nn.modules.batchnorm._BatchNorm, CenteredSoftplus, Normalize)
        return isinstance(m, known) or super().is_leaf_module(m, qualname)


class _Recorder(fx.Interpreter):
    """Runs the graph once and keeps every node's value."""

    def __init__(self, gm):
        super().__init__(gm)
        self.values: dict[fx.Node, object] = {}

    def run_node(self, n):
        out = super().run_node(n)
        self.values[n] = out
        return out


def _first_line(err: Exception) -> str:
    return str(err).splitlines()[0][:160] if str(err) else type(err).__name__


def trace(net: nn.Module) -> fx.GraphModule:
    """``net`` as an fx graph whose leaves are the layers the bound has rules for; a one-line
    :class:`~lcnn_audit.errors.ModelError` if torch.fx cannot trace it."""
    try:
        graph = _Tracer().trace(net)
    except Exception as err:  # noqa: BLE001 - torch.fx raises many types for untraceable code
        raise ModelError(f"the bound composes layer bounds along the model's graph, and torch.fx cannot trace "
                         f"this model ({type(err).__name__}: {_first_line(err)})") from None
    return fx.GraphModule(net, graph)


def record(gm: fx.GraphModule, x: torch.Tensor, shape: tuple[int, ...]) -> dict:
    """Every node's value on the input ``x`` (one sample of the model's input ``shape``, after
    its normalisation), without gradients."""
    rec = _Recorder(gm)
    with torch.no_grad():
        try:
            rec.run(x)
        except (RuntimeError, ValueError, TypeError, IndexError) as err:
            raise ModelError(f"the model failed on an input of shape {(1, *shape)}: {_first_line(err)}") from None
    return rec.values


# --------------------------------------------------------------------------- composition


@dataclass
class _State:
    L: float
    H: float
    T: float
    Tw: float

    @staticmethod
    def const() -> _State:
        return _State(0.0, 0.0, 0.0, 0.0)

    def after(self, rule: LayerRule, width: int) -> _State:
        """The chain rule through a layer with slope a, |f''| ≤ κ and curvature C."""
        a, kappa, C = rule.lipschitz, rule.second_derivative, rule.curvature
        L_out = a * self.L
        return _State(L_out, a * self.H + kappa * self.L ** 2, self.T + C * L_out if C else self.T,
                      self.Tw + width * C * L_out if C else self.Tw)

    @staticmethod
    def merged(combine: str, sts: list[_State]) -> _State:
        """Branches added (``sum``: triangle inequality) or concatenated (``quad``)."""
        if combine == "sum":
            return _State(sum(s.L for s in sts), sum(s.H for s in sts), sum(s.T for s in sts), sum(s.Tw for s in sts))
        return _State(math.sqrt(sum(s.L ** 2 for s in sts)), math.sqrt(sum(s.H ** 2 for s in sts)),
                      sum(s.T for s in sts), sum(s.Tw for s in sts))


_UNBOUNDED = _State(math.inf, math.inf, math.inf, math.inf)


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


def _is_tensorish(val) -> bool:
    return isinstance(val, torch.Tensor) or (
        isinstance(val, (tuple, list)) and any(isinstance(v, torch.Tensor) for v in val))


class _Propagation:
    """The walk over the graph: node states, the report's rows, and what had no rule."""

    def __init__(self, gm: fx.GraphModule, values: dict, normalize, tol: float, max_iter: int):
        self.gm, self.values, self.normalize, self.tol, self.max_iter = gm, values, normalize, tol, max_iter
        self.states: dict[fx.Node, _State] = {}
        self.layers: list[LayerBound] = []
        self.unsupported: list[str] = []
        self.merges = 0
        self.smooth = True
        self.certified = True
        self.first_input = True

    def state_of(self, a) -> _State:
        return self.states.get(a, _State.const()) if isinstance(a, fx.Node) else _State.const()

    def data_args(self, node: fx.Node) -> list[fx.Node]:
        return [a for a in _flat_args(node) if (st := self.state_of(a)).L > 0 or st.H > 0]

    def add_row(self, node, rule: LayerRule, width: int, st: _State) -> None:
        self.smooth &= rule.smooth
        self.certified &= rule.certified
        self.layers.append(LayerBound(name=_node_name(node), op=rule.op, curvature=rule.curvature,
                                      second_derivative=rule.second_derivative, lipschitz=rule.lipschitz, width=width,
                                      running_lipschitz=st.L, running_hessian=st.H, theorem1=st.T, smooth=rule.smooth,
                                      certified=rule.certified, note=rule.note))

    def placeholder(self, node: fx.Node, val) -> _State:
        """The first input is x (L = 1), after the model's normalisation if it has one."""
        if not self.first_input:
            return _State.const()
        self.first_input = False
        if self.normalize is None:
            return _State(1.0, 0.0, 0.0, 0.0)
        a = float((1.0 / self.normalize.std).max())
        self.layers.append(LayerBound("normalize", "Normalize", 0.0, 0.0, a, int(val[0].numel()), a, 0.0, 0.0))
        return _State(a, 0.0, 0.0, 0.0)

    def step(self, node: fx.Node) -> _State:
        """The state after ``node`` (``call_*`` nodes)."""
        val = self.values.get(node)
        ins = self.data_args(node)
        if not _is_tensorish(val) or not ins:  # sizes, dims and other non-tensor values are data-free
            return _State.const()
        module = self.gm.get_submodule(node.target) if node.op == "call_module" else None
        rule = rule_for(node, _op_name(self.gm, node), self.values, ins, tol=self.tol, max_iter=self.max_iter,
                            module=module)
        if rule is None:
            self.unsupported.append(f"{_node_name(node)} ({_op_name(self.gm, node)})")
            return _UNBOUNDED
        if rule.kind == "const":  # zeros_like & co.: depends on the input's shape only
            return _State.const()
        if rule.kind == "pass":  # reshapes, projections, dropout in eval
            return self.state_of(ins[0])
        width = int(val[0].numel()) if isinstance(val, torch.Tensor) and val.ndim > 0 else 0
        if rule.kind == "merge":
            sts = [self.state_of(a) for a in ins]
            self.merges += 1
            out = _State.merged(rule.combine, sts)
            self.add_row(node, LayerRule.layer(rule.op, 1.0, note=f"{rule.combine} of {len(sts)} branches"), width,
                         out)
            return out
        out = self.state_of(ins[0]).after(rule, width)
        self.add_row(node, rule, width, out)
        return out

    def run(self, progress: Callable[[int, int], object] | None) -> None:
        nodes = list(self.gm.graph.nodes)
        for k, node in enumerate(nodes):
            if progress is not None:
                progress(k, len(nodes))
            if node.op == "output":
                break
            if node.op == "placeholder":
                self.states[node] = self.placeholder(node, self.values.get(node))
            elif node.op == "get_attr":
                self.states[node] = _State.const()
            else:
                self.states[node] = self.step(node)
        if self.unsupported:
            raise ModelError(f"the bound has no rule for {len(self.unsupported)} operation(s): "
                             f"{', '.join(self.unsupported[:6])}" + (" ..." if len(self.unsupported) > 6 else "")
                             + f"; supported: {_SUPPORTED}")
        if progress is not None:
            progress(len(nodes), len(nodes))


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


def propagate(gm: fx.GraphModule, values: dict, normalize, output_key, *, tol: float, max_iter: int,
              progress: Callable[[int, int], object] | None = None) -> BoundReport:
    """The per-node rows and the totals of the bound along ``gm`` (``values``: :func:`record`)."""
    walk = _Propagation(gm, values, normalize, tol, max_iter)
    walk.run(progress)
    out_node = next(n for n in gm.graph.nodes if n.op == "output")
    st = walk.state_of(_select(out_node.args[0], output_key))
    composition = "sequential" if walk.merges == 0 else "graph"
    summary = {
        "lipschitz": st.L,
        "hessian_logits": st.H,
        "hessian_loss": 0.5 * st.L ** 2 + _SQRT2 * st.H,
        "theorem1": st.T,
        "theorem1_width_weighted": st.Tw,
        "composition": composition,
        "composition_note": _COMPOSITION[composition],
        "smooth": walk.smooth,
        "certified": walk.certified,
        "n_layers": len(walk.layers),
        "notes": _notes(walk.smooth, walk.certified),
    }
    return BoundReport(layers=walk.layers, summary=summary)
