"""Re-create the bundled demo assets from Debian's dataset-fashion-mnist package.

    apt-get install dataset-fashion-mnist
    python scripts/make_assets.py

Writes, under lcnn_audit/assets/:
  fashion_mnist_sample.npz  1000 test + 1000 train images (uint8) and labels, seeded
  FASHION_MNIST_LICENSE     the dataset's MIT licence
  demo_cnn.safetensors      a small ReLU CNN (lcnn_audit.models.SmallCNN, width 16) trained on
                            the full 60k training set, with its recipe embedded
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from lcnn_audit.data import DEBIAN_FASHION_MNIST, load_data
from lcnn_audit.io import write_text, write_with
from lcnn_audit.loading import Normalize, save_model
from lcnn_audit.models import SmallCNN

ASSETS = Path(__file__).resolve().parents[1] / "lcnn_audit" / "assets"
RECIPE = {"arch": "small_cnn", "arch_kwargs": {"width": 16, "act": "relu"}, "normalize": [[0.2860], [0.3530]]}
LICENSE = """Fashion-MNIST (https://github.com/zalandoresearch/fashion-mnist)
The MIT License (MIT) Copyright (c) 2017 Zalando SE, https://tech.zalando.com

Permission is hereby granted, free of charge, to any person obtaining a copy of this software and
associated documentation files (the "Software"), to deal in the Software without restriction,
including without limitation the rights to use, copy, modify, merge, publish, distribute,
sublicense, and/or sell copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all copies or
substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED, INCLUDING BUT
NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND
NONINFRINGEMENT. IN NO EVENT SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM,
DAMAGES OR OTHER LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM, OUT
OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE SOFTWARE.
"""


def sample(root: Path, n: int, seed: int) -> None:
    arrays = {}
    for split in ("train", "test"):
        d = load_data("fashion-mnist", split=split, n=n, seed=seed, data_root=root)
        arrays[f"x_{split}"] = d.x[d.indices, 0].numpy()
        arrays[f"y_{split}"] = d.y[d.indices].numpy().astype(np.uint8)
        arrays[f"index_{split}"] = d.indices.numpy().astype(np.int32)
    write_with(ASSETS / "fashion_mnist_sample.npz", lambda p: np.savez_compressed(open(p, "wb"), **arrays))
    write_text(ASSETS / "FASHION_MNIST_LICENSE", LICENSE)


def train(root: Path, epochs: int, seed: int) -> None:
    torch.manual_seed(seed)
    tr, te = load_data("fashion-mnist", "train", data_root=root), load_data("fashion-mnist", "test", data_root=root)
    net = SmallCNN(**RECIPE["arch_kwargs"])
    model = torch.nn.Sequential(Normalize(*RECIPE["normalize"]), net)
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4, nesterov=True)
    steps = epochs * (len(tr) // 128)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=steps)
    gen = torch.Generator().manual_seed(seed)
    for ep in range(epochs):
        model.train()
        t0 = time.time()
        perm = torch.randperm(len(tr), generator=gen)
        for i in range(len(tr) // 128):
            b = tr.get(perm[i * 128:(i + 1) * 128])
            x = b.x
            flip = torch.rand(len(x), generator=gen) < 0.5  # horizontal flips only
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
            loss = F.cross_entropy(model(x), b.y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        model.eval()
        with torch.no_grad():
            correct = sum(int((model(b.x).argmax(1) == b.y).sum()) for b in te.batches(1000))
        print(f"epoch {ep + 1}: loss {loss.item():.3f} test acc {correct / len(te):.4f} ({time.time() - t0:.0f}s)")
    save_model(net, ASSETS / "demo_cnn.safetensors", RECIPE)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=DEBIAN_FASHION_MNIST)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(2)
    sample(args.root, args.n, args.seed)
    train(args.root, args.epochs, args.seed)
