"""One GPU pass (issue #17, target 6): agreement, costs, throughput and default batch sizes.

Run through ``benchmarks/gpu_check.sh`` (which caps it at 5 minutes) on a machine with one
GPU, or with ``--device cpu --quick`` (what the test suite does, so that it cannot rot).

(a) Agreement: per-sample ‖∇f‖, ‖∇²f‖₂ and C_f of the bundled demo model (exact
    Gauss-Newton path) and of its softplus(β=1000) surrogate (Lanczos path), fp32 on the
    device with TF32 off against fp64 on the CPU; max relative error per field, and a
    pass/fail per sample: within 2× the CPU fp32 error plus the tolerance (1e-4 exact path;
    2e-3 Lanczos, whose tolerance is 1e-3).
(b) Costs: one batched HVP / one forward+backward (demo softplus, ResNet-18 softplus),
    one batched curvature call against a per-sample loop, curvature throughput of a
    CIFAR-shaped ResNet-18 (3×32×32, 10 classes, random weights) on the exact ReLU path and
    on the softplus Lanczos path (with the projected time for 10 000 images), and PGD-L2
    throughput (10 steps) on the demo model and ResNet-18.
(c) Default batch sizes: the peak memory per sample of each workload is measured on a
    probe batch and the batch that fills half of the free GPU memory (a power of two,
    16..4096) is printed; on the CPU the CLI defaults are printed.
(d) One Markdown table of everything, for docs/benchmarks.md.

    python benchmarks/gpu_check.py [--device cuda] [--quick] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from curvature import bench_batched_vs_loop, bench_hvp_ratio, softplus_cnn, sync  # noqa: E402
from curvature import timeit as timed  # noqa: E402

from lcnn_audit import allocator
from lcnn_audit.attacks import PGD  # noqa: E402
from lcnn_audit.data import load_data  # noqa: E402
from lcnn_audit.geometry import CurvatureOptions, compute_geometry  # noqa: E402
from lcnn_audit.geometry.state import measurement_state  # noqa: E402
from lcnn_audit.loading import load_model  # noqa: E402

FIELDS = ("grad_norm", "hessian_norm", "curvature")
TOLERANCE = {"gauss-newton": 1e-4, "lanczos": 2e-3}


def geometry(model, x, y, opts, dtype="float32"):
    with measurement_state(model, dtype=dtype, smooth_relu_beta=opts.smooth_relu) as prep:
        xx = x.to(prep.dtype)
        fields, method = compute_geometry(prep.model, xx, y, torch.arange(len(x), device=x.device), opts)
    return fields, method


def agreement(dev, n: int) -> list[dict]:
    """(a): device fp32 (TF32 off) against CPU fp64, per field, on the demo model.

    fp32 itself costs accuracy on some samples (a near-tie of a ReLU or max-pool switch moves
    a sample into another linear region), so CPU fp32 is measured against fp64 too: a field
    passes when the device's error is within 2× the CPU fp32 error plus the tolerance, on every
    sample."""
    data = load_data("demo", n=n)
    b = data.get(torch.arange(len(data)))
    x, y = b.x, b.y
    rows = []
    for label, opts in (("demo, exact (ReLU)", CurvatureOptions(jacobian="off", fro_probes=0)),
                        ("demo, softplus β=1000 (Lanczos)",
                         CurvatureOptions(jacobian="off", fro_probes=0, smooth_relu=1000.0))):
        ref, _ = geometry(load_model("demo"), x, y, opts, "float64")
        cpu, _ = geometry(load_model("demo"), x, y, opts, "float32")
        got, method = geometry(load_model("demo").to(dev), x.to(dev), y.to(dev), opts, "float32")
        tol = TOLERANCE[method]
        errs, cpu_errs, ok = {}, {}, True
        for f in FIELDS:
            r = ref[f].double()
            e_dev = (got[f].double().cpu() - r).abs() / r.abs().clamp_min(1e-12)
            e_cpu = (cpu[f].double() - r).abs() / r.abs().clamp_min(1e-12)
            errs[f], cpu_errs[f] = float(e_dev.max()), float(e_cpu.max())
            ok &= bool((e_dev <= 2 * e_cpu + tol).all())
        rows.append({"case": label, "method": method, "n": len(x), "max_rel_error": errs,
                     "cpu_fp32_max_rel_error": cpu_errs, "tolerance": tol, "pass": ok})
    return rows


def resnet(dev, classes=10):
    import torchvision

    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=classes).to(dev).eval()


def curvature_throughput(model, dev, n, batch, opts) -> dict:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 3, 32, 32, generator=g).to(dev)
    y = torch.randint(0, 10, (n,), generator=g).to(dev)
    hvps = []
    with measurement_state(model, smooth_relu_beta=opts.smooth_relu) as prep:
        def run():
            hvps.clear()
            for i in range(0, n, batch):
                f, method = compute_geometry(prep.model, x[i:i + batch], y[i:i + batch],
                                             torch.arange(i, min(i + batch, n), device=dev), opts)
                hvps.append(f["iterations"].double())
            return method

        method = run()  # warm-up, and the method used
        t = timed(run, dev, reps=1, warmup=0)
    ips = n / t
    return {"method": method, "n": n, "batch": batch, "images_per_s": ips, "s_per_10k": 1e4 / ips,
            "hvps_mean": float(torch.cat(hvps).mean())}


def pgd_throughput(model, x, y, dev) -> dict:
    for p in model.parameters():
        p.requires_grad_(False)
    attack = PGD("l2", 0.5, steps=10)
    t = timed(lambda: attack(model, x, y), dev, reps=1, warmup=1)
    return {"batch": len(x), "steps": 10, "images_per_s": len(x) / t}


def pick_batch(dev, workload, per_call: int) -> dict:
    """(c): the batch that fills half of the free memory, from the peak memory of a probe."""
    if dev.type != "cuda":
        return {"batch": 128, "basis": "CLI default (no GPU memory to size from)"}
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(dev)
    base = torch.cuda.memory_allocated(dev)
    workload(per_call)
    sync(dev)
    per_sample = max(1, (torch.cuda.max_memory_allocated(dev) - base) // per_call)
    free, _ = torch.cuda.mem_get_info(dev)
    b = 16
    while b * 2 * per_sample <= 0.5 * free and b < 4096:
        b *= 2
    return {"batch": b, "basis": f"{per_sample / 2**20:.2f} MiB/sample peak, {free / 2**30:.1f} GiB free"}


def batch_sizes(dev, quick: bool) -> dict:
    probe = 4 if quick else 32
    g = torch.Generator().manual_seed(0)
    xr = torch.rand(probe, 3, 32, 32, generator=g).to(dev)
    yr = torch.randint(0, 10, (probe,), generator=g).to(dev)
    rn = resnet(dev)

    def curv(opts):
        def run(b):
            with measurement_state(rn, smooth_relu_beta=opts.smooth_relu) as prep:
                compute_geometry(prep.model, xr[:b], yr[:b], torch.arange(b, device=dev), opts)
        return run

    def pgd(b):
        PGD("l2", 0.5, steps=2)(rn, xr[:b], yr[:b])

    return {"curvature, ReLU exact": pick_batch(dev, curv(CurvatureOptions()), probe),
            "curvature, softplus Lanczos": pick_batch(dev, curv(CurvatureOptions(smooth_relu=1000.0)), probe),
            "attack (PGD)": pick_batch(dev, pgd, probe)}


def markdown(r: dict) -> str:
    m = r["machine"]
    rows = [f"GPU check on {m['device']} (torch {m['torch']}, {m['threads']} CPU thread(s)"
            f"{', quick sizes' if r['quick'] else ''}):", "", "| check | result |", "|---|---|"]
    for a in r["a_agreement"]:
        e, c = a["max_rel_error"], a["cpu_fp32_max_rel_error"]
        rows.append(f"| (a) {a['case']}, {a['n']} samples: max rel. error vs fp64 CPU of ‖∇f‖ / ‖∇²f‖ / C, "
                    f"device fp32 (CPU fp32) | {e['grad_norm']:.1e} / {e['hessian_norm']:.1e} / "
                    f"{e['curvature']:.1e} ({c['grad_norm']:.1e} / {c['hessian_norm']:.1e} / {c['curvature']:.1e}); "
                    f"{'pass' if a['pass'] else 'FAIL'} |")
    for k, v in r["b_hvp_cost"].items():
        rows.append(f"| (b) HVP / forward+backward, {k} | {v['hvp_over_fb']:.2f} "
                    f"(FB {v['forward_backward_s'] * 1e3:.1f} ms) |")
    bl = r["b_batched_vs_loop"]
    rows.append(f"| (b) batched vs looped curvature, softplus CNN, batch {bl['n']} | {bl['speedup']:.1f}× "
                f"({bl['batched_s']:.2f} s vs {bl['loop_s']:.2f} s) |")
    for k, v in r["b_curvature_resnet18"].items():
        rows.append(f"| (b) ResNet-18 3×32×32 curvature, {k} ({v['method']}, batch {v['batch']}, "
                    f"{v['hvps_mean']:.1f} HVPs/sample) | {v['images_per_s']:.0f} img/s, "
                    f"{v['s_per_10k']:.0f} s per 10 000 |")
    for k, v in r["b_pgd"].items():
        rows.append(f"| (b) PGD-L2 10 steps, {k}, batch {v['batch']} | {v['images_per_s']:.0f} img/s |")
    for k, v in r["c_batch_sizes"].items():
        rows.append(f"| (c) default batch, {k} | {v['batch']} ({v['basis']}) |")
    rows.append(f"| wall time | {r['seconds']:.0f} s |")
    return "\n".join(rows)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--quick", action="store_true", help="tiny sizes (the CPU test)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    torch.set_num_threads(args.threads)
    allocator.tune_host_allocator()  # as every lcnn-audit command does (LCNN_AUDIT_MALLOC=system: off)
    dev = torch.device(args.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda but no CUDA device is visible; use --device cpu --quick")
    gpu = dev.type == "cuda"
    q = args.quick
    r = {"quick": q, "machine": {"platform": platform.platform(), "torch": torch.__version__,
                                 "threads": torch.get_num_threads(),
                                 "device": torch.cuda.get_device_name(dev) if gpu else "cpu"}}
    r["a_agreement"] = agreement(dev, 8 if q else 256)
    r["c_batch_sizes"] = batch_sizes(dev, q)
    b_relu = r["c_batch_sizes"]["curvature, ReLU exact"]["batch"] if gpu else 16
    b_soft = r["c_batch_sizes"]["curvature, softplus Lanczos"]["batch"] if gpu else 16
    b_pgd = r["c_batch_sizes"]["attack (PGD)"]["batch"] if gpu else 16

    g = torch.Generator().manual_seed(0)
    nb = 8 if q else 64
    xs, ys = torch.rand(nb, 1, 28, 28, generator=g).to(dev), torch.randint(0, 10, (nb,), generator=g).to(dev)
    xr, yr = torch.rand(nb, 3, 32, 32, generator=g).to(dev), torch.randint(0, 10, (nb,), generator=g).to(dev)
    r["b_hvp_cost"] = {"softplus CNN 1×28×28": bench_hvp_ratio(softplus_cnn().to(dev), xs, ys, dev)}
    with measurement_state(resnet(dev), smooth_relu_beta=1000.0) as prep:
        r["b_hvp_cost"]["ResNet-18 softplus 3×32×32"] = bench_hvp_ratio(prep.model, xr, yr, dev)
    bl = bench_batched_vs_loop(softplus_cnn().to(dev), xs, ys, dev, CurvatureOptions(jacobian="off"))
    r["b_batched_vs_loop"] = {**bl, "n": nb}

    rn = resnet(dev)
    n_relu = 32 if q else (10_000 if gpu else 256)
    n_soft = 4 if q else (1024 if gpu else 32)
    r["b_curvature_resnet18"] = {
        "ReLU exact": curvature_throughput(rn, dev, n_relu, min(b_relu, n_relu), CurvatureOptions()),
        "softplus β=1000": curvature_throughput(rn, dev, n_soft, min(b_soft, n_soft),
                                                CurvatureOptions(smooth_relu=1000.0)),
    }
    demo = load_model("demo").to(dev).eval()
    npgd = 16 if q else (4096 if gpu else 256)
    r["b_pgd"] = {"demo CNN": pgd_throughput(demo, torch.rand(npgd, 1, 28, 28, generator=g).to(dev),
                                             torch.randint(0, 10, (npgd,), generator=g).to(dev), dev)}
    nr = min(b_pgd, 8 if q else 1024)
    r["b_pgd"]["ResNet-18"] = pgd_throughput(rn, torch.rand(nr, 3, 32, 32, generator=g).to(dev),
                                             torch.randint(0, 10, (nr,), generator=g).to(dev), dev)
    r["seconds"] = time.perf_counter() - t0
    print(json.dumps(r, indent=2))
    print()
    print(markdown(r))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(r, fh, indent=2)
    return 0 if all(a["pass"] for a in r["a_agreement"]) else 1


if __name__ == "__main__":
    sys.exit(main())
