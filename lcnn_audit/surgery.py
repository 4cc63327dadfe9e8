"""Swap modules in an existing model without rewriting it.

``replace_activations`` replaces activation modules *and* functional calls such as
``F.relu(x)`` / ``torch.relu(x)`` / ``x.relu()`` in ``forward``. Functional calls and
activation instances shared by several call sites need the graph, which ``torch.fx``
provides where the model traces; each call site then gets its own new module (so a
learnable β is per call site). Where the model does not trace, module instances are still
swapped and the report says what could not be seen.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import fx, nn

from .nn_kinds import SWAPPABLE_ACTIVATIONS

#: activation name -> module types swapped (exact type match); see :mod:`lcnn_audit.nn_kinds`
ACTIVATION_MODULES: dict[str, tuple[type[nn.Module], ...]] = SWAPPABLE_ACTIVATIONS
ACTIVATION_FUNCTIONS: dict[str, tuple] = {
    "relu": (F.relu, torch.relu, F.relu_, torch.relu_),
    "relu6": (F.relu6,),
    "leaky_relu": (F.leaky_relu,),
    "gelu": (F.gelu,),
    "silu": (F.silu,),
    "elu": (F.elu,),
    "softplus": (F.softplus,),
}
ACTIVATION_METHODS = {"relu": ("relu", "relu_")}


@dataclass
class SwapReport:
    """What :func:`substitute` did: modules swapped and skipped, notes, whether torch.fx traced."""

    swapped: list[dict] = field(default_factory=list)  # {"name", "from", "to"}
    skipped: list[dict] = field(default_factory=list)  # {"name", "reason"}
    notes: list[str] = field(default_factory=list)
    traced: bool = False


def _set_submodule(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, attr, new)


def _kind_of(mod: nn.Module, kinds, modules=None) -> str | None:
    modules = ACTIVATION_MODULES if modules is None else modules
    for k in kinds:
        if isinstance(mod, modules.get(k, ())) and type(mod) in modules[k]:
            return k
    return None


def trace(model: nn.Module) -> tuple[fx.GraphModule | None, str | None]:
    """(GraphModule, None) if ``model`` traces with torch.fx, else (None, reason)."""
    try:
        return fx.symbolic_trace(model), None
    except Exception as err:  # noqa: BLE001 - fx raises many types for untraceable code
        return None, f"{type(err).__name__}: {str(err).splitlines()[0][:120]}"


def replace_activations(
    model: nn.Module,
    factory: Callable[[], nn.Module],
    kinds: tuple[str, ...] = tuple(ACTIVATION_MODULES),
    use_fx: bool = True,
) -> tuple[nn.Module, SwapReport]:
    """Replace activations of ``kinds`` by ``factory()`` modules; returns (model, report).

    The model is modified in place where possible; when functional calls or shared
    instances are rewritten, the returned model is a ``torch.fx.GraphModule``.
    """
    return substitute(model, lambda kind, original: factory(), kinds, use_fx=use_fx)


#: ``build(kind, original)``: the replacement module, or None to keep the original. ``original``
#: is the module being replaced, or a :class:`Call` for a functional call site.
Builder = Callable[[str, "nn.Module | Call"], "nn.Module | None"]


@dataclass(frozen=True)
class Call:
    """A functional call site seen in the torch.fx graph: the function and its constant
    arguments after the input (a builder reads e.g. ``negative_slope`` from them)."""

    target: object
    args: tuple
    kwargs: dict


def substitute(
    model: nn.Module,
    build: Builder,
    kinds: tuple[str, ...],
    modules: dict[str, tuple[type[nn.Module], ...]] | None = None,
    *,
    functions: dict[str, tuple] | None = None,
    methods: dict[str, tuple[str, ...]] | None = None,
    use_fx: bool = True,
) -> tuple[nn.Module, SwapReport]:
    """Replace modules (exact types in ``modules[kind]``) and functional calls
    (``functions[kind]``, tensor ``methods[kind]``) of ``kinds`` by ``build(kind, original)``.

    The tables default to the activation tables above. Like :func:`replace_activations`,
    the returned model is a ``torch.fx.GraphModule`` when call sites had to be rewritten.
    """
    tables = (ACTIVATION_MODULES if modules is None else modules,
              ACTIVATION_FUNCTIONS if functions is None else functions,
              ACTIVATION_METHODS if methods is None else methods)
    report = SwapReport()
    gm, reason = trace(model) if use_fx else (None, "fx disabled")
    needs_graph = False
    if gm is not None:
        report.traced = True
        uses: dict[str, int] = {}
        for node in gm.graph.nodes:
            if node.op == "call_module":
                uses[node.target] = uses.get(node.target, 0) + 1
            elif _functional_kind(node, kinds, tables):
                needs_graph = True
        shared = {t for t, c in uses.items() if c > 1 and _kind_of(gm.get_submodule(t), kinds, tables[0])}
        needs_graph |= bool(shared)
    if gm is not None and needs_graph:
        return _rewrite_graph(gm, build, kinds, report, tables)
    if gm is None:
        report.notes.append(f"forward is not traceable by torch.fx ({reason}); activation modules were "
                            "swapped, but functional activation calls in forward (if any) were not")
    for name, mod in list(model.named_modules()):
        kind = _kind_of(mod, kinds, tables[0])
        if kind and name:
            new = build(kind, mod)
            if new is None:
                report.skipped.append({"name": name, "type": type(mod).__name__, "reason": "no replacement"})
                continue
            _set_submodule(model, name, new)
            report.swapped.append({"name": name, "from": type(mod).__name__, "to": type(new).__name__})
    return model, report


def _functional_kind(node: fx.Node, kinds, tables=None) -> str | None:
    _, functions, methods = tables or (None, ACTIVATION_FUNCTIONS, ACTIVATION_METHODS)
    for k in kinds:
        if node.op == "call_function" and node.target in functions.get(k, ()):
            return k
        if node.op == "call_method" and node.target in methods.get(k, ()):
            return k
    return None


def _rewrite_graph(gm: fx.GraphModule, build, kinds, report: SwapReport, tables):
    seen: dict[str, int] = {}
    counter = 0
    # the modules as traced: a shared instance is replaced at its first call site, so later
    # call sites must be classified by the original module, not by what the name holds now
    original = {n.target: gm.get_submodule(n.target) for n in gm.graph.nodes if n.op == "call_module"}
    for node in list(gm.graph.nodes):
        if node.op == "call_module":
            mod = original[node.target]
            kind = _kind_of(mod, kinds, tables[0])
            if not kind:
                continue
            k = seen.get(node.target, 0)
            seen[node.target] = k + 1
            name = node.target if k == 0 else f"{node.target}_{k}"
            new = build(kind, mod)
            if new is None:
                report.skipped.append({"name": name, "type": type(mod).__name__, "reason": "no replacement"})
                continue
            _set_submodule(gm, name, new)
            node.target = name
            node.args = node.args[:1]
            node.kwargs = {}
            report.swapped.append({"name": name, "from": type(mod).__name__, "to": type(new).__name__})
            if k == 1:
                orig = name.rsplit("_", 1)[0]
                report.notes.append(f"{orig} was shared by several call sites; each call site got its own "
                                    "new module")
        elif kind := _functional_kind(node, kinds, tables):
            fname = f"{getattr(node.target, '__name__', node.target)}()"
            inp = node.args[0] if node.args else node.kwargs.get("input")
            extra = tuple(node.args[1:])
            kw = {k: v for k, v in node.kwargs.items() if k != "input"}
            if inp is None or any(isinstance(a, fx.Node) for a in (*extra, *kw.values())):
                report.skipped.append({"name": node.name, "type": fname,
                                       "reason": "its arguments are computed in forward, not constants"})
                continue
            new = build(kind, Call(node.target, extra, kw))
            if new is None:
                report.skipped.append({"name": node.name, "type": fname, "reason": "no replacement"})
                continue
            name = f"fx_{kind}_{counter}"
            counter += 1
            gm.add_submodule(name, new)
            with gm.graph.inserting_after(node):
                new_node = gm.graph.call_module(name, args=(inp,))
            node.replace_all_uses_with(new_node)
            gm.graph.erase_node(node)
            report.swapped.append({"name": name, "from": fname, "to": type(new).__name__})
    gm.graph.lint()
    gm.recompile()
    gm.delete_all_unused_submodules()
    return gm, report
