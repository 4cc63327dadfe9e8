"""Initialising a model for training from scratch, and the recipe a trained model is saved with."""

from __future__ import annotations

import torch
from torch import nn

from ..data import DATASET_NORMALIZATION
from ..errors import UsageError
from ..loading import AuditModel, Normalize, build_arch, parse_normalize, resolve_device


def init_model(arch: str, arch_kwargs: dict | None = None, normalize=None, dataset: str | None = None, *,
               seed: int = 0, device: str | torch.device = "cpu", convert: bool = False,
               input_shape: tuple[int, ...] | None = None) -> AuditModel:
    """A freshly initialised model (``--from-scratch``), seeded, with its recipe.

    ``normalize``: ``None`` uses the dataset's documented mean/std when ``dataset`` has
    one, else none; otherwise as in :func:`lcnn_audit.loading.parse_normalize`.
    ``convert=True`` builds the LCNN version (:func:`lcnn_audit.convert.convert_model` on
    ``input_shape``) with γ starting at 11, the LCNN appendix snippet's 1 + 10: a
    function-preserving γ would start at ≈ 1 on an untrained batch norm (running variance
    1), where γ = 1 + exp(raw) barely moves.
    """
    if normalize is None:
        normalize = dataset if dataset in DATASET_NORMALIZATION else "none"
    norm = parse_normalize(normalize, dataset)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = build_arch(arch, arch_kwargs or {})
    recipe = {"arch": arch, "arch_kwargs": dict(arch_kwargs or {}), "normalize": norm, "convert": None,
              "kind": "state_dict"}
    model = AuditModel(net, Normalize(*norm) if norm else None, None, recipe).to(resolve_device(device))
    if convert:
        from ..convert import ConvertOptions, convert_model  # noqa: PLC0415
        from ..layers.lipschitz_batchnorm import PAPER_GAMMA  # noqa: PLC0415

        if input_shape is None:
            raise UsageError("building an LCNN from scratch needs the input shape (C, H, W)")
        model, _ = convert_model(model, ConvertOptions(gamma_init=PAPER_GAMMA), input_shape=tuple(input_shape),
                                 inplace=True)
    return model


def output_recipe(model: nn.Module) -> dict:
    """The recipe ``save_model`` embeds, or a one-line error if the model cannot be rebuilt."""
    recipe = getattr(model, "recipe", None) or {}
    if not recipe.get("arch"):
        kind = recipe.get("kind", type(model).__name__)
        raise UsageError(f"cannot save a trained {kind} model so that it loads again: it has no rebuildable "
                         "architecture; fine-tune a state-dict checkpoint (safetensors with a recipe, or .pt "
                         "with --arch), not a TorchScript/exported/pickled model")
    return {"arch": recipe["arch"], "arch_kwargs": recipe.get("arch_kwargs") or {},
            "normalize": recipe.get("normalize"), "convert": recipe.get("convert")}
