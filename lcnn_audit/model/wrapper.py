"""The model as every audit sees it: :class:`AuditModel` takes inputs in [0, 1] and returns
(N, C) finite logits; and the helpers used on any ``nn.Module`` (where it lives, a
training-flag guard, eval mode)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

import torch
from torch import nn

from ..data import DATASET_NORMALIZATION
from ..errors import DataError, ModelError, UsageError

# --------------------------------------------------------------------------- helpers on any nn.Module


def _first_float(model: nn.Module) -> torch.Tensor | None:
    for t in model.parameters():
        if t.is_floating_point():
            return t
    for t in model.buffers():
        if t.is_floating_point():
            return t
    return next(iter(model.parameters()), next(iter(model.buffers()), None))


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first floating-point parameter (else buffer, else any
    tensor); CPU for a model without tensors."""
    ref = _first_float(model)
    return ref.device if ref is not None else torch.device("cpu")


def model_dtype(model: nn.Module) -> torch.dtype:
    """The dtype of the model's first floating-point parameter (else buffer); float32 if none."""
    ref = _first_float(model)
    return ref.dtype if ref is not None and ref.is_floating_point() else torch.float32


@contextlib.contextmanager
def preserve_training_flags(model: nn.Module) -> Iterator[nn.Module]:
    """Restore every submodule's ``training`` flag on exit (also on error), whatever the body
    does with ``train()`` / ``eval()``."""
    flags = {m: m.training for m in model.modules()}
    try:
        yield model
    finally:
        for m, was in flags.items():
            m.training = was


def set_eval(model: nn.Module) -> nn.Module:
    """Put any model in eval mode; torch.export modules keep the mode they were exported in."""
    try:
        model.eval()
    except NotImplementedError:
        pass
    return model


# --------------------------------------------------------------------------- wrapper


class Normalize(nn.Module):
    """(x - mean) / std per channel, so the wrapped model takes inputs in [0, 1]."""

    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x):
        """(x − mean) / std."""
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        """Module repr arguments."""
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"


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
        """Logits of the normalised input (the selected output of the net)."""
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


# --------------------------------------------------------------------------- the output contract


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
