"""Load any PyTorch image classifier as an eval-mode model on [0, 1] inputs, and save one.

:func:`load_model` reads a checkpoint (:mod:`.checkpoint`; the formats and the pickle-safe
rules are listed there), rebuilds the architecture from ``--arch`` (:mod:`.arch`) or from
the checkpoint's embedded recipe (checked and trusted by :mod:`.recipe`; a converted model's
LCNN layers by :func:`lcnn_audit.convert.rebuild_converted`) and wraps it
(:class:`~.wrapper.AuditModel`). :func:`save_model` writes the weights with the recipe that
rebuilds them. An embedded recipe is untrusted: it may name only built-in, torchvision and
timm registry architectures; see ``docs/security.md``.

This module is the top of the ``model`` layer: it depends on :mod:`lcnn_audit.convert`,
which depends only on :mod:`.wrapper` and :mod:`.checkpoint`.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from ..convert import rebuild_converted
from ..distributed import local_rank
from ..errors import CheckpointError, UsageError
from .arch import build_arch, parse_kwargs
from .checkpoint import _strip, fit_state_dict, read_checkpoint, write_checkpoint
from .recipe import check_recipe_arch, validate_recipe
from .wrapper import AuditModel, Normalize, parse_normalize, set_eval, unwrap

DEMO_CHECKPOINT = Path(__file__).parent.parent / "assets" / "demo_cnn.safetensors"


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``auto``: CUDA if available, else CPU. Under torchrun, ``auto``/``cuda`` mean this
    process's ``cuda:LOCAL_RANK``."""
    if device is None or str(device) in ("auto", "cuda"):
        if not torch.cuda.is_available():
            if str(device) == "cuda":
                raise UsageError("--device cuda requested but CUDA is not available; use --device cpu")
            return torch.device("cpu")
        lr = local_rank()
        return torch.device("cuda", lr) if lr is not None else torch.device("cuda")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise UsageError(f"--device {device!r} is not valid; use auto, cpu, cuda or cuda:K") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {device} requested but CUDA is not available; use --device cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise UsageError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) visible")
    return dev


def load_model(
    checkpoint: str | os.PathLike | nn.Module,
    arch: str | None = None,
    arch_kwargs: dict | str | None = None,
    *,
    trust_checkpoint: bool = False,
    normalize=None,
    output_key: str | None = None,
    device: str | torch.device = "cpu",
    dataset: str | None = None,
    state_key: str | None = None,
) -> AuditModel:
    """Load a classifier that takes inputs in [0, 1] and returns (N, C) logits, in eval mode.

    ``normalize``: ``None`` keeps the checkpoint recipe's normalisation (or none);
    ``"none"``, ``"dataset"`` (needs ``dataset``), a dataset name, ``"m,s"`` or a
    (mean, std) pair set it explicitly. ``checkpoint="demo"`` loads the bundled model.
    """
    dev = resolve_device(device)
    if isinstance(arch_kwargs, str):
        arch_kwargs = parse_kwargs(arch_kwargs)
    recipe: dict = {}
    if isinstance(checkpoint, nn.Module):
        net, kind = checkpoint, "module"
    else:
        path = DEMO_CHECKPOINT if str(checkpoint) == "demo" else Path(checkpoint)
        raw = read_checkpoint(path, trust_checkpoint=trust_checkpoint, state_key=state_key)
        kind = raw.kind
        if raw.kind == "state_dict":
            recipe = validate_recipe(dict(raw.recipe), str(path), arch=arch is None or raw.recipe.get("arch") == arch,
                                     normalize=normalize is None)
            if arch is not None:
                # --arch is the user's own choice (trusted); the recipe's kwargs still apply to the same arch
                same = recipe.get("arch") == arch
                recipe = {"arch": arch, "arch_kwargs": {**(recipe.get("arch_kwargs") or {} if same else {}),
                                                        **(arch_kwargs or {})},
                          "normalize": recipe.get("normalize"), "convert": recipe.get("convert")}
            elif arch_kwargs and recipe:
                recipe["arch_kwargs"] = {**(recipe.get("arch_kwargs") or {}), **arch_kwargs}
            if not recipe.get("arch"):
                raise CheckpointError(f"checkpoint {path} holds only weights; pass --arch (a torchvision name "
                                      "such as resnet18, path/to/file.py:factory or package.module:factory)")
            if arch is None:
                check_recipe_arch(recipe["arch"], str(path), trust_checkpoint)
            net = build_from_recipe(recipe)
            fit_state_dict(net, raw.state_dict, what=str(path))
        else:
            if arch is not None:
                raise UsageError(f"checkpoint {path} is a {raw.kind} model and carries its architecture; "
                                 "drop --arch")
            net = raw.module
    norm_spec = parse_normalize(normalize, dataset) if normalize is not None else recipe.get("normalize")
    if norm_spec is not None and not isinstance(norm_spec, list):
        norm_spec = parse_normalize(norm_spec, dataset)
    recipe["normalize"] = norm_spec
    model = AuditModel(net, Normalize(*norm_spec) if norm_spec else None, output_key, recipe)
    model.recipe["kind"] = kind
    model.to(dev)
    set_eval(model)
    return model


def build_from_recipe(recipe: dict) -> nn.Module:
    """Rebuild an architecture (and its LCNN conversion, if any) from a saved recipe."""
    net = build_arch(recipe["arch"], recipe.get("arch_kwargs") or {})
    if recipe.get("convert"):
        net = rebuild_converted(net, recipe["convert"])
    return net

def save_model(net: nn.Module, path: str | os.PathLike, recipe: dict | None = None, *, arch: str | None = None,
               arch_kwargs: dict | str | None = None, normalize=None) -> Path:
    """Save ``net``'s weights as safetensors with ``recipe`` embedded, atomically.

    ``recipe`` holds ``arch``, ``arch_kwargs``, ``normalize`` and optionally ``convert``,
    so that :func:`load_model` rebuilds the model with no user code. Without ``recipe``, a
    model from :func:`load_model` (or ``train``/``convert_model``) uses its own; a plain
    ``nn.Module`` needs ``arch`` (a built-in, torchvision or ``timm:`` name, or
    ``package.module:factory``) with its ``arch_kwargs`` and optional ``normalize`` (as in
    :func:`load_model`). ``arch`` is built once here and must accept ``net``'s weights, so a
    file that would not load is refused now rather than at load time.
    """
    if recipe is None:
        recipe = _recipe_for(net, arch, arch_kwargs, normalize)
    return write_checkpoint(net, path, recipe)


def _recipe_for(net: nn.Module, arch, arch_kwargs, normalize) -> dict:
    """The recipe :func:`save_model` embeds when none is given (see there)."""
    own = dict(getattr(net, "recipe", {}) or {})
    if arch is None:
        if own.get("arch"):
            return own
        raise UsageError("save_model needs the architecture to embed for a plain nn.Module: pass arch= (e.g. "
                         "arch='resnet18', arch_kwargs={'num_classes': 10}), or a recipe dict")
    kwargs = parse_kwargs(arch_kwargs) if isinstance(arch_kwargs, str) else dict(arch_kwargs or {})
    norm = parse_normalize(normalize) if normalize is not None else own.get("normalize")
    recipe = {"arch": arch, "arch_kwargs": kwargs, "normalize": norm, "convert": own.get("convert")}
    inner = unwrap(net)
    fit_state_dict(build_from_recipe(recipe), {_strip(k): v for k, v in inner.state_dict().items()},
                   what=f"the weights of the {type(inner).__name__} given to save_model (arch={arch!r})")
    return recipe
