"""Architecture resolution for ``--arch``: a built-in name (:mod:`.builtin`), a torchvision
model name, ``timm:NAME`` (:mod:`.timm_arch`), ``path/to/file.py:factory`` or
``package.module:factory``; and the ``--arch-kwargs`` parser.

A ``file.py:factory`` or ``package.module:factory`` runs user code: only the user names one
(``--arch``); a checkpoint's recipe may not (:mod:`.recipe`, ``docs/security.md``)."""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import json
import os
import sys
from pathlib import Path
from typing import Any

from torch import nn

from ..errors import ArchitectureError, UsageError
from .builtin import BUILTIN_ARCHS
from .timm_arch import is_timm, resolve_timm


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

