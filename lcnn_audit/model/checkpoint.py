"""Checkpoint files: reading every format ``load_model`` accepts, and writing safetensors.

Formats read (:func:`read_checkpoint`):

* safetensors weights, with an embedded lcnn-audit recipe (metadata key
  ``lcnn_audit.recipe``, written by ``convert``/``finetune`` and the bundled demo) parsed
  here as JSON and checked by :mod:`.recipe`;
* ``.pt``/``.pth`` state dicts, also nested under ``state_dict``, ``model``, ``net``,
  ``model_state_dict`` or ``state_dict_ema``, with ``module.``/``_orig_mod.`` stripped;
* TorchScript archives and ``torch.export`` programs (``.pt2``), which need no arch;
* a whole pickled ``nn.Module``, only with ``trust_checkpoint=True``; likewise ``.pt2``,
  because ``torch.export.load`` unpickles constants and some weights with
  ``weights_only=False`` (checked in torch 2.15's pt2_archive loader), and TorchScript,
  whose code (``__setstate__`` at load, ``forward`` at every call) may use operators such
  as ``aten::from_file(shared=True)`` that create and overwrite files.

Pickles are never unpickled by default: ``torch.load(weights_only=True)`` is used and a
checkpoint that needs code is refused with a message naming ``--trust-checkpoint``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pickle
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..errors import CheckpointError
from ..io import write_with
from .wrapper import unwrap

RECIPE_KEY = "lcnn_audit.recipe"
STATE_KEYS = ("state_dict", "model", "net", "model_state_dict", "state_dict_ema")
STRIP_PREFIXES = ("module.", "_orig_mod.")

HINT_ARCH = "pass --arch (and --arch-kwargs) to override it"


def invalid_recipe(where: str, what: str, hint: str) -> CheckpointError:
    """The error for an embedded recipe (of checkpoint ``where``) whose ``what`` is wrong."""
    return CheckpointError(f"checkpoint {where} has an invalid embedded recipe: {what}; re-save it, or {hint}")


def parse_recipe(text: str, where: str) -> dict:
    """The recipe object of a metadata entry (``where`` names the checkpoint); its fields are
    checked by :func:`~lcnn_audit.model.recipe.validate_recipe` once it is known which of them
    are used."""
    try:
        recipe = json.loads(text)
    except (json.JSONDecodeError, RecursionError, TypeError):
        raise CheckpointError(f"checkpoint {where} has a corrupt lcnn_audit.recipe metadata entry (not JSON); "
                              "re-save it, or pass --arch and --normalize to rebuild the model yourself") from None
    if not isinstance(recipe, dict):
        raise invalid_recipe(where, f"it is a JSON {type(recipe).__name__}, not an object", HINT_ARCH)
    return recipe


# --------------------------------------------------------------------------- reading


@dataclass
class RawCheckpoint:
    """A checkpoint as read: its kind, and a state dict or a module, plus the embedded recipe."""

    kind: str  # "state_dict" | "module" | "torchscript" | "export"
    state_dict: dict[str, torch.Tensor] | None = None
    module: nn.Module | None = None
    recipe: dict = field(default_factory=dict)


def _is_torchscript(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    return any(n.split("/", 1)[-1].startswith("code/") for n in names) and any(
        n.endswith("constants.pkl") for n in names)


def _wellformed_pickle(path: Path) -> bool:
    """Whether the pickle stream (a torch zip's ``data.pkl``, or the raw file) parses to its end.

    ``pickletools.genops`` only decodes opcodes and never executes them. A well-formed stream
    that the weights-only unpickler refused needs code; a malformed one is corrupt."""
    import pickletools

    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                name = next(n for n in zf.namelist() if n.endswith("data.pkl"))
                data = zf.read(name)
        else:
            data = path.read_bytes()
        ops = list(pickletools.genops(data))
    except (StopIteration, ValueError, zipfile.BadZipFile, OSError, EOFError, KeyError, IndexError):
        return False
    return bool(ops) and ops[-1][0].name == "STOP"


@contextlib.contextmanager
def _quiet_loggers(*names: str):
    """Mute loggers for a block: ``torch.export.load`` logs a whole traceback as a warning
    before it raises, and the one-line error that follows says it all."""
    loggers = [logging.getLogger(n) for n in names]
    old = [lg.disabled for lg in loggers]
    for lg in loggers:
        lg.disabled = True
    try:
        yield
    finally:
        for lg, was in zip(loggers, old, strict=True):
            lg.disabled = was


def _corrupt(path: Path, err: BaseException) -> CheckpointError:
    msg = str(err).splitlines()[0] if str(err) else type(err).__name__
    return CheckpointError(f"cannot read checkpoint {path}: the file is corrupt or truncated ({msg[:160]})")


def read_checkpoint(path: str | os.PathLike, trust_checkpoint: bool = False, state_key: str | None = None,
                    map_location="cpu") -> RawCheckpoint:
    """Read a checkpoint file without building a model."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a directory; pass the weights file inside it")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes)")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        return _read_safetensors(path)
    if suffix == ".pt2":
        return _read_export(path, trust_checkpoint)
    if _is_torchscript(path):
        return _read_torchscript(path, trust_checkpoint, map_location)
    return _read_torch_load(path, trust_checkpoint, state_key, map_location)


def _read_safetensors(path: Path) -> RawCheckpoint:
    """A safetensors state dict, with the recipe from its metadata."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            sd = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise _corrupt(path, err) from None
    recipe = parse_recipe(meta[RECIPE_KEY], str(path)) if RECIPE_KEY in meta else {}
    return RawCheckpoint("state_dict", state_dict=sd, recipe=recipe)


def _read_export(path: Path, trust_checkpoint: bool) -> RawCheckpoint:
    """A torch.export program (``.pt2``), only when trusted."""
    if not trust_checkpoint:
        raise CheckpointError(
            f"checkpoint {path} is a torch.export program, and torch.export.load unpickles parts of it with "
            "weights_only=False, which can run arbitrary code; pass --trust-checkpoint only if you trust its "
            "source (or save the weights as safetensors and pass --arch)")
    try:
        with _quiet_loggers("torch.export", "torch._export"):
            prog = torch.export.load(str(path))
    except Exception as err:  # noqa: BLE001 - export's loader raises many types
        raise _corrupt(path, err) from None
    return RawCheckpoint("export", module=prog.module())


def _read_torchscript(path: Path, trust_checkpoint: bool, map_location) -> RawCheckpoint:
    """A TorchScript archive, only when trusted."""
    if not trust_checkpoint:
        raise CheckpointError(
            f"checkpoint {path} is a TorchScript archive: its code runs when it loads and in every forward "
            "pass, and TorchScript operators can read and write files (torch.from_file); pass "
            "--trust-checkpoint only if you trust its source (or save the weights as safetensors and pass "
            "--arch)")
    try:
        return RawCheckpoint("torchscript", module=torch.jit.load(str(path), map_location=map_location))
    except RuntimeError as err:
        raise _corrupt(path, err) from None


def _read_torch_load(path: Path, trust_checkpoint: bool, state_key: str | None, map_location) -> RawCheckpoint:
    """A ``torch.load`` file: weights only unless trusted; a module or a (nested) state dict."""
    try:
        obj = torch.load(str(path), map_location=map_location, weights_only=not trust_checkpoint)
    except pickle.UnpicklingError as err:
        if ("weights only" in str(err).lower() or "weights_only" in str(err).lower()) and _wellformed_pickle(path):
            raise CheckpointError(
                f"checkpoint {path} needs code to unpickle (it is not a plain state dict) and was refused; "
                "unpickling can run arbitrary code, so pass --trust-checkpoint only if you trust its source"
            ) from None
        raise _corrupt(path, err) from None
    except (RuntimeError, EOFError, OSError, ValueError, IndexError, KeyError, TypeError, UnicodeDecodeError,
            zipfile.BadZipFile) as err:  # what torch.load raises on damaged bytes
        raise _corrupt(path, err) from None
    except (AttributeError, ModuleNotFoundError, ImportError) as err:  # trusted pickle, missing class
        raise CheckpointError(f"checkpoint {path} refers to code that is not importable: {err}") from None
    if isinstance(obj, nn.Module):
        return RawCheckpoint("module", module=obj)
    if isinstance(obj, torch.jit.ScriptModule):  # pragma: no cover - torch.load of a TorchScript file
        return RawCheckpoint("torchscript", module=obj)
    return RawCheckpoint("state_dict", state_dict=extract_state_dict(obj, path, state_key))


def extract_state_dict(obj, path, state_key: str | None = None) -> dict[str, torch.Tensor]:
    """Find the tensor dict in a (possibly nested) checkpoint and strip wrapper prefixes."""
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"checkpoint {path} holds a {type(obj).__name__}, not a state dict or module")
    if state_key is not None:
        if state_key not in obj:
            raise CheckpointError(f"--state-key {state_key!r} not in checkpoint {path}; keys: {list(obj)[:10]}")
        obj = obj[state_key]
        if not isinstance(obj, Mapping):
            raise CheckpointError(f"--state-key {state_key!r} selects a {type(obj).__name__} in checkpoint {path}, "
                                  "not a dict of tensors; pass the key of the state dict")
    elif not all(isinstance(v, torch.Tensor) for v in obj.values()):
        for k in STATE_KEYS:
            if k in obj and isinstance(obj[k], Mapping):
                obj = obj[k]
                break
        else:
            if isinstance(obj.get("model"), nn.Module):
                raise CheckpointError(f"checkpoint {path} stores a whole module under 'model'")
            raise CheckpointError(
                f"checkpoint {path} holds no state dict: top-level keys {list(obj)[:10]}; expected tensors "
                f"or one of {', '.join(STATE_KEYS)} (or pass --state-key)")
    sd = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not sd:
        raise CheckpointError(f"checkpoint {path} holds no tensors")
    return {_strip(k): v for k, v in sd.items()}


def _strip(key: str) -> str:
    """Drop leading DataParallel/DDP (``module.``) and torch.compile (``_orig_mod.``) wrappers.

    ``_orig_mod.`` is torch.compile's own attribute, so it is also removed inside a key (a compiled
    submodule); ``module.`` is removed only at the front, since a user submodule may be called
    ``module``."""
    while key.startswith(STRIP_PREFIXES):
        key = key[len(next(p for p in STRIP_PREFIXES if key.startswith(p))):]
    return key.replace("._orig_mod.", ".")


def _list(keys, limit=5) -> str:
    keys = sorted(keys)
    head = ", ".join(keys[:limit])
    return head + (f", ... (+{len(keys) - limit} more)" if len(keys) > limit else "")


def fit_state_dict(model: nn.Module, sd: dict[str, torch.Tensor], what: str = "checkpoint") -> None:
    """Load ``sd`` into ``model`` strictly, with a one-line report of what does not fit."""
    own = model.state_dict()
    optional = {k for k in own if k.endswith("num_batches_tracked")}
    if set(sd) != set(own):
        # a single common wrapper prefix (e.g. Lightning's "model.") is stripped when that makes keys fit
        for prefix in {k.split(".", 1)[0] + "." for k in sd if "." in k}:
            cand = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
            if len(cand) == len(sd) and set(cand) - optional == set(own) - optional:
                sd = cand
                break
    missing = set(own) - set(sd) - optional
    unexpected = set(sd) - set(own)
    shapes = [f"{k} {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
              for k in sorted(set(own) & set(sd)) if sd[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s): {_list(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s): {_list(unexpected)}")
        if shapes:
            parts.append(f"{len(shapes)} shape mismatch(es): " + "; ".join(shapes[:3])
                         + (f" (+{len(shapes) - 3} more)" if len(shapes) > 3 else ""))
        raise CheckpointError(f"weights in {what} do not fit the architecture: " + "; ".join(parts)
                              + "; check --arch and --arch-kwargs (e.g. num_classes)")
    if getattr(sd, "_metadata", None) is None:
        # safetensors keep no per-module versions; some modules (torchvision's MNASNet) refuse a
        # state dict without them, so take those of the architecture the weights were just fitted to
        sd = type(own)(sd)
        sd._metadata = own._metadata
    model.load_state_dict(sd, strict=False)



# --------------------------------------------------------------------------- writing


def write_checkpoint(net: nn.Module, path: str | os.PathLike, recipe: dict) -> Path:
    """Write ``net``'s weights (those of its architecture, for an
    :class:`~lcnn_audit.model.wrapper.AuditModel`) as safetensors with ``recipe`` embedded,
    atomically. ``recipe`` is written as given (less its ``kind``); see
    :func:`~lcnn_audit.model.load.save_model`, which checks it first."""
    from safetensors.torch import save_file

    net = unwrap(net)
    sd = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    # safetensors refuses tensors that share memory; clone the duplicates
    seen: dict[int, str] = {}
    for k, v in sd.items():
        ptr = v.untyped_storage().data_ptr() if v.numel() else -id(v)
        if ptr in seen:
            sd[k] = v.clone()
        seen[ptr] = k
    meta = {RECIPE_KEY: json.dumps({k: v for k, v in recipe.items() if k != "kind"})}
    return write_with(path, lambda tmp: save_file(sd, str(tmp), metadata=meta))
