"""ImageFolder decoding: serial in the main process against DataLoader workers.

Writes ``--n`` random JPEGs of ``--size``² pixels into a temporary ImageFolder and times one
pass of ``ImageData.batches`` (what every audit iterates) with ``LCNN_AUDIT_DATA_WORKERS=0``
(serial, the old behaviour) and with ``--workers`` workers, in one run, first decoding alone and
then with a simulated per-batch computation (a sleep, as while a GPU works), which the workers
overlap::

    python benchmarks/imagefolder.py                    # 256 images of 224x224, 2 workers
    python benchmarks/imagefolder.py --n 1024 --workers 8

The batches are checked to be identical.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from lcnn_audit.data import load_data
from lcnn_audit.decode import WORKERS_ENV


def make_folder(root: Path, n: int, size: int) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(n):
        d = root / f"class{i % 4}"
        d.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(d / f"{i}.jpg", quality=90)


def one_pass(path: str, workers: int, batch_size: int, compute_s: float) -> tuple[float, torch.Tensor]:
    os.environ[WORKERS_ENV] = str(workers)
    data = load_data(path, single_split=True)
    t0 = time.perf_counter()
    xs = []
    for b in data.batches(batch_size):
        xs.append(b.x)
        time.sleep(compute_s)  # the audit's work on the batch, e.g. waiting for the GPU
    return time.perf_counter() - t0, torch.cat(xs)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--compute-ms", type=float, nargs="*", default=[0.0, 250.0],
                    help="simulated per-batch work (a sleep, as while the GPU computes)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="lcnn-audit-bench-") as tmp:
        make_folder(Path(tmp), args.n, args.size)
        one_pass(tmp, 0, args.batch_size, 0.0)  # warm the page cache
        for ms in args.compute_ms:
            serial, a = one_pass(tmp, 0, args.batch_size, ms / 1000)
            parallel, b = one_pass(tmp, args.workers, args.batch_size, ms / 1000)
            assert torch.equal(a, b), "worker decoding changed the batches"
            print(json.dumps({"n": args.n, "size": args.size, "batch_size": args.batch_size, "compute_ms": ms,
                              "workers": args.workers, "serial_s": round(serial, 3), "workers_s": round(parallel, 3),
                              "speedup": round(serial / parallel, 2), "cpus": os.cpu_count(),
                              "load_avg_1min": round(os.getloadavg()[0], 1),
                              "machine": platform.processor() or platform.machine()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
