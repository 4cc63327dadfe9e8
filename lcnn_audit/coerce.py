"""``as_image_data``: the one place where notebook data becomes :class:`~lcnn_audit.data.ImageData`.

Every public function that takes data calls it, so each accepts an ``ImageData`` (from
:func:`~lcnn_audit.data.load_data`), a pair ``(x, y)`` of tensors or arrays, a
``torch.utils.data.TensorDataset``, any map-style dataset yielding ``(image, label)``, or a
``DataLoader`` over one. Images must be (N, C, H, W) float in [0, 1] (or uint8, divided by
255): normalisation belongs inside the model (see :func:`~lcnn_audit.load_model`'s
``normalize``).
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from .data import ImageData, check_images
from .errors import DataError


def _check(x: torch.Tensor, y: torch.Tensor, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = torch.as_tensor(x), torch.as_tensor(y)
    if x.ndim == 3:  # (N, H, W) grayscale
        x = x.unsqueeze(1)
    y = y.reshape(-1) if y.ndim == 2 and y.shape[1] == 1 else y
    x, y = check_images(x.detach().cpu(), y.cpu(), what)
    return x.contiguous(), y


def _from_pairs(items, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = [], []
    for item in items:
        if not isinstance(item, (tuple, list)) or len(item) < 2:
            raise DataError(f"{what}: each item must be (image, label), got {type(item).__name__}")
        xs.append(torch.as_tensor(item[0]))
        ys.append(torch.as_tensor(item[1]))
    if not xs:
        raise DataError(f"{what}: holds no samples")
    return xs, ys


def as_image_data(data, name: str | None = None) -> ImageData:
    """``data`` as :class:`~lcnn_audit.data.ImageData` (see the module docstring).

    A DataLoader is read once, in its own order (use ``shuffle=False`` for sample indices
    that match your dataset); its batches' images and labels are concatenated.
    """
    if isinstance(data, ImageData):
        return data
    if isinstance(data, (tuple, list)) and len(data) == 2 and not isinstance(data[0], (tuple, list)):
        x, y = _check(data[0], data[1], "data (x, y)")
        kind = name or "tensors"
    elif isinstance(data, TensorDataset):
        if len(data.tensors) < 2:
            raise DataError("TensorDataset: needs two tensors (images, labels)")
        x, y = _check(data.tensors[0], data.tensors[1], "TensorDataset")
        kind = name or "TensorDataset"
    elif isinstance(data, DataLoader):
        xs, ys = _from_pairs(iter(data), "DataLoader")
        x, y = _check(torch.cat([t if t.ndim == 4 else t.unsqueeze(0) for t in xs]),
                      torch.cat([t.reshape(-1) for t in ys]), "DataLoader")
        kind = name or "DataLoader"
    elif isinstance(data, Dataset) and hasattr(data, "__len__"):
        xs, ys = _from_pairs((data[i] for i in range(len(data))), type(data).__name__)
        x, y = _check(torch.stack(xs), torch.stack(ys), type(data).__name__)
        kind = name or type(data).__name__
    else:
        raise DataError(f"cannot use {type(data).__name__} as data: pass ImageData (lcnn_audit.load_data), a pair "
                        "(x, y) of tensors, a TensorDataset, a map-style Dataset of (image, label) or a DataLoader")
    classes = int(y.max()) + 1
    return ImageData(name=kind, split="given", x=x, y=y, indices=torch.arange(x.shape[0]), num_classes=classes,
                     source=f"in-memory {kind}")
