"""Run every torchvision classification family through the CLI and write the support table.

For one representative per family (``REPRESENTATIVES``; random weights, ``num_classes=10``, the
smallest input it takes, n = 2 samples) this runs, as a user would, through the Typer app:

    curvature                    default settings
    curvature --smooth-relu 1000
    attack --steps 2             PGD-L2, default eps sweep
    convert -o converted.safetensors
    curvature converted.safetensors

Each outcome is ``pass`` or a one-line ``error: ...`` with exit code 2 (a deliberate,
documented refusal); anything else (a traceback, another exit code) is a ``crash``.
``expected`` in the table says what each family must give; the zoo tests compare.

Families come from ``torchvision.models.list_models(module=torchvision.models)`` grouped by
:func:`family_of`, so a torchvision release with a new family makes
``tests/test_model_zoo.py::test_every_family_has_a_representative`` fail until it gets an entry.

    python scripts/model_zoo.py [--families resnet,vit] [--quick] [--json zoo.json] [--markdown docs/models.md]
    python scripts/model_zoo.py --families mnasnet --quick --json zoo.json --update   # rerun one family
    python scripts/model_zoo.py --json zoo.json --markdown docs/models.md --render     # table from a run

``--quick`` caps Lanczos at 5 steps without Frobenius probes and the conversion's spectral
norms at 50 steps (what the slow test runs); the table in docs/models.md is the full run.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

COMMANDS = ("curvature", "curvature_smooth", "attack", "convert", "curvature_converted")
QUICK_CURVATURE = ["--max-iter", "5", "--fro-probes", "0"]


@dataclass(frozen=True)
class Representative:
    """The model that stands for a family: torchvision name, smallest square input side it
    takes, extra constructor kwargs, and the outcome each command must give ("pass" or the
    text of a deliberate error)."""

    name: str
    size: int = 32
    kwargs: dict = field(default_factory=dict)
    expected: dict = field(default_factory=dict)  # command -> "pass" (default) or an error substring
    why: str = ""  # why the size/kwargs/expected differ from the default
    heavy: bool = False  # ≥ 50 s here (mostly building, saving and loading 70–140 M parameters): script only


REPRESENTATIVES: dict[str, Representative] = {
    "alexnet": Representative("alexnet", 63, why="11×11/4 stem and three 3×3/2 max-pools need 63×63"),
    "convnext": Representative("convnext_tiny"),
    "densenet": Representative("densenet121"),
    "efficientnet": Representative("efficientnet_b0"),
    "efficientnet_v2": Representative("efficientnet_v2_s"),
    "googlenet": Representative("googlenet"),
    "inception_v3": Representative("inception_v3", 75, why="its stem needs 75×75"),
    "maxvit": Representative("maxvit_t", 224, heavy=True,
                             why="every stage's feature map must split into 7×7 windows and the stem halves "
                                 "224 → 112 → … → 7; the input size is fixed"),
    "mnasnet": Representative("mnasnet0_5"),
    "mobilenet_v2": Representative("mobilenet_v2"),
    "mobilenet_v3": Representative("mobilenet_v3_small"),
    "regnet": Representative("regnet_y_400mf", why="the Y variant: RegNetX plus squeeze-excitation"),
    "resnet": Representative("resnet18"),
    "resnext": Representative("resnext50_32x4d"),
    "shufflenet_v2": Representative("shufflenet_v2_x0_5"),
    "squeezenet": Representative("squeezenet1_1"),
    "swin": Representative("swin_t", heavy=True),
    "swin_v2": Representative("swin_v2_t", heavy=True),
    "vgg": Representative("vgg11_bn", heavy=True),
    "vit": Representative("vit_b_16", 32, {"image_size": 32}, heavy=True,
                          why="image_size=32 (a 2×2 patch grid); the same VisionTransformer class at hidden size 16 "
                              "runs through the CLI in tests/test_convert_vit.py"),
    "wide_resnet": Representative("wide_resnet50_2", heavy=True),
}


def family_of(name: str) -> str:
    """torchvision model name → family: the base name without its size (resnet18 → resnet,
    vgg11_bn → vgg, regnet_y_400mf → regnet) but with its version (mobilenet_v3_small →
    mobilenet_v3, swin_v2_t → swin_v2, efficientnet_b0 → efficientnet, efficientnet_v2_s →
    efficientnet_v2)."""
    parts = name.split("_")
    head = re.sub(r"[\d.]+$", "", parts[0])
    if head == "wide" and len(parts) > 1:
        head = "wide_" + re.sub(r"\d+$", "", parts[1])
    version = next((p for p in parts[1:] if re.fullmatch(r"v\d+", p)), None)
    return f"{head}_{version}" if version else head


def families() -> dict[str, list[str]]:
    """Family → torchvision classification model names, from ``list_models``."""
    import torchvision

    out: dict[str, list[str]] = {}
    for name in torchvision.models.list_models(module=torchvision.models):
        out.setdefault(family_of(name), []).append(name)
    return out


def _outcome(res) -> str:
    text = " ".join(ln.strip() for ln in res.output.splitlines() if ln.strip())
    if res.exit_code == 0:
        return "pass"
    if res.exit_code == 2 and "error:" in text and "Traceback" not in res.output:
        return "error: " + text.split("error:", 1)[1].strip()[:300]
    exc = res.exception
    detail = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}" if exc and str(exc) else text[-300:]
    return f"crash (exit {res.exit_code}): {detail}"


def run_family(family: str, workdir: Path, quick: bool = False, commands=COMMANDS) -> dict:
    """Run the commands on the family's representative; returns {command: {outcome, seconds}}."""
    import torchvision
    from safetensors.torch import save_file
    from typer.testing import CliRunner

    from lcnn_audit.cli import app

    rep = REPRESENTATIVES[family]
    work = workdir / family
    work.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    t = time.perf_counter()
    net = torchvision.models.get_model(rep.name, weights=None, num_classes=10, **rep.kwargs).eval()
    ckpt, data = work / "model.safetensors", work / "data.pt"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, ckpt)
    torch.save({"x": torch.rand(2, 3, rep.size, rep.size), "y": torch.tensor([0, 1])}, data)
    del net
    build = time.perf_counter() - t
    model = [str(ckpt), "--arch", rep.name, "--arch-kwargs", json.dumps({"num_classes": 10, **rep.kwargs})]
    common = ["--data", str(data), "--device", "cpu"]
    curv = QUICK_CURVATURE if quick else []
    converted = work / "converted.safetensors"
    argv = {
        "curvature": ["curvature", *model, *common, *curv],
        "curvature_smooth": ["curvature", *model, *common, "--smooth-relu", "1000", *curv],
        "attack": ["attack", *model, *common, "--steps", "2"],
        "convert": ["convert", *model, *common, "-o", str(converted), *(["--max-iter", "50"] if quick else [])],
        "curvature_converted": ["curvature", str(converted), *common, *curv],
    }
    runner = CliRunner()
    out: dict = {"model": rep.name, "size": rep.size, "kwargs": rep.kwargs, "build_seconds": build}
    for cmd in commands:
        if cmd == "curvature_converted" and not converted.is_file():
            out[cmd] = {"outcome": "skipped: convert wrote no file", "seconds": 0.0}
            continue
        t = time.perf_counter()
        res = runner.invoke(app, argv[cmd])
        out[cmd] = {"outcome": _outcome(res), "seconds": time.perf_counter() - t}
    for p in work.iterdir():
        p.unlink()
    work.rmdir()
    return out


def matches(outcome: str, expected: str) -> bool:
    return outcome == "pass" if expected == "pass" else outcome.startswith("error:") and expected in outcome


def markdown(results: dict, meta: dict) -> str:
    head = ["family", "representative", "input"] + [c.replace("_", " ") for c in COMMANDS]
    lines = ["# Model support: torchvision classification zoo", "",
             f"Generated by `python scripts/model_zoo.py{' --quick' if meta['quick'] else ''} --markdown "
             f"docs/models.md` ({'quick settings' if meta['quick'] else 'default settings'}): one representative "
             "per family, "
             "random weights, `num_classes=10`, n = 2 samples at the smallest input each takes, every command run "
             "through the CLI. A cell is ✓ with the wall-clock seconds of the command (model loading included), or "
             "the deliberate one-line error. Commands: `curvature` (defaults"
             f"{'; quick: ' + ' '.join(QUICK_CURVATURE) if meta['quick'] else ''}), `curvature --smooth-relu 1000`, "
             "`attack --steps 2` (PGD-L2, the default eps sweep), `convert`, and `curvature` on the converted file.",
             "", f"Machine: {meta['machine']}; torch {meta['torch']}, torchvision {meta['torchvision']}; "
             f"total {meta['total_seconds']:.0f} s.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for fam in sorted(REPRESENTATIVES):
        if fam not in results:
            rep = REPRESENTATIVES[fam]
            lines.append(f"| {fam} | `{rep.name}` | {rep.size}×{rep.size} | "
                         + " | ".join(["not measured in this run"] * len(COMMANDS)) + " |")
            continue
        r = results[fam]
        cells = []
        for c in COMMANDS:
            o = r[c]["outcome"]
            cells.append(f"✓ {r[c]['seconds']:.1f}" if o == "pass" else o.replace("|", "\\|"))
        side = f"{r['size']}×{r['size']}"
        lines.append(f"| {fam} | `{r['model']}`{' ' + json.dumps(r['kwargs']) if r['kwargs'] else ''} | {side} | "
                     + " | ".join(cells) + " |")
    notes = [f"* **{f}**: {REPRESENTATIVES[f].why}." for f in sorted(REPRESENTATIVES) if REPRESENTATIVES[f].why]
    if notes:
        lines += ["", "Sizes and variants:", "", *notes]
    absent = sorted(set(REPRESENTATIVES) - set(results))
    if absent:
        lines += ["", f"Not measured in this run: {', '.join(absent)} (run `python scripts/model_zoo.py --families "
                      f"{','.join(absent)}`)."]
    lines += ["", "What the commands do on these families (details in docs/curvature.md and docs/convert.md):", "",
              "* ViT's attention (`nn.MultiheadAttention`, i.e. `scaled_dot_product_attention`) runs on the math "
              "SDPA kernel during curvature and attacks, and the output says so (Swin, Swin V2 and MaxViT compute "
              "their attention with explicit matmul and softmax); hardsigmoid/hardswish (MobileNetV3) run in their "
              "exact clamp form;",
              "* `--smooth-relu` replaces every ReLU-family activation (ReLU, ReLU6, Hardtanh, LeakyReLU, PReLU, "
              "Hardsigmoid, Hardswish), modules and functional calls, and names anything it cannot smooth "
              "(max-pooling);",
              "* `convert` swaps ReLU/ReLU6/GELU/SiLU activations for centred softplus and batch norms for "
              "γ-Lipschitz batch norms and spectrally normalises conv/linear layers; LayerNorm, GroupNorm and "
              "attention have no LCNN counterpart and are listed under *not converted* with the reason; a "
              "zero-initialised layer (ViT's head) is skipped (σ = 0).", ""]
    return "\n".join(lines)


def _meta(quick: bool, results: dict) -> dict:
    import os

    import torchvision

    total = sum(r["build_seconds"] + sum(r[c]["seconds"] for c in COMMANDS) for r in results.values())
    return {"machine": f"{platform.machine()}, {torch.get_num_threads()} thread(s) on {os.cpu_count()} shared cores",
            "torch": torch.__version__, "torchvision": torchvision.__version__, "threads": torch.get_num_threads(),
            "quick": quick, "total_seconds": total}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--families", help="comma-separated subset (default: all)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json")
    ap.add_argument("--markdown")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--update", action="store_true", help="merge into the results already in --json")
    ap.add_argument("--render", action="store_true", help="only write --markdown from the results in --json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    fams = families()
    missing = sorted(set(fams) - set(REPRESENTATIVES))
    if missing:
        print(f"error: families without a representative: {missing}; add them to REPRESENTATIVES", file=sys.stderr)
        return 2
    if args.render:
        saved = json.loads(Path(args.json).read_text())
        Path(args.markdown).write_text(markdown(saved["results"], saved["meta"]))
        return 0
    chosen = args.families.split(",") if args.families else sorted(fams)
    results, failures = {}, []
    if args.update and args.json and Path(args.json).is_file():
        results = json.loads(Path(args.json).read_text())["results"]
    with tempfile.TemporaryDirectory() as tmp:
        for fam in chosen:
            r = run_family(fam, Path(tmp), quick=args.quick)
            results[fam] = r
            if args.json:  # after every family, so an interrupted run keeps what it measured
                Path(args.json).write_text(json.dumps({"meta": _meta(args.quick, results), "results": results},
                                                      indent=1))
            print(f"{fam:16s} " + "  ".join(f"{c}={r[c]['outcome'][:60]} ({r[c]['seconds']:.1f}s)" for c in COMMANDS),
                  flush=True)
            for c in COMMANDS:
                if not matches(r[c]["outcome"], REPRESENTATIVES[fam].expected.get(c, "pass")):
                    failures.append(f"{fam} {c}: {r[c]['outcome']}")
    meta = _meta(args.quick, results)
    if args.markdown:
        Path(args.markdown).write_text(markdown(results, meta))
    for f in failures:
        print(f"unexpected: {f}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
