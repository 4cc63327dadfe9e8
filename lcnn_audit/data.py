"""Image data in [0, 1] pixel space, with a fixed, seeded sample selection.

Every measure and attack in lcnn-audit works on inputs in [0, 1]; any normalisation
lives inside the model (see :mod:`lcnn_audit.loading`). Data is held as a compact uint8
(or float) tensor when the source allows it, so batching is a tensor gather.
"""

from __future__ import annotations

import gzip
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .decode import to_unit_float
from .errors import DataError
from .rng import check_seed

#: Documented per-channel (mean, std) of each dataset, for ``--normalize dataset``.
DATASET_NORMALIZATION: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "mnist": ((0.1307,), (0.3081,)),
    "fashion-mnist": ((0.2860,), (0.3530,)),
    "svhn": ((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
    "demo": ((0.2860,), (0.3530,)),
}
NUM_CLASSES = {"cifar10": 10, "cifar100": 100, "mnist": 10, "fashion-mnist": 10, "svhn": 10, "demo": 10}
DATASETS = ("cifar10", "cifar100", "mnist", "fashion-mnist", "svhn")
SPLITS = ("train", "test")
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
DEMO_DATA = Path(__file__).parent / "assets" / "fashion_mnist_sample.npz"
_IDX = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_EXPECTED = {
    "cifar10": lambda s: ["cifar-10-batches-py/" + f for f in (
        [f"data_batch_{i}" for i in range(1, 6)] if s == "train" else ["test_batch"])],
    "cifar100": lambda s: [f"cifar-100-python/{s}"],
    "svhn": lambda s: [f"{s}_32x32.mat"],
    "mnist": lambda s: [f"MNIST/raw/{f}[.gz]" for f in _IDX[s]],
    "fashion-mnist": lambda s: [f"{f}.gz" for f in _IDX[s]],
}


@dataclass
class Batch:
    """One batch: images in [0, 1], labels, and their indices into the full split."""

    x: torch.Tensor  # float32 (B, C, H, W) in [0, 1]
    y: torch.Tensor  # int64 (B,)
    index: torch.Tensor  # int64 (B,) indices into the full split


@dataclass
class ImageData:
    """A selected set of labelled images. ``indices`` are positions in the full split, sorted."""

    name: str
    split: str
    x: torch.Tensor | None  # full split, uint8 or float, (N, C, H, W); None for lazy sources
    y: torch.Tensor  # full split labels, int64
    indices: torch.Tensor
    num_classes: int | None = None
    source: str = ""
    lazy: object | None = field(default=None, repr=False)  # a torch Dataset for lazy sources

    def __len__(self) -> int:
        return int(self.indices.numel())

    def __repr__(self) -> str:
        return (f"ImageData(name={self.name!r}, split={self.split!r}, n={len(self)}, input_shape={self.input_shape}, "
                f"num_classes={self.num_classes}, source={self.source!r})")

    @property
    def input_shape(self) -> tuple[int, ...]:
        """(C, H, W) of one sample."""
        if self.x is not None:
            return tuple(self.x.shape[1:])
        return tuple(_read_image(self.lazy, int(self.indices[0])).shape)

    @property
    def default_normalization(self):
        """The dataset's usual (mean, std) normalisation, or None."""
        return DATASET_NORMALIZATION.get(self.name)

    @property
    def labels(self) -> torch.Tensor:
        """The labels of this selection."""
        return self.y[self.indices]

    def get(self, positions: torch.Tensor) -> Batch:
        """The samples at ``positions`` (0..len-1) of this selection."""
        idx = self.indices[positions]
        if self.x is not None:
            x = self.x[idx]
            x = x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
        else:
            x = to_unit_float(torch.stack([_read_image(self.lazy, int(i)) for i in idx]))
        return Batch(x=x, y=self.y[idx].long(), index=idx.long())

    def batches(self, batch_size: int, start: int = 0, stop: int | None = None) -> Iterator[Batch]:
        """Batches of ``batch_size`` over positions ``start..stop`` of this selection, in order."""
        stop = len(self) if stop is None else stop
        spans = [torch.arange(lo, min(lo + batch_size, stop)) for lo in range(start, stop, batch_size)]
        if self.x is None:  # lazy (file-backed): decode in worker processes, in order
            from .decode import decode_batches

            named = _NamedErrors(self.lazy)
            for pos, x in zip(spans, decode_batches(named, [self.indices[p] for p in spans]), strict=True):
                idx = self.indices[pos]
                yield Batch(x=x, y=self.y[idx].long(), index=idx.long())
            return
        for pos in spans:
            yield self.get(pos)

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All of the selection as (x, y) tensors."""
        b = self.get(torch.arange(len(self)))
        return b.x, b.y

    def describe(self) -> dict:
        """A JSON description: dataset, split, n, source and input shape."""
        return {"data": self.name, "split": self.split, "n": len(self), "source": self.source,
                "input_shape": list(self.input_shape)}

    @property
    def origin(self) -> str:
        """What this split's samples are read from: ``name/split`` for a named dataset, else the
        file or (split) folder itself, which a tensor file or flat ImageFolder shares between splits."""
        if self.name.lower() in NUM_CLASSES:
            return f"{self.name.lower()}/{self.split}"
        return str(Path(self.source).resolve())


def same_samples(a: ImageData, b: ImageData) -> bool:
    """Whether two loaded splits read the same file or folder (and so the same images)."""
    return a.origin == b.origin


# --------------------------------------------------------------------------- readers


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError) as err:
        raise DataError(f"cannot read IDX file {path}: {err}; the file is corrupt or truncated") from None
    if len(raw) < 8 or raw[0] != 0 or raw[1] != 0 or raw[2] != 8:
        raise DataError(f"{path} is not an unsigned-byte IDX file")
    ndim = raw[3]
    dims = struct.unpack(">" + "I" * ndim, raw[4 : 4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise DataError(f"IDX file {path} is truncated: expected {int(np.prod(dims))} values, got {data.size}")
    return data.reshape(dims)


def _find_idx(root: Path, stem: str) -> Path | None:
    for d in (root, root / "FashionMNIST" / "raw", root / "MNIST" / "raw", root / "raw"):
        for name in (stem, stem + ".gz"):
            if (d / name).is_file():
                return d / name
    return None


def _missing(name: str, root: Path, split: str) -> DataError:
    files = ", ".join(str(root / f) for f in _EXPECTED[name](split))
    return DataError(
        f"{name} ({split}) not found under --data-root {root}: expected {files}; "
        f"pass --download to fetch it (needs internet) or point --data-root at a copy"
    )


def _load_mnist_family(name: str, root: Path, split: str, download: bool):
    imgs_stem, labels_stem = _IDX[split]
    roots = [root]
    if name == "fashion-mnist" and DEBIAN_FASHION_MNIST not in roots:
        roots.append(DEBIAN_FASHION_MNIST)  # Debian's dataset-fashion-mnist package
    for r in roots:
        ip, lp = _find_idx(r, imgs_stem), _find_idx(r, labels_stem)
        if ip and lp:
            x = torch.from_numpy(_read_idx(ip).copy()).unsqueeze(1)
            y = torch.from_numpy(_read_idx(lp).astype(np.int64))
            return x, y, str(ip.parent)
    if not download:
        raise _missing(name, root, split)
    from torchvision import datasets

    cls = datasets.FashionMNIST if name == "fashion-mnist" else datasets.MNIST
    ds = _torchvision_call(cls, name, root, split, download)
    return ds.data.unsqueeze(1).clone(), ds.targets.long().clone(), str(root)


def _torchvision_call(cls, name, root, split, download, **kw):
    try:
        if cls.__name__ == "SVHN":
            return cls(str(root), split=split, download=download, **kw)
        return cls(str(root), train=(split == "train"), download=download, **kw)
    except RuntimeError as err:
        if "not found" in str(err).lower() or "download" in str(err).lower():
            raise _missing(name, root, split) from None
        raise DataError(f"cannot read {name} from {root}: {err}") from None
    except OSError as err:
        raise DataError(f"cannot download {name} to {root}: {err}") from None
    except ImportError as err:
        raise DataError(f"reading {name} needs an extra package: {err}") from None


def _load_torchvision(name: str, root: Path, split: str, download: bool):
    from torchvision import datasets

    if name in ("cifar10", "cifar100"):
        cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
        ds = _torchvision_call(cls, name, root, split, download)
        x = torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2).contiguous()
        return x, torch.as_tensor(ds.targets, dtype=torch.int64), str(root)
    if name == "svhn":
        ds = _torchvision_call(datasets.SVHN, name, root, split, download)
        return torch.from_numpy(ds.data), torch.as_tensor(ds.labels, dtype=torch.int64), str(root)
    return _load_mnist_family(name, root, split, download)


def _load_tensor_file(path: Path):
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                obj = {k: torch.from_numpy(z[k]) for k in z.files}
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any reader failure means an unreadable file
        if path.stat().st_size == 0:
            raise DataError(f"data file {path} is empty (0 bytes); it must be a .pt (torch.save of a dict) or "
                            ".npz with keys 'x' and 'y'") from None
        msg = (str(err).splitlines() or [""])[0][:200]
        raise DataError(f"cannot read tensor file {path}: {type(err).__name__}: {msg}; "
                        "it must be a .pt (torch.save of a dict) or .npz with keys 'x' and 'y'") from None
    if not isinstance(obj, dict) or "x" not in obj or "y" not in obj:
        keys = list(obj) if isinstance(obj, dict) else type(obj).__name__
        raise DataError(f"tensor file {path} must hold keys 'x' and 'y'; found {keys}")
    return check_images(obj["x"], obj["y"], f"tensor file {path}", xname="'x'", yname="'y'",
                        normalize_hint="--normalize")


def check_images(x, y, what: str, *, xname: str = "images", yname: str = "labels",
                 normalize_hint: str = "load_model(..., normalize=...)") -> tuple[torch.Tensor, torch.Tensor]:
    """Validate images ``x`` (N, C, H, W), float in [0, 1] or uint8, and integer labels ``y``
    (N,) >= 0; return them as (float32 or uint8, int64). Every problem is a :class:`DataError`
    that starts with ``what`` and names the tensor."""
    x, y = torch.as_tensor(x), torch.as_tensor(y)
    if x.ndim != 4:
        raise DataError(f"{what}: {xname} must have shape (N, C, H, W), got {tuple(x.shape)}")
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise DataError(f"{what}: {yname} must have shape ({x.shape[0]},), got {tuple(y.shape)}")
    if x.shape[0] == 0:
        raise DataError(f"{what} holds no samples ({xname} has shape {tuple(x.shape)}); it needs N >= 1")
    if y.dtype.is_floating_point or y.dtype == torch.bool:
        if not (y.dtype.is_floating_point and torch.equal(y, y.round())):
            raise DataError(f"{what}: {yname} must hold integer class labels, got {y.dtype}")
    y = y.long()
    if (y < 0).any():
        raise DataError(f"{what}: {yname} must be >= 0, found {int(y.min())}")
    if x.dtype != torch.uint8:
        if not x.dtype.is_floating_point:
            raise DataError(f"{what}: {xname} must be float in [0, 1] or uint8, got {x.dtype}")
        x = x.float()
        if not torch.isfinite(x).all():
            raise DataError(f"{what}: {xname} hold NaN or infinite values")
        lo, hi = float(x.min()), float(x.max())
        if lo < 0.0 or hi > 1.0:
            raise DataError(f"{what}: {xname} values must lie in [0, 1], found [{lo:.4g}, {hi:.4g}]; scale pixels "
                            f"to [0, 1] and keep the normalisation inside the model ({normalize_hint})")
    return x, y


def _pil_loader(path: str):
    """Open an image keeping grayscale as one channel (torchvision's default forces RGB)."""
    from PIL import Image

    with Image.open(path) as img:
        return img.convert("L" if img.mode in ("L", "1", "I", "I;16") else "RGB")


class _NamedErrors(torch.utils.data.Dataset):
    """An ImageFolder whose damaged files raise a :class:`DataError` naming them (see ``_read_image``)."""

    def __init__(self, ds):
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int):
        return _read_image(self.ds, int(i)), self.ds.targets[int(i)]


def _read_image(ds, i: int) -> torch.Tensor:
    """Image ``i`` of an ImageFolder; a file that cannot be decoded is a :class:`DataError` naming it."""
    from PIL import Image

    try:
        return ds[i][0]
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:  # PIL on damaged data
        raise DataError(f"cannot decode image {ds.samples[i][0]}: {err}; replace or remove the file") from None


def _split_folder(path: Path, split: str, single_split: bool) -> Path:
    """The class-folder root of ``split`` in an ImageFolder: ``train/`` or ``test/`` (or ``val/``);
    a flat folder of class folders only with ``single_split``."""
    names = ("train",) if split == "train" else ("test", "val")
    found = {n: path / n for n in ("train", "test", "val") if (path / n).is_dir()}
    if single_split:
        if found:
            raise DataError(f"--single-split reads {path} itself as one split, but it has {'/, '.join(found)}/ "
                            f"subfolders (they would become classes); drop --single-split, or pass the split folder")
        return path
    for n in names:
        if n in found:
            return found[n]
    if found:
        raise DataError(f"ImageFolder {path} has {'/, '.join(found)}/ but no {' or '.join(n + '/' for n in names)} "
                        f"folder for the {split} split")
    raise DataError(f"ImageFolder {path} has no train/ and test/ (or val/) subfolders; pass --single-split "
                    f"(single_split: true in a gate policy) to read its class folders as the {split} split (a flat "
                    "folder then serves as one split only)")


def _check_images(ds, positions: torch.Tensor, image_size) -> None:
    """Decode only the headers of the selected images (PIL reads them lazily): every file must
    open and, unless ``image_size`` resizes them, all must share one size and channel count."""
    from PIL import Image, UnidentifiedImageError

    first = None
    for i in positions.tolist():
        file = ds.samples[i][0]
        try:
            with Image.open(file) as img:
                key = (img.size, 1 if img.mode in ("L", "1", "I", "I;16") else 3)
        except (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
            raise DataError(f"cannot read image {file}: {err}; replace or remove the file") from None
        if first is None:
            first = (file, key)
        elif image_size is None and key != first[1]:
            (w0, h0), c0 = first[1]
            (w1, h1), c1 = key
            raise DataError(f"ImageFolder images differ in size: {first[0]} is {w0}x{h0} with {c0} channel(s), "
                            f"{file} is {w1}x{h1} with {c1}; batches need one size, so resize them to one size "
                            "(or load_data(..., image_size=(H, W)) from Python)")


def _load_image_folder(path: Path, split: str, image_size: tuple[int, int] | None, single_split: bool = False):
    from torchvision import datasets, transforms

    root = _split_folder(path, split, single_split)
    tf = [transforms.PILToTensor()]  # uint8: 4x less to move from the decoding workers; scaled on arrival
    if image_size:
        tf.insert(0, transforms.Resize(image_size))
    try:
        ds = datasets.ImageFolder(str(root), transform=transforms.Compose(tf), loader=_pil_loader)
    except (FileNotFoundError, RuntimeError) as err:
        raise DataError(f"cannot read ImageFolder {root}: {err}") from None
    y = torch.as_tensor(ds.targets, dtype=torch.int64)
    return ds, y, str(root), len(ds.classes)


def load_data(
    spec: str,
    split: str = "test",
    n: int | None = None,
    seed: int = 0,
    *,
    data_root: str | os.PathLike | None = None,
    download: bool = False,
    image_size: tuple[int, int] | None = None,
    single_split: bool = False,
) -> ImageData:
    """Load a labelled image set in [0, 1].

    ``spec`` is ``demo`` (the bundled Fashion-MNIST sample), a dataset name from
    :data:`DATASETS` read from ``data_root`` through torchvision, an ImageFolder
    directory, or a ``.pt``/``.npz`` tensor file with keys ``x`` (N,C,H,W in [0,1]) and
    ``y``. ``n`` selects a subset seeded by ``seed`` (the same every time), kept in
    dataset order. The train split is read without augmentation.

    An ImageFolder directory needs ``train/`` and ``test/`` (or ``val/``) subfolders of class
    folders; a flat folder of class folders is read, as the requested split, only with
    ``single_split=True``. The selected images' headers are checked up front (readable, one
    size). A tensor file has no splits: it is whatever split is asked for (see
    :func:`same_samples`).
    """
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    check_seed(seed)
    name = spec.lower()
    lazy = None
    num_classes = NUM_CLASSES.get(name)
    if name == "demo":
        with np.load(DEMO_DATA) as z:
            x = torch.from_numpy(z[f"x_{split}"]).unsqueeze(1)
            y = torch.from_numpy(z[f"y_{split}"].astype(np.int64))
        source = "bundled Fashion-MNIST sample"
    elif name in DATASETS:
        root = Path(data_root) if data_root is not None else Path("data")
        x, y, source = _load_torchvision(name, root, split, download)
    else:
        path = Path(spec)
        if path.is_dir():
            lazy, y, source, num_classes = _load_image_folder(path, split, image_size, single_split)
            x = None
            name = str(path)
        elif path.is_file() and path.suffix in (".pt", ".pth", ".npz"):
            x, y = _load_tensor_file(path)
            source, name = str(path), str(path)
        elif path.suffix in (".pt", ".pth", ".npz") or os.sep in spec:
            raise DataError(f"data file not found: {spec}")
        else:
            raise DataError(
                f"unknown dataset {spec!r}; use one of demo, {', '.join(DATASETS)}, an ImageFolder "
                "directory, or a .pt/.npz tensor file with keys x and y"
            )
    total = int(y.numel())
    if total == 0:
        raise DataError(f"{spec} ({split}) holds no samples")
    if n is None:
        indices = torch.arange(total)
    else:
        if n <= 0:
            raise DataError(f"--n must be positive, got {n}")
        if n > total:
            raise DataError(f"--n {n} is larger than {spec} ({split}), which holds {total} samples; "
                            f"use --n {total} or fewer")
        gen = torch.Generator().manual_seed(seed)
        indices = torch.randperm(total, generator=gen)[:n].sort().values
    if lazy is not None:
        _check_images(lazy, indices, image_size)
    return ImageData(name=name, split=split, x=x, y=y, indices=indices, num_classes=num_classes,
                     source=source, lazy=lazy)
