"""Retrofit LCNN layers into an existing model (``lcnn-audit convert``).

:func:`convert_model` turns a model into a low-curvature network (Srinivas et al., NeurIPS
2022, §3.3–3.4) without rewriting it:

* activations (ReLU, ReLU6, LeakyReLU, GELU, SiLU, ELU, Softplus modules, and functional
  ``F.relu``/``torch.relu``/``x.relu()`` … calls where torch.fx traces the model) become
  :class:`~lcnn_audit.layers.CenteredSoftplus` (eq. 4), one per call site, via
  :func:`lcnn_audit.surgery.replace_activations`;
* ``BatchNorm1d/2d`` become γ-Lipschitz batch norm (§3.4.2) with their running statistics
  and affine parameters;
* ``Conv1d/2d/3d`` and ``Linear`` get spectral normalisation (§3.4.1) on their real input
  size, found by a forward pass with hooks, computed to convergence.

* LayerNorm, GroupNorm and attention have no LCNN counterpart (``NO_COUNTERPART``): they are
  left as they are and listed in ``ConversionReport.skipped`` with the reason; the Linear
  layers of a transformer (MLP, attention output projection, head) and its patch-embedding
  conv are spectrally normalised like any other. A layer whose weight is zero (torchvision's
  ViT head at initialisation) is skipped: σ = 0.

Decisions (see docs/convert.md):

* Spectral normalisation divides W by σ. Where a conv/linear layer feeds only a batch norm
  (found in the torch.fx graph), σ is folded into that batch norm — its running mean and
  the layer's bias are divided by σ and its running variance by σ² — so the pair computes
  the same eval-mode function (up to BN's ε), and the Lipschitz constant moves into the
  batch norm, where γ controls it. Elsewhere the layer's output shrinks by 1/σ.
* ``gamma_init=None`` starts each γ at max(‖BN‖₂·(1 + 1e-5), 2) for that layer, so converting
  a batch norm does not change its output (any γ ≥ ‖BN‖₂ does that) and γ starts where its
  gradient is not vanishing; the λγ·Σ log γ penalty then pulls γ down.
* β starts at 5, the authors' reference implementation's default.

:func:`rebuild_converted` repeats the structural part of a conversion on a freshly built
architecture from the recipe saved with the weights, so that
:func:`lcnn_audit.loading.load_model` loads converted checkpoints with no user code.
"""

from __future__ import annotations

import contextlib
import copy
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from .convert_options import ACTIVATION_KINDS, CONVERT_FLAGS, ConvertOptions, convert_flag  # noqa: F401 - re-exported
from .errors import CheckpointError, ModelError, UsageError
from .layers import CenteredSoftplus, LipschitzBatchNorm1d, LipschitzBatchNorm2d
from .layers.spectral import (
    CONVS,
    ConvSpectralNorm,
    is_parametrized,
    spectral_norm_conv,
    spectral_norm_linear,
)
from .model.checkpoint import write_checkpoint
from .model.wrapper import (
    AuditModel,
    check_model_data,
    model_device,
    model_dtype,
    preserve_training_flags,
    require_finite,
)
from .nn_kinds import NONLINEAR, swappable_types
from .progress import new_phase
from .surgery import ACTIVATION_FUNCTIONS, ACTIVATION_METHODS, ACTIVATION_MODULES, replace_activations, trace

RECIPE_VERSION = 1
BN_TYPES = {nn.BatchNorm1d: LipschitzBatchNorm1d, nn.BatchNorm2d: LipschitzBatchNorm2d}
LCNN_TYPES = (CenteredSoftplus, LipschitzBatchNorm1d, LipschitzBatchNorm2d)


# --------------------------------------------------------------------------- options and report


@dataclass
class ConversionReport:
    """What :func:`convert_model` did.

    ``swapped``: one entry per converted module (qualified name, ``kind``, ``from``, ``to``
    and details such as σ, γ, β); ``skipped``: what could not be converted and why;
    ``notes``: everything else the user should know.
    """

    options: dict
    input_shape: list[int]
    swapped: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    traced: bool = False
    graph_rewritten: bool = False
    trace_training: bool = False  # the mode torch.fx traced in (``if self.training`` branches are baked in)

    def counts(self) -> dict[str, int]:
        """{kind: how many modules of that kind were swapped}."""
        return dict(Counter(s["kind"] for s in self.swapped))

    @property
    def recipe(self) -> dict:
        """The ``convert`` entry of a saved recipe, read by :func:`rebuild_converted`."""
        by_kind = {k: [s for s in self.swapped if s["kind"] == k] for k in ("activation", "batchnorm", "conv",
                                                                           "linear")}
        return {
            "version": RECIPE_VERSION,
            "options": self.options,
            "input_shape": self.input_shape,
            "activations": [s["name"] for s in by_kind["activation"]],
            "batchnorm": [s["name"] for s in by_kind["batchnorm"]],
            "conv": {s["name"]: s["input_shape"] for s in by_kind["conv"]},
            "linear": [s["name"] for s in by_kind["linear"]],
            "trace_training": self.trace_training,
            "report": {"swapped": self.swapped, "skipped": self.skipped, "notes": self.notes},
        }

    def to_dict(self) -> dict:
        """JSON form."""
        return {"options": self.options, "input_shape": self.input_shape, "counts": self.counts(),
                "swapped": self.swapped, "skipped": self.skipped, "notes": self.notes, "traced": self.traced,
                "graph_rewritten": self.graph_rewritten}


# --------------------------------------------------------------------------- probing the forward pass


class _FunctionalActivations(TorchFunctionMode):
    """Counts functional activation calls made outside activation modules."""

    def __init__(self, kinds):
        super().__init__()
        self.targets = {f: k for k in kinds for f in ACTIVATION_FUNCTIONS.get(k, ())}
        for k in kinds:
            for name in ACTIVATION_METHODS.get(k, ()):
                self.targets[getattr(torch.Tensor, name)] = k
        self.counts: Counter = Counter()
        self.depth = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if self.depth == 0 and func in self.targets:
            self.counts[self.targets[func]] += 1
        return func(*args, **(kwargs or {}))


@dataclass
class _Probe:
    calls: Counter
    input_shapes: dict[str, list[tuple[int, ...]]]
    functional: Counter


def _probe(model: nn.Module, net: nn.Module, x: torch.Tensor, kinds, count_functional: bool) -> _Probe:
    """One eval-mode forward pass recording, per named module of ``net``, how often it runs
    and its input shapes (without the batch dim); optionally functional activation calls."""
    calls: Counter = Counter()
    shapes: dict[str, list[tuple[int, ...]]] = {}
    recorder = _FunctionalActivations(kinds) if count_functional else None
    act_types = tuple(t for k in kinds for t in ACTIVATION_MODULES[k])
    handles = []

    def pre(name, is_act):
        def hook(mod, args):
            calls[name] += 1
            if args and isinstance(args[0], torch.Tensor):
                shape = tuple(int(s) for s in args[0].shape[1:])
                if shape not in shapes.setdefault(name, []):
                    shapes[name].append(shape)
            if recorder is not None and is_act:
                recorder.depth += 1
        return hook

    def post(mod, args, out):
        recorder.depth -= 1

    for name, mod in net.named_modules():
        if not name:
            continue
        is_act = isinstance(mod, act_types)
        handles.append(mod.register_forward_pre_hook(pre(name, is_act)))
        if recorder is not None and is_act:
            handles.append(mod.register_forward_hook(post))
    try:
        with preserve_training_flags(model):
            model.eval()
            try:
                with torch.no_grad(), (recorder if recorder is not None else contextlib.nullcontext()):
                    model(x)
            except (RuntimeError, ValueError, TypeError, IndexError) as err:
                msg = str(err).splitlines()[0] if str(err) else type(err).__name__
                raise ModelError(f"the model failed on an input of shape {tuple(x.shape)}: {msg[:200]}; check "
                                 "--input-shape (C,H,W) or --data") from None
    finally:
        for h in handles:
            h.remove()
    return _Probe(calls, shapes, recorder.counts if recorder is not None else Counter())


def _fold_pairs(gm) -> dict[str, str]:
    """conv/linear module name -> batch-norm module name, where the layer's only consumer is
    that batch norm and both modules are used at exactly one call site."""
    uses = Counter(n.target for n in gm.graph.nodes if n.op == "call_module")
    pairs = {}
    for node in gm.graph.nodes:
        if node.op != "call_module" or uses[node.target] != 1:
            continue
        mod = gm.get_submodule(node.target)
        if not isinstance(mod, (*CONVS, nn.Linear)) or len(node.users) != 1:
            continue
        (user,) = node.users
        if user.op == "call_module" and uses[user.target] == 1 and type(gm.get_submodule(user.target)) in BN_TYPES \
                and user.args and user.args[0] is node:
            pairs[node.target] = user.target
    return pairs


# --------------------------------------------------------------------------- conversion


def _restore_modes(net: nn.Module, modes: dict[str, bool]) -> None:
    """Give every module its recorded train/eval flag; new modules take their parent's."""
    final: dict[str, bool] = {}
    for name, m in net.named_modules():
        parent = name.rpartition(".")[0]
        m.training = modes.get(name, final.get(parent, modes.get("", m.training)))
        final[name] = m.training


def _set_submodule(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    setattr(root.get_submodule(parent_name) if parent_name else root, attr, new)


def convert_model(model: nn.Module, options: ConvertOptions | None = None, input_shape=None, *,
                  example: torch.Tensor | None = None, inplace: bool = False,
                  progress=None) -> tuple[nn.Module, ConversionReport]:
    """Convert ``model`` to an LCNN; returns (converted model, :class:`ConversionReport`).

    ``input_shape`` is (C, H, W) without the batch dim (or pass ``example``, a batch): the
    conv spectral norms are computed for it. ``model`` may be an
    :class:`~lcnn_audit.loading.AuditModel`, whose ``net`` is converted (and whose
    ``recipe["convert"]`` is set). The model is deep-copied first unless ``inplace``.
    Its train/eval mode is kept. ``progress(done, total)`` counts the spectral norms fitted.
    """
    opts = options or ConvertOptions()
    opts.validate()
    if not inplace:
        model = copy.deepcopy(model)
    net = model.net if isinstance(model, AuditModel) else model
    if any(isinstance(m, (*LCNN_TYPES, ConvSpectralNorm)) for m in net.modules()):
        raise UsageError("the model already contains LCNN layers (CenteredSoftplus, LipschitzBatchNorm or conv "
                         "spectral norms); it has been converted before")
    device, dtype = model_device(net), model_dtype(net)
    if example is None:
        example = _random_example(input_shape, device, dtype)
    shape = tuple(int(s) for s in example.shape[1:])
    report = ConversionReport(options=opts.to_dict(), input_shape=list(shape))
    modes = {name: m.training for name, m in net.named_modules()}

    gm, reason = trace(net)
    report.traced = gm is not None
    report.trace_training = bool(net.training)
    kinds = opts.activation_kinds if opts.activations else ()
    probe = _probe(model, net, example.to(device, dtype), kinds, count_functional=gm is None and bool(kinds))
    pairs = _fold_pairs(gm) if gm is not None else {}
    if gm is None:
        report.notes.append(f"the model is not traceable by torch.fx ({reason})")

    # 1. activations first, while every other module is still a torch.nn leaf for torch.fx
    if opts.activations:
        net = _convert_activations(net, opts, probe, report, untraced=gm is None, device=device, dtype=dtype)
    # 2. spectral normalisation, folding σ into a following batch norm where there is one
    _convert_spectral(net, opts, probe, pairs, report, progress=progress)
    has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules())
    if (opts.conv or opts.linear) and opts.fold_into_bn and gm is None and has_bn:
        report.notes.append("σ could not be folded into following batch norms (no torch.fx graph to find them); "
                            "in eval mode those layers' outputs shrink by 1/σ until the batch-norm statistics "
                            "are re-estimated (fine-tuning does that)")
    # 3. batch norm, after folding, so that γ starts from the folded statistics
    if opts.batchnorm:
        for name, mod in list(net.named_modules()):
            if isinstance(mod, nn.modules.batchnorm._BatchNorm):
                _convert_bn(net, name, mod, opts, report)
    _restore_modes(net, modes)
    report.skipped.extend(_no_counterpart(net))
    for note in _other_nonlinearities(net):
        report.notes.append(note)
    if isinstance(model, AuditModel):
        model.net = net
        if model.recipe.get("arch"):
            model.recipe["convert"] = report.recipe
        return model, report
    return net, report


def _random_example(input_shape, device, dtype) -> torch.Tensor:
    """A fixed-seed U[0,1) batch of one, of the validated (C, H, W) ``input_shape``."""
    if input_shape is None:
        raise UsageError("the conversion needs the input size: pass input_shape (C,H,W) or an example batch")
    shape = tuple(int(s) for s in input_shape)
    if not shape or any(s <= 0 for s in shape):
        raise UsageError(f"input shape must be positive sizes (C,H,W), got {input_shape}")
    return torch.rand((1, *shape), generator=torch.Generator().manual_seed(0)).to(device, dtype)


def _convert_spectral(net, opts, probe, pairs, report, *, progress) -> None:
    """Step 2 of :func:`convert_model`: spectrally normalise the convs and linears, counting them."""
    modules = list(net.named_modules())
    n_fit = sum(1 for _, m in modules if (isinstance(m, CONVS) and opts.conv) or (isinstance(m, nn.Linear)
                                                                               and opts.linear))
    fitted = 0
    new_phase(progress, "convert: spectral norms")
    if progress is not None:
        progress(0, n_fit)
    for name, mod in modules:
        if isinstance(mod, CONVS) and opts.conv:
            _convert_conv(net, name, mod, opts, probe=probe, pairs=pairs, report=report)
        elif isinstance(mod, nn.Linear) and opts.linear:
            _convert_linear(net, name, mod, opts, probe=probe, pairs=pairs, report=report)
        else:
            continue
        fitted += 1
        if progress is not None:
            progress(fitted, n_fit)
        elif isinstance(mod, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)) and opts.conv:
            report.skipped.append({"name": name, "type": type(mod).__name__,
                                   "reason": "transposed convolutions are not spectrally normalised"})


def _convert_activations(net, opts, probe, report, *, untraced: bool, device, dtype):
    beta = opts.beta_init

    def factory():
        return CenteredSoftplus(beta).to(device=device, dtype=dtype)

    names_before = {n for n, m in net.named_modules()
                    if any(isinstance(m, ACTIVATION_MODULES[k]) for k in opts.activation_kinds)}
    net, swap = replace_activations(net, factory, kinds=opts.activation_kinds, use_fx=opts.use_fx)
    report.graph_rewritten = isinstance(net, torch.fx.GraphModule)
    for s in swap.swapped:
        report.swapped.append({"name": s["name"], "kind": "activation", "from": s["from"], "to": s["to"],
                               "beta": beta})
    report.skipped.extend(swap.skipped)
    report.notes.extend(swap.notes)
    if untraced or not opts.use_fx:
        for name in sorted(names_before):
            if probe.calls.get(name, 0) > 1:
                report.notes.append(f"{name} is called at {probe.calls[name]} sites in forward; without a torch.fx "
                                    "graph they share one CenteredSoftplus (one β)")
        for kind, n in sorted(probe.functional.items()):
            report.skipped.append({"name": "forward", "type": f"functional {kind}",
                                   "reason": f"{n} functional {kind} call(s) in forward were not converted: the model "
                                             "is not traceable by torch.fx; use activation modules instead"})
    return net


def _zero_weight(name, mod, report) -> bool:
    """A zero weight (e.g. torchvision's ViT head at initialisation) has σ = 0: W/σ is 0/0."""
    if bool((mod.weight == 0).all()):
        report.skipped.append({"name": name, "type": type(mod).__name__,
                               "reason": "its weight is zero (σ = 0), so the layer is already 0-Lipschitz and W/σ "
                                         "is undefined; left unnormalised"})
        return True
    return False


def _convert_conv(net, name, mod, opts, *, probe, pairs, report):
    if is_parametrized(mod):
        report.skipped.append({"name": name, "type": type(mod).__name__,
                               "reason": "its weight is already parametrised (e.g. weight or spectral norm)"})
        return
    if _zero_weight(name, mod, report):
        return
    shapes = probe.input_shapes.get(name)
    if not shapes:
        report.skipped.append({"name": name, "type": type(mod).__name__,
                               "reason": "not run by forward on the given input, so its input size is unknown"})
        return
    shape = max(shapes, key=lambda s: torch.Size(s).numel())
    if len(shapes) > 1:
        report.notes.append(f"{name} runs on inputs of several sizes {shapes}; its spectral norm is computed "
                            f"for the largest, {shape}")
    res = spectral_norm_conv(mod, shape, n_power_iterations=opts.n_power_iterations, tol=opts.tol,
                             max_iter=opts.max_iter)
    entry = {"name": name, "kind": "conv", "from": type(mod).__name__.removeprefix("Parametrized"),
             "to": f"{type(mod).__name__.removeprefix('Parametrized')} + ConvSpectralNorm", "input_shape": list(shape),
             **res.to_dict()}
    _fold(net, name, res.sigma, pairs, opts=opts, entry=entry)
    _warn_unconverged(name, res, opts, report)
    report.swapped.append(entry)


def _convert_linear(net, name, mod, opts, *, probe, pairs, report):
    if is_parametrized(mod):
        report.skipped.append({"name": name, "type": "Linear",
                               "reason": "its weight is already parametrised (e.g. weight or spectral norm)"})
        return
    if _zero_weight(name, mod, report):
        return
    res = spectral_norm_linear(mod, n_power_iterations=opts.n_power_iterations, tol=opts.tol, max_iter=opts.max_iter)
    entry = {"name": name, "kind": "linear", "from": "Linear", "to": "Linear + spectral_norm", **res.to_dict()}
    if probe.calls.get(name, 0) == 0:
        entry["note"] = "not run by forward on the given input"
    _fold(net, name, res.sigma, pairs, opts=opts, entry=entry)
    _warn_unconverged(name, res, opts, report)
    report.swapped.append(entry)


def _warn_unconverged(name, res, opts, report):
    if not res.converged:
        report.notes.append(f"{name}: the spectral norm did not converge within --max-iter {opts.max_iter} "
                            f"(relative residual {res.residual:.1e}); its norm may exceed 1 slightly until training "
                            "power steps refine it")


def _fold(net, name, sigma, pairs, *, opts, entry):
    entry["folded_into"] = None
    if not opts.fold_into_bn or name not in pairs or not sigma > 0:
        return
    bn = net.get_submodule(pairs[name])
    if not bn.track_running_stats:
        return
    layer = net.get_submodule(name)
    with torch.no_grad():
        if layer.bias is not None:
            layer.bias.div_(sigma)
        bn.running_mean.div_(sigma)
        bn.running_var.div_(sigma * sigma)
    entry["folded_into"] = pairs[name]


def _convert_bn(net, name, mod, opts, report):
    new_type = BN_TYPES.get(type(mod))
    if new_type is None:
        if not isinstance(mod, LCNN_TYPES):
            report.skipped.append({"name": name, "type": type(mod).__name__,
                                   "reason": "only BatchNorm1d/BatchNorm2d have a γ-Lipschitz version"})
        return
    if not mod.track_running_stats:
        report.skipped.append({"name": name, "type": type(mod).__name__,
                               "reason": "no running statistics (track_running_stats=False), so ‖BN‖₂ is undefined"})
        return
    new = new_type.from_batchnorm(mod, opts.gamma_init)
    _set_submodule(net, name, new)
    report.swapped.append({"name": name, "kind": "batchnorm", "from": type(mod).__name__, "to": new_type.__name__,
                           "bn_norm": float(new.bn_norm().detach()), "gamma": float(new.gamma.detach())})


#: non-linear kinds the activation swap does not cover (those are counted by exact type below)
_OTHER_NONLINEAR = tuple(t for t in NONLINEAR if t not in swappable_types())


#: layers the LCNN paper gives no low-curvature version of, and why each is left as it is
NO_COUNTERPART = {
    nn.LayerNorm: "LayerNorm divides by each sample's own standard deviation, so its Lipschitz constant "
                  "(up to |γ|/√ε) and curvature are unbounded near constant inputs; the LCNN paper defines a "
                  "γ-Lipschitz version only for batch norm, whose eval-mode form is affine (§3.4.2); left as is",
    nn.GroupNorm: "GroupNorm normalises by per-sample statistics like LayerNorm (unbounded Lipschitz constant); "
                  "no LCNN counterpart; left as is",
    nn.MultiheadAttention: "dot-product attention is not globally Lipschitz (Kim et al., ICML 2021) and the LCNN "
                           "paper has no counterpart; its out_proj Linear is spectrally normalised, its Q/K/V "
                           "in_proj_weight (a bare parameter) is left as is, since normalising it bounds neither "
                           "the Lipschitz constant nor the curvature of softmax(QKᵀ/√d)V",
}


def _no_counterpart(net: nn.Module) -> list[dict]:
    return [{"name": name, "type": type(m).__name__, "reason": reason} for name, m in net.named_modules()
            for t, reason in NO_COUNTERPART.items() if isinstance(m, t)]


def _other_nonlinearities(net: nn.Module) -> list[str]:
    swappable = swappable_types()  # each module once: ReLU6 is also a Hardtanh
    kept = Counter(type(m).__name__ for m in net.modules()
                   if isinstance(m, _OTHER_NONLINEAR) or type(m) in swappable)
    if not kept:
        return []
    listed = ", ".join(f"{n} ×{c}" for n, c in sorted(kept.items()))
    return [f"non-linear modules kept as they are: {listed} (they have no LCNN counterpart or were not selected)"]


# --------------------------------------------------------------------------- rebuilding


def rebuild_converted(net: nn.Module, convert_recipe: dict) -> nn.Module:
    """Repeat a recorded conversion on a freshly built architecture (structure only).

    The result has exactly the state-dict keys of the converted model, so its saved
    weights, running statistics, β, γ and singular vectors load into it. No spectral norms
    are recomputed (they come with the weights).
    """
    if convert_recipe.get("version") != RECIPE_VERSION:
        raise CheckpointError(f"converted checkpoint has recipe version {convert_recipe.get('version')!r}; this "
                              f"lcnn-audit reads version {RECIPE_VERSION}")
    opts = ConvertOptions.from_dict(convert_recipe.get("options", {}))
    recorded = list(convert_recipe.get("activations", []))
    if "trace_training" in convert_recipe:
        # trace in the conversion's mode: GoogLeNet/Inception skip their aux heads in eval mode
        net.train(bool(convert_recipe["trace_training"]))
    if opts.activations:
        net, swap = replace_activations(net, lambda: CenteredSoftplus(opts.beta_init), kinds=opts.activation_kinds,
                                        use_fx=opts.use_fx)
        got = [s["name"] for s in swap.swapped]
        if got != recorded:
            raise CheckpointError(f"the architecture's activations ({len(got)}) differ from those recorded at "
                                  f"conversion ({len(recorded)}){_MISFIT}")
    name = ""
    try:
        for name in convert_recipe.get("batchnorm", []):
            bn = net.get_submodule(name)
            if type(bn) not in BN_TYPES:
                raise CheckpointError(f"the recorded batch norm {name!r} is a {type(bn).__name__}{_MISFIT}")
            _set_submodule(net, name, BN_TYPES[type(bn)].from_batchnorm(bn))
        for name, shape in convert_recipe.get("conv", {}).items():
            conv = net.get_submodule(name)
            if not isinstance(conv, CONVS) or len(shape) != conv.weight.ndim - 1:
                raise CheckpointError(f"the recorded conv {name!r} ({type(conv).__name__}, input shape {shape}) "
                                      f"is not a convolution of that input{_MISFIT}")
            spectral_norm_conv(conv, tuple(shape), n_power_iterations=opts.n_power_iterations, converge=False)
        for name in convert_recipe.get("linear", []):
            lin = net.get_submodule(name)
            if not isinstance(lin, nn.Linear):
                raise CheckpointError(f"the recorded linear layer {name!r} is a {type(lin).__name__}{_MISFIT}")
            spectral_norm_linear(lin, n_power_iterations=opts.n_power_iterations, converge=False)
    except (AttributeError, KeyError, UsageError, RuntimeError, ValueError) as err:
        msg = (str(err).splitlines() or [""])[0][:200]
        raise CheckpointError(f"cannot rebuild the converted model at module {name!r}: {msg}{_MISFIT}") from None
    return net


_MISFIT = ("; the recipe's conversion record does not fit its architecture: the recipe is damaged, or the "
           "architecture or its arch_kwargs differ from those converted (re-convert the original model)")


# --------------------------------------------------------------------------- the convert command


def predict(model: nn.Module, data, batch_size: int = 128, progress=None) -> dict[str, list]:
    """Per-sample ``index``, ``label``, ``pred`` of ``model`` (eval mode, no grad) on ``data``."""
    from .runner import run_batches  # noqa: PLC0415

    dev = model_device(model)

    def compute(batch):
        with torch.no_grad():
            logits = model(batch.x.to(dev))
        require_finite(logits, "logits", batch.index)
        pred = logits.argmax(1).cpu()
        return {"index": batch.index, "label": batch.y, "pred": pred}

    with preserve_training_flags(model):
        model.eval()
        return run_batches(data, compute, batch_size, progress=progress).per_sample


def _accuracy(ps: dict[str, list]) -> float:
    return sum(int(p == y) for p, y in zip(ps["pred"], ps["label"], strict=True)) / max(len(ps["pred"]), 1)


def convert_checkpoint(model, options: ConvertOptions | None = None, *, output: str | Path | None = None,
                       input_shape=None, data=None, batch_size: int = 128, config: dict | None = None,
                       progress=None):
    """Convert a loaded :class:`~lcnn_audit.loading.AuditModel`, report clean accuracy before
    and after on ``data`` (if given) and save the converted weights with their recipe to
    ``output`` (if given). Returns (converted model, :class:`~lcnn_audit.results.AuditResult`).
    """
    from .results import AuditResult, environment  # noqa: PLC0415

    opts = options or ConvertOptions()
    opts.validate()
    recipe = dict(getattr(model, "recipe", {}) or {})
    if output is not None and (recipe.get("kind", "state_dict") != "state_dict" or not recipe.get("arch")):
        raise UsageError("convert saves weights plus the architecture recipe, so it needs a weights checkpoint with "
                         "an architecture (--arch, or a safetensors file with an lcnn-audit recipe); TorchScript, "
                         "torch.export and pickled-module checkpoints cannot be rebuilt")
    if recipe.get("convert"):
        raise UsageError("this checkpoint is already LCNN-converted")
    example = None
    if data is not None:
        from .coerce import as_image_data  # noqa: PLC0415

        data = as_image_data(data)
        data_shape = tuple(data.input_shape)
        if input_shape is not None and tuple(input_shape) != data_shape:
            raise UsageError(f"--input-shape {tuple(input_shape)} differs from the data's {data_shape}")
        first = data.get(torch.arange(min(len(data), 8)))
        dev = model_device(model)
        check_model_data(model, first.x.to(dev), first.y.to(dev))
        example = first.x
    elif input_shape is None:
        raise UsageError("the conv spectral norms need the input size: pass --data (one batch is used) or "
                         "--input-shape C,H,W")
    t0 = time.perf_counter()
    new_phase(progress, "convert: accuracy before")
    before = predict(model, data, batch_size, progress) if data is not None else None
    t1 = time.perf_counter()
    converted, report = convert_model(model, opts, input_shape=input_shape, example=example, progress=progress)
    t_convert = time.perf_counter() - t1
    new_phase(progress, "convert: accuracy after")
    after = predict(converted, data, batch_size, progress) if data is not None else None
    from .notices import emit_notices  # noqa: PLC0415

    emit_notices("convert", report.notes)
    summary: dict = {"counts": report.counts(), "swapped": report.swapped, "skipped": report.skipped,
                     "notes": report.notes, "traced": report.traced, "input_shape": report.input_shape,
                     "accuracy_before": _accuracy(before) if before else None,
                     "accuracy_after": _accuracy(after) if after else None, "output": None}
    if output is not None:
        save_recipe = {"arch": recipe["arch"], "arch_kwargs": recipe.get("arch_kwargs") or {},
                       "normalize": recipe.get("normalize"), "convert": report.recipe}
        write_checkpoint(converted, output, save_recipe)
        summary["output"] = str(output)
    per_sample = {}
    if before is not None:
        per_sample = {"index": before["index"], "label": before["label"], "pred_before": before["pred"],
                      "pred_after": after["pred"]}
    cfg = {"options": opts.to_dict(), "input_shape": report.input_shape, "model": recipe,
           "data": data.describe() if data is not None else None, "batch_size": batch_size, **(config or {})}
    dev = model_device(converted)
    result = AuditResult(command="convert", config=cfg, summary=summary, per_sample=per_sample,
                         timing={"seconds": time.perf_counter() - t0, "convert_seconds": t_convert},
                         environment=environment(dev))
    return converted, result
