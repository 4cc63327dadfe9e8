"""Every data form loads in [0,1]; subsets are seeded and stable; bad data is refused."""

import gzip
import struct

import numpy as np
import pytest
import torch

from lcnn_audit import load_data
from lcnn_audit.data import DEBIAN_FASHION_MNIST
from lcnn_audit.errors import DataError


def write_idx(path, arr: np.ndarray, gz=True):
    header = struct.pack(">BBBB", 0, 0, 8, arr.ndim) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
    data = header + arr.astype(np.uint8).tobytes()
    (gzip.open if gz else open)(path, "wb").write(data)


def test_demo_sample_and_seeded_subsets():
    full = load_data("demo")
    assert len(full) == 1000 and full.input_shape == (1, 28, 28)
    a, b = load_data("demo", n=50, seed=3), load_data("demo", n=50, seed=3)
    assert torch.equal(a.indices, b.indices) and bool((a.indices.diff() > 0).all())  # same, dataset order
    assert not torch.equal(a.indices, load_data("demo", n=50, seed=4).indices)
    x, y = a.tensors()
    assert x.dtype == torch.float32 and 0 <= float(x.min()) and float(x.max()) <= 1
    assert torch.equal(y, full.y[a.indices])
    assert len(load_data("demo", split="train")) == 1000


def test_debian_layout_is_read_directly(tmp_path):
    imgs = np.random.randint(0, 256, (7, 28, 28))
    labels = np.arange(7) % 10
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", imgs)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", labels)
    d = load_data("fashion-mnist", data_root=tmp_path)
    x, y = d.tensors()
    assert torch.allclose(x[:, 0] * 255, torch.from_numpy(imgs).float()) and y.tolist() == labels.tolist()
    # torchvision's layout (uncompressed, under FashionMNIST/raw) too
    raw = tmp_path / "tv" / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    write_idx(raw / "t10k-images-idx3-ubyte", imgs, gz=False)
    write_idx(raw / "t10k-labels-idx1-ubyte", labels, gz=False)
    assert len(load_data("fashion-mnist", data_root=tmp_path / "tv")) == 7


@pytest.mark.skipif(not DEBIAN_FASHION_MNIST.exists(), reason="dataset-fashion-mnist not installed")
def test_real_debian_fashion_mnist():
    d = load_data("fashion-mnist", split="train", n=10, data_root=DEBIAN_FASHION_MNIST)
    assert d.num_classes == 10 and len(d) == 10 and len(d.y) == 60000


def test_truncated_idx(tmp_path):
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", np.zeros((3, 28, 28)))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(3))
    raw = gzip.open(tmp_path / "t10k-images-idx3-ubyte.gz").read()
    gzip.open(tmp_path / "t10k-images-idx3-ubyte.gz", "wb").write(raw[:-50])
    with pytest.raises(DataError, match="truncated"):
        load_data("fashion-mnist", data_root=tmp_path)


@pytest.mark.parametrize("name,expect", [("cifar10", "cifar-10-batches-py/test_batch"),
                                         ("cifar100", "cifar-100-python/test"), ("svhn", "test_32x32.mat"),
                                         ("mnist", "t10k-images-idx3-ubyte")])
def test_offline_named_datasets_name_expected_files(tmp_path, name, expect):
    with pytest.raises(DataError) as err:
        load_data(name, data_root=tmp_path)
    assert expect in str(err.value) and "--download" in str(err.value)


def test_tensor_files_pt_and_npz(tmp_path):
    x, y = torch.rand(9, 3, 4, 4), torch.randint(0, 5, (9,))
    torch.save({"x": x, "y": y}, tmp_path / "d.pt")
    np.savez(tmp_path / "d.npz", x=x.numpy(), y=y.numpy())
    for f in ("d.pt", "d.npz"):
        xx, yy = load_data(str(tmp_path / f)).tensors()
        assert torch.equal(xx, x) and torch.equal(yy, y)


@pytest.mark.parametrize("x,y,match", [
    (torch.rand(4, 8, 8), torch.zeros(4), "shape"),
    (torch.rand(4, 1, 8, 8) * 255, torch.zeros(4, dtype=torch.long), "lie in \\[0, 1\\]"),
    (torch.rand(4, 1, 8, 8), torch.zeros(3, dtype=torch.long), "'y' must have shape"),
    (torch.rand(4, 1, 8, 8), torch.full((4,), 0.5), "integer class labels"),
    (torch.rand(4, 1, 8, 8), torch.tensor([0, 1, -1, 2]), ">= 0"),
])
def test_bad_tensor_files(tmp_path, x, y, match):
    torch.save({"x": x, "y": y}, tmp_path / "bad.pt")
    with pytest.raises(DataError, match=match):
        load_data(str(tmp_path / "bad.pt"))


def test_image_folder(tmp_path):
    from PIL import Image

    for cls in ("cat", "dog"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(3):
            img = Image.fromarray(np.random.randint(0, 256, (6, 6, 3), dtype=np.uint8))
            img.save(tmp_path / "imgs" / cls / f"{i}.png")
    with pytest.raises(DataError, match="no train/ and test/"):  # a flat folder must not serve as both splits
        load_data(str(tmp_path / "imgs"))
    d = load_data(str(tmp_path / "imgs"), single_split=True)
    x, y = d.tensors()
    assert x.shape == (6, 3, 6, 6) and y.tolist() == [0, 0, 0, 1, 1, 1] and d.num_classes == 2


def test_unknown_name_and_too_large_n(tmp_path):
    with pytest.raises(DataError, match="unknown dataset 'imagenet-42'"):
        load_data("imagenet-42")
    with pytest.raises(DataError, match="larger than"):
        load_data("demo", n=5000)
    with pytest.raises(DataError, match="not found"):
        load_data(str(tmp_path / "missing.pt"))
    with pytest.raises(DataError, match="split"):
        load_data("demo", split="val")
