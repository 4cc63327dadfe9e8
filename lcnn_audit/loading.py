"""Load any PyTorch image classifier as an eval-mode model on [0, 1] inputs.

Forms accepted (``load_model``):

* safetensors weights, with ``arch`` or an embedded lcnn-audit recipe (metadata key
  ``lcnn_audit.recipe``, written by ``convert``/``finetune`` and the bundled demo);
* ``.pt``/``.pth`` state dicts, also nested under ``state_dict``, ``model``, ``net``,
  ``model_state_dict`` or ``state_dict_ema``, with ``module.``/``_orig_mod.`` stripped;
* TorchScript archives and ``torch.export`` programs (``.pt2``), which need no arch;
* a whole pickled ``nn.Module``, only with ``trust_checkpoint=True``; likewise ``.pt2``,
  because ``torch.export.load`` unpickles constants and some weights with
  ``weights_only=False`` (checked in torch 2.15's pt2_archive loader), and TorchScript,
  whose code (``__setstate__`` at load, ``forward`` at every call) may use operators such
  as ``aten::from_file(shared=True)`` that create and overwrite files.

An embedded recipe is untrusted too: it may name only built-in and torchvision
architectures (:mod:`lcnn_audit.recipe`); see ``docs/security.md``.

Pickles are never unpickled by default: ``torch.load(weights_only=True)`` is used and a
checkpoint that needs code is refused with a message naming ``--trust-checkpoint``.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import importlib.util
import json
import logging
import os
import pickle
import sys
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .data import DATASET_NORMALIZATION
from .errors import ArchitectureError, CheckpointError, DataError, ModelError, UsageError
from .models import BUILTIN_ARCHS
from .recipe import check_recipe_arch, parse_recipe, validate_recipe
from .timm_arch import is_timm, resolve_timm

RECIPE_KEY = "lcnn_audit.recipe"
STATE_KEYS = ("state_dict", "model", "net", "model_state_dict", "state_dict_ema")
STRIP_PREFIXES = ("module.", "_orig_mod.")
DEMO_CHECKPOINT = Path(__file__).parent / "assets" / "demo_cnn.safetensors"


# --------------------------------------------------------------------------- wrapper


class Normalize(nn.Module):
    """(x - mean) / std per channel, so the wrapped model takes inputs in [0, 1]."""

    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x):
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"


def _select_output(out, key):
    if isinstance(out, torch.Tensor) and key is None:
        return out
    if key is None:
        raise ModelError(f"model returned {_describe_output(out)}, not an (N, C) logits tensor; "
                         "pass --output-key NAME (dict key/attribute) or --output-key INDEX (tuple item)")
    try:
        if isinstance(out, (tuple, list)):
            return out[int(key)]
        if isinstance(out, Mapping):
            return out[key]
        return getattr(out, key)
    except (ValueError, IndexError, KeyError, AttributeError):
        raise ModelError(f"--output-key {key!r} does not select anything from {_describe_output(out)}") from None


def _describe_output(out) -> str:
    if isinstance(out, torch.Tensor):
        return f"a tensor of shape {tuple(out.shape)}"
    if isinstance(out, (tuple, list)):
        return f"a {type(out).__name__} of {len(out)} items"
    if isinstance(out, Mapping):
        return f"a mapping with keys {list(out)[:6]}"
    return f"a {type(out).__name__} object"


class AuditModel(nn.Module):
    """``net`` preceded by normalisation and followed by output selection.

    ``recipe`` records how to rebuild the model (architecture, kwargs, normalisation,
    conversion) so that saved weights load again with no user code.
    """

    def __init__(self, net: nn.Module, normalize: Normalize | None = None, output_key: str | None = None,
                 recipe: dict | None = None):
        super().__init__()
        self.normalize = normalize if normalize is not None else nn.Identity()
        self.net = net
        self.output_key = output_key
        self.recipe = recipe or {}

    def forward(self, x):
        return _select_output(self.net(self.normalize(x)), self.output_key)

    def train(self, mode: bool = True):
        """Like ``nn.Module.train``, but tolerates torch.export modules, which refuse mode
        changes (they run in the mode they were exported in)."""
        self.training = mode
        for child in self.children():
            try:
                child.train(mode)
            except NotImplementedError:
                pass
        return self


def unwrap(model: nn.Module) -> nn.Module:
    """The architecture inside an :class:`AuditModel` (or the model itself)."""
    return model.net if isinstance(model, AuditModel) else model


# --------------------------------------------------------------------------- architecture


def parse_kwargs(text: str | None) -> dict[str, Any]:
    """Parse ``a=1,b=foo,c=[1,2]`` (values read as YAML scalars) or a JSON object."""
    if not text:
        return {}
    import yaml

    text = text.strip()
    if text.startswith("{"):
        try:
            val = json.loads(text)
        except json.JSONDecodeError as err:
            raise UsageError(f"--arch-kwargs is not valid JSON: {err.msg}") from None
        return dict(val)
    out: dict[str, Any] = {}
    depth, cur, parts = 0, "", []
    for ch in text:
        depth += ch in "[{("
        depth -= ch in "]})"
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    for part in parts:
        if "=" not in part:
            raise UsageError(f"--arch-kwargs entry {part!r} is not KEY=VALUE (example: num_classes=100)")
        k, v = part.split("=", 1)
        try:
            out[k.strip()] = yaml.safe_load(v.strip())
        except yaml.YAMLError:
            out[k.strip()] = v.strip()
    return out


def _import_factory(spec: str):
    target, _, attr = spec.rpartition(":")
    if target.endswith(".py") or os.sep in target or "/" in target:
        path = Path(target)
        if not path.is_file():
            raise ArchitectureError(f"--arch file not found: {path}")
        mod_name = f"lcnn_audit_user_{abs(hash(str(path.resolve())))}"
        spec_obj = importlib.util.spec_from_file_location(mod_name, path)
        module = importlib.util.module_from_spec(spec_obj)
        sys.modules[mod_name] = module
        try:
            spec_obj.loader.exec_module(module)
        except Exception as err:  # noqa: BLE001 - user code can raise anything
            raise ArchitectureError(f"importing {path} failed: {type(err).__name__}: {err}") from None
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as err:
            raise ArchitectureError(f"cannot import module {target!r} for --arch {spec}: {err}") from None
        except Exception as err:  # noqa: BLE001 - importing user code can raise anything; named and chained
            raise ArchitectureError(f"importing module {target!r} for --arch {spec} failed: "
                                    f"{type(err).__name__}: {_first_line(err)}") from err
    if not hasattr(module, attr):
        names = [n for n in dir(module) if not n.startswith("_") and callable(getattr(module, n))]
        hint = difflib.get_close_matches(attr, names, n=3)
        raise ArchitectureError(f"{target} has no attribute {attr!r}" + (f"; did you mean {hint}?" if hint else ""))
    return getattr(module, attr)


def build_arch(arch: str, arch_kwargs: dict | None = None) -> nn.Module:
    """Instantiate ``arch``: a built-in name, a torchvision model name, ``timm:NAME`` (see
    :mod:`.timm_arch`), ``file.py:factory`` or ``package.module:factory``, called with ``arch_kwargs``."""
    kwargs = dict(arch_kwargs or {})
    if is_timm(arch):
        factory = resolve_timm(arch)
    elif ":" in arch:
        factory = _import_factory(arch)
    elif arch in BUILTIN_ARCHS:
        factory = BUILTIN_ARCHS[arch]
    else:
        import torchvision.models as tvm

        names = tvm.list_models()
        if arch not in names:
            hint = difflib.get_close_matches(arch, names + list(BUILTIN_ARCHS), n=3)
            raise ArchitectureError(
                f"unknown architecture {arch!r}"
                + (f"; did you mean {', '.join(hint)}?" if hint else "")
                + " Use a torchvision model name, a built-in name ("
                + ", ".join(BUILTIN_ARCHS)
                + "), path/to/file.py:factory or package.module:factory"
            )
        return _call(lambda **kw: tvm.get_model(arch, weights=None, **kw), arch, kwargs)
    return _call(factory, arch, kwargs)


def _first_line(err: BaseException) -> str:
    return ((str(err).splitlines() or [""])[0] or type(err).__name__)[:200]


def _call(factory, arch, kwargs):
    try:
        model = factory(**kwargs)
    except TypeError as err:
        raise ArchitectureError(f"--arch {arch} rejected --arch-kwargs {kwargs}: {err}") from None
    except ValueError as err:
        raise ArchitectureError(f"--arch {arch} with {kwargs}: {err}") from None
    except Exception as err:  # noqa: BLE001 - a user factory can raise anything; named and chained
        raise ArchitectureError(f"the factory of --arch {arch} raised {type(err).__name__}: {_first_line(err)} "
                                f"(called with {kwargs}); fix the factory or its --arch-kwargs") from err
    if not isinstance(model, nn.Module):
        raise ArchitectureError(f"--arch {arch} returned {type(model).__name__}, not an nn.Module")
    return model


# --------------------------------------------------------------------------- checkpoint reading


@dataclass
class RawCheckpoint:
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
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                meta = f.metadata() or {}
                sd = {k: f.get_tensor(k) for k in f.keys()}
        except (SafetensorError, OSError, ValueError, RuntimeError) as err:
            raise _corrupt(path, err) from None
        recipe = parse_recipe(meta[RECIPE_KEY], str(path)) if RECIPE_KEY in meta else {}
        return RawCheckpoint("state_dict", state_dict=sd, recipe=recipe)
    if suffix == ".pt2":
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
    if _is_torchscript(path):
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


# --------------------------------------------------------------------------- public API


def parse_normalize(spec, dataset: str | None = None):
    """``None``/``none`` -> no normalisation; ``dataset`` or a dataset name -> its documented
    default; ``m,s`` or ``m1,...,mC,s1,...,sC`` -> explicit; a (mean, std) pair passes through."""
    if spec is None:
        return None
    if isinstance(spec, (tuple, list)) and len(spec) == 2:
        return [list(map(float, _as_list(spec[0]))), list(map(float, _as_list(spec[1])))]
    text = str(spec).strip().lower()
    if text in ("none", ""):
        return None
    if text == "dataset":
        if dataset is None or dataset not in DATASET_NORMALIZATION:
            raise UsageError("--normalize dataset needs a named dataset (--data cifar10, ...); "
                             "give MEAN,STD explicitly for other data")
        text = dataset
    if text in DATASET_NORMALIZATION:
        m, s = DATASET_NORMALIZATION[text]
        return [list(m), list(s)]
    try:
        vals = [float(v) for v in text.replace(";", ",").split(",")]
    except ValueError:
        raise UsageError(f"--normalize {spec!r} is not none, dataset, a dataset name, or MEAN,STD numbers") from None
    if len(vals) < 2 or len(vals) % 2:
        raise UsageError(f"--normalize needs an even count of numbers (means then stds), got {len(vals)}")
    half = len(vals) // 2
    if any(s <= 0 for s in vals[half:]):
        raise UsageError("--normalize standard deviations must be positive")
    return [vals[:half], vals[half:]]


def _as_list(v):
    return list(v) if isinstance(v, (tuple, list)) else [v]


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``auto``: CUDA if available, else CPU. Under torchrun, ``auto``/``cuda`` mean this
    process's ``cuda:LOCAL_RANK``."""
    from .distributed import local_rank

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
        from .convert import rebuild_converted  # noqa: PLC0415 - only needed for converted models

        net = rebuild_converted(net, recipe["convert"])
    return net


def set_eval(model: nn.Module) -> nn.Module:
    """Put any model in eval mode; torch.export modules keep the mode they were exported in."""
    try:
        model.eval()
    except NotImplementedError:
        pass
    return model


def check_model_data(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None) -> int:
    """Probe one batch ``x``: the model must return (N, C) logits, and every label in ``y``
    (pass all labels of the data, not just the probe's) must be < C.

    Returns the number of classes C.
    """
    with torch.no_grad():
        try:
            out = model(x)
        except ModelError:
            raise
        except (RuntimeError, AssertionError) as err:  # torch.export guards raise AssertionError
            msg = (str(err).splitlines() or [type(err).__name__])[0]
            hint = ("; a torch.export program with a static batch size needs dynamic_shapes at export time or "
                    "--batch-size equal to its batch size") if "Guard failed" in msg else ""
            raise ModelError(f"the model failed on inputs of shape {tuple(x.shape)}: {msg[:200]}; "
                             f"check that --data matches the model's expected input{hint}") from None
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != x.shape[0]:
        raise ModelError(f"model returned {_describe_output(out)} for a batch of {x.shape[0]}; expected (N, C) "
                         "logits (use --output-key to select them)")
    require_finite(out, "logits")
    num_classes = int(out.shape[1])
    if y is not None and y.numel() and int(y.max()) >= num_classes:
        raise DataError(f"labels out of range: found label {int(y.max())} but the model has {num_classes} "
                         "classes; check --data and --arch-kwargs num_classes")
    return num_classes


def require_finite(values: torch.Tensor, what: str, index: torch.Tensor | None = None) -> None:
    """Raise :class:`ModelError` if any sample's ``values`` (dim 0 = samples) hold NaN or inf.

    Non-finite logits or derivatives make every downstream number meaningless (NaN logits
    read as "accuracy 0" and "robust accuracy 0"), so they are an error, never a number."""
    bad = ~torch.isfinite(values.detach().reshape(values.shape[0], -1)).all(dim=1)
    if not bool(bad.any()):
        return
    where = index.reshape(-1)[bad.to(index.device)] if index is not None else bad.nonzero().flatten()
    ids = [int(i) for i in where[:5].tolist()]
    listed = ", ".join(map(str, ids)) + (", ..." if int(bad.sum()) > len(ids) else "")
    label = "sample index" if index is not None else "batch position"
    raise ModelError(f"the model's {what} are NaN or infinite for {int(bad.sum())} of {values.shape[0]} sample(s) "
                     f"({label} {listed}), so no audit number would mean anything; check the weights, "
                     "--normalize and that inputs lie in [0, 1]")


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
    from safetensors.torch import save_file

    from .io import write_with

    if recipe is None:
        recipe = _recipe_for(net, arch, arch_kwargs, normalize)
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
