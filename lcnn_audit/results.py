"""Result objects shared by every command.

Every command returns an :class:`AuditResult` whose JSON form has one shape::

    {"command", "schema_version", "lcnn_audit_version", "config", "summary", "per_sample", "timing",
     "environment", "complete"}

``schema_version`` (:data:`SCHEMA_VERSION`) changes when a field is renamed or removed; the
fields of each command are documented in ``docs/results.md``.

``per_sample`` maps a field name to a list with one entry per sample, in dataset order,
and always holds ``index`` and ``label``. ``summary`` holds the aggregate numbers; for each
numeric per-sample field, :func:`summarize` gives mean, std, median, p5, p95 and max as in
Table 1 of the LCNN paper.
"""

from __future__ import annotations

import csv
import io
import json
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import allocator
from ._version import __version__
from .errors import UsageError
from .io import read_json, write_json, write_text

STAT_KEYS = ("mean", "std", "median", "p5", "p95", "max", "min", "count")
#: version of the result JSON layout (docs/results.md); also in gate verdicts
SCHEMA_VERSION = 1


def summarize(values) -> dict[str, float]:
    """Summary statistics of a 1-D sequence, ignoring NaN entries.

    ``std`` is the sample standard deviation (n-1); percentiles use linear interpolation.
    """
    t = torch.as_tensor(values, dtype=torch.float64).flatten()
    t = t[~torch.isnan(t)]
    n = int(t.numel())
    if n == 0:
        return {k: float("nan") for k in STAT_KEYS[:-1]} | {"count": 0}
    q = torch.quantile(t, torch.tensor([0.05, 0.5, 0.95], dtype=torch.float64))
    return {
        "mean": float(t.mean()),
        "std": float(t.std()) if n > 1 else 0.0,
        "median": float(q[1]),
        "p5": float(q[0]),
        "p95": float(q[2]),
        "max": float(t.max()),
        "min": float(t.min()),
        "count": n,
    }


def summarize_fields(per_sample: dict[str, list], skip=("index", "label", "pred")) -> dict[str, dict]:
    """:func:`summarize` every numeric (non-bool) per-sample field."""
    out = {}
    for name, vals in per_sample.items():
        if name in skip or not vals:
            continue
        first = vals[0]
        if isinstance(first, bool):
            out[name] = {"fraction_true": sum(bool(v) for v in vals) / len(vals), "count": len(vals)}
        elif isinstance(first, (int, float)):
            out[name] = summarize(vals)
    return out


def environment(device: torch.device | str | None = None) -> dict[str, Any]:
    """Library versions and the device, recorded so that a result can be reproduced."""
    env: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "lcnn_audit": __version__,
        "device": str(device) if device is not None else "cpu",
        "num_threads": torch.get_num_threads(),
        "host_allocator": allocator.state(),
    }
    try:
        import torchvision

        env["torchvision"] = torchvision.__version__
    except ImportError:  # pragma: no cover - torchvision is a dependency
        env["torchvision"] = None
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if dev.type == "cuda" and torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(dev)
        env["cuda"] = torch.version.cuda
    return env


def _jsonable(obj):
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().tolist()
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


@dataclass
class AuditResult:
    """The outcome of one command. ``complete`` is False for an interrupted, resumable run."""

    command: str
    config: dict[str, Any]
    summary: dict[str, Any] = field(default_factory=dict)
    per_sample: dict[str, list] = field(default_factory=dict)
    timing: dict[str, float] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)
    lcnn_audit_version: str = __version__
    complete: bool = True

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        d = _jsonable(asdict(self))
        order = ["command", "lcnn_audit_version", "config", "summary", "per_sample", "timing", "environment"]
        out = {k: d[k] for k in order}
        out["complete"] = d["complete"]
        return {"command": out.pop("command"), "schema_version": SCHEMA_VERSION, **out}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AuditResult:
        """Inverse of :meth:`to_dict`."""
        if not isinstance(d, dict):
            raise UsageError(f"not an lcnn-audit result: a JSON {type(d).__name__}, not a mapping")
        missing = [k for k in ("command", "config", "summary", "per_sample") if k not in d]
        if missing:
            raise UsageError(f"not an lcnn-audit result: missing keys {missing}")
        if not isinstance(d["command"], str):
            raise UsageError("not an lcnn-audit result: command must be a string")
        for key in ("config", "summary", "per_sample", "timing", "environment"):
            if not isinstance(d.get(key, {}), dict):
                raise UsageError(f"not an lcnn-audit result: {key} must be a mapping, got {type(d[key]).__name__}")
        bad = [k for k, v in d["per_sample"].items() if not isinstance(v, list)]
        if bad:
            raise UsageError(f"not an lcnn-audit result: per_sample.{bad[0]} must be a list")
        if not isinstance(d.get("complete", True), bool):
            raise UsageError("not an lcnn-audit result: complete must be true or false")
        if not isinstance(d.get("lcnn_audit_version", ""), str):
            raise UsageError("not an lcnn-audit result: lcnn_audit_version must be a string")
        version = d.get("schema_version", 1)
        if not isinstance(version, int) or version > SCHEMA_VERSION:
            raise UsageError(f"this result has schema_version {version!r}, written by a newer lcnn-audit "
                             f"({d.get('lcnn_audit_version', 'unknown')}); this one reads up to {SCHEMA_VERSION}")
        return cls(
            command=d["command"],
            config=d["config"],
            summary=d.get("summary", {}),
            per_sample=d.get("per_sample", {}),
            timing=d.get("timing", {}),
            environment=d.get("environment", {}),
            lcnn_audit_version=d.get("lcnn_audit_version", "unknown"),
            complete=d.get("complete", True),
        )

    @classmethod
    def load(cls, path: str | Path) -> AuditResult:
        """Read a result JSON file."""
        try:
            return cls.from_dict(read_json(path, "result file"))
        except UsageError as err:
            if str(path) in str(err):
                raise
            raise UsageError(f"{path}: {err}") from None

    def to_json(self) -> str:
        """The JSON text."""
        return json.dumps(self.to_dict(), indent=2)

    def save_json(self, path: str | Path) -> Path:
        """Write the JSON atomically to ``path``."""
        return write_json(path, self.to_dict())

    def save_csv(self, path: str | Path) -> Path:
        """Write the per-sample rows; list-valued fields are JSON-encoded in their cell."""
        cols = list(self.per_sample)
        n = len(self.per_sample.get("index", []))
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(cols)
        for i in range(n):
            row = []
            for c in cols:
                v = self.per_sample[c][i]
                row.append(json.dumps(v) if isinstance(v, (list, dict)) else v)
            w.writerow(row)
        return write_text(path, buf.getvalue())

    def __len__(self) -> int:
        return len(self.per_sample.get("index", []))

    def __repr__(self) -> str:
        fields = [f for f in self.per_sample if f not in ("index", "label")]
        shown = ", ".join(fields[:8]) + (f", … (+{len(fields) - 8})" if len(fields) > 8 else "")
        state = "" if self.complete else ", complete=False"
        return (f"AuditResult(command={self.command!r}, n={len(self)}{state}, per_sample=[{shown}], "
                f"summary keys={len(self.summary)})")

    def tensor(self, name: str) -> torch.Tensor:
        """A per-sample field as a tensor (one row per sample): ``result.tensor("curvature")``,
        also ``result["curvature"]``. Booleans become ``torch.bool``, list fields 2-D tensors."""
        if name not in self.per_sample:
            raise UsageError(f"no per-sample field {name!r}; fields: {', '.join(self.per_sample)}")
        vals = self.per_sample[name]
        if vals and isinstance(vals[0], bool):
            return torch.tensor(vals, dtype=torch.bool)
        if vals and all(isinstance(v, int) for v in vals):
            return torch.tensor(vals, dtype=torch.int64)
        try:
            return torch.tensor([float("nan") if v is None else v for v in vals], dtype=torch.float64)
        except (TypeError, ValueError):
            raise UsageError(f"per-sample field {name!r} holds text or ragged lists; read result.per_sample[{name!r}]"
                             ) from None

    __getitem__ = tensor

    def to_pandas(self):
        """The per-sample rows as a ``pandas.DataFrame`` (pandas is optional: ``pip install pandas``)."""
        try:
            import pandas as pd
        except ImportError:
            raise UsageError("AuditResult.to_pandas() needs pandas, which is not installed: pip install pandas "
                             "(or use result.per_sample, a dict of lists, or result.tensor(name))") from None
        n = len(self)
        return pd.DataFrame({k: v for k, v in self.per_sample.items() if len(v) == n})
