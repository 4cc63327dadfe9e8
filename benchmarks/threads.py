"""Intra-op thread count against speed on this machine (issue #17, target 5). Not a test.

Times one forward+backward (input gradient) of the bundled demo model at several batch
sizes with 1, 2, ... ``--max-threads`` torch threads, interleaved (every thread count once per
round, ``--reps`` rounds, medians), and prints the slowdown of each count against the best one,
with the machine's CPU count and load, and the default ``--threads`` would pick here.

    python benchmarks/threads.py [--max-threads 2] [--reps 7]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch
import torch.nn.functional as F

from lcnn_audit.cli.common import default_threads
from lcnn_audit.loading import load_model


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--max-threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--batches", default="6,32,128")
    args = ap.parse_args()
    model = load_model("demo").eval()
    counts = list(range(1, args.max_threads + 1))
    out = {"cpus": os.cpu_count(), "load_average_1min": os.getloadavg()[0], "default_threads": default_threads(),
           "results": {}}
    for b in (int(v) for v in args.batches.split(",")):
        x = torch.rand(b, 1, 28, 28)
        y = torch.randint(0, 10, (b,))

        def fb(x=x, y=y):
            xr = x.clone().requires_grad_(True)
            torch.autograd.grad(F.cross_entropy(model(xr), y), xr)

        times = {n: [] for n in counts}
        for n in counts:
            torch.set_num_threads(n)
            fb()
        for _ in range(args.reps):
            for n in counts:
                torch.set_num_threads(n)
                t = time.perf_counter()
                fb()
                times[n].append(time.perf_counter() - t)
        med = {n: statistics.median(v) for n, v in times.items()}
        best = min(med.values())
        out["results"][b] = {f"{n} thread(s)": {"ms": med[n] * 1e3, "vs_best": med[n] / best} for n in counts}
    print(json.dumps(out, indent=2))
    print("| batch | " + " | ".join(f"{n} thread(s)" for n in counts) + " |")
    print("|---:|" + "---:|" * len(counts))
    for b, r in out["results"].items():
        print(f"| {b} | " + " | ".join(f"{v['ms']:.1f} ms ({v['vs_best']:.1f}×)" for v in r.values()) + " |")


if __name__ == "__main__":
    main()
