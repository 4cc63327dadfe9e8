"""Seconds per 1 000 samples for each attack (and for the default ``attack`` audit).

Runs on the bundled demo CNN (Fashion-MNIST, 28×28, ~30k parameters) and its data
sample, so it needs no downloads::

    python benchmarks/attacks.py                       # CPU, all attacks, 128 samples
    python benchmarks/attacks.py --device cuda --n 1000
    python benchmarks/attacks.py --attacks pgd-l2,fgsm --markdown

Each attack runs on the same ``--n`` samples in batches of ``--batch-size`` after one
warm-up batch; the time is scaled to 1 000 samples. AutoAttack's time depends on how many
points survive its first sub-attacks, so it is reported with the robust accuracy reached.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import torch

from lcnn_audit import allocator, load_data, load_model
from lcnn_audit.attacks import FGSM, PGD, AttackOptions, AutoAttack, CarliniWagnerL2, DeepFool, attack_audit

ATTACKS = {
    "pgd-l2": lambda: PGD("l2", 0.1, steps=10),
    "pgd-linf": lambda: PGD("linf", 8 / 255, steps=10),
    "fgsm": lambda: FGSM("linf", 8 / 255),
    "deepfool": lambda: DeepFool(steps=50),
    "cw": lambda: CarliniWagnerL2(steps=100, search_steps=5),
    "autoattack": lambda: AutoAttack("linf", 8 / 255, version="standard"),
}


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            names = [ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} logical cores, {torch.get_num_threads()} torch threads"


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_attack(name, model, x, y, batch_size, device) -> dict:
    atk = ATTACKS[name]()
    warm = min(8, x.shape[0])
    atk(model, x[:warm].to(device), y[:warm].to(device))
    sync(device)
    t0 = time.perf_counter()
    robust = 0
    for lo in range(0, x.shape[0], batch_size):
        xb, yb = x[lo:lo + batch_size].to(device), y[lo:lo + batch_size].to(device)
        xa = atk(model, xb, yb, torch.arange(lo, lo + xb.shape[0], device=device))
        with torch.no_grad():
            robust += int((model(xa).argmax(1) == yb).sum())
    sync(device)
    sec = time.perf_counter() - t0
    return {"attack": name, "setting": repr(atk), "n": x.shape[0], "seconds": sec,
            "seconds_per_1000": sec / x.shape[0] * 1000, "robust_accuracy": robust / x.shape[0]}


def time_audit(model, data, batch_size, device) -> dict:
    t0 = time.perf_counter()
    res = attack_audit(model, data, AttackOptions(), batch_size=batch_size)
    sync(device)
    sec = time.perf_counter() - t0
    return {"attack": "audit (pgd-l2 sweep + masking checks)", "setting": "lcnn-audit attack defaults",
            "n": len(data), "seconds": sec, "seconds_per_1000": sec / len(data) * 1000,
            "robust_accuracy": res.summary["worst_case"]["l2"]["0.2"]["robust_accuracy"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--attacks", default=",".join(list(ATTACKS) + ["audit"]))
    ap.add_argument("--json", default=None, help="also write the rows here")
    ap.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
        allocator.tune_host_allocator()  # as every lcnn-audit command does (LCNN_AUDIT_MALLOC=system: off)
    device = torch.device(args.device)
    model = load_model("demo", device=device)
    for p in model.parameters():
        p.requires_grad_(False)
    data = load_data("demo", n=args.n, seed=0)
    x, y = data.tensors()
    rows = []
    for name in [a.strip() for a in args.attacks.split(",") if a.strip()]:
        row = time_audit(model, data, args.batch_size, device) if name == "audit" else \
            time_attack(name, model, x, y, args.batch_size, device)
        rows.append(row)
        if not args.markdown:
            print(f"{row['attack']:<40} {row['seconds_per_1000']:10.1f} s/1000   robust {row['robust_accuracy']:.3f}",
                  flush=True)
    header = {"device": describe_device(device), "torch": torch.__version__, "n": args.n,
              "batch_size": args.batch_size, "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None}
    if args.markdown:
        print(f"device: {header['device']}; torch {header['torch']}; n = {args.n}, batch {args.batch_size}\n")
        print("| attack | setting | s / 1000 samples | robust acc. |")
        print("|---|---|---:|---:|")
        for r in rows:
            print(f"| {r['attack']} | `{r['setting']}` | {r['seconds_per_1000']:.1f} | {r['robust_accuracy']:.3f} |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"header": header, "rows": rows}, fh, indent=2)


if __name__ == "__main__":
    main()
