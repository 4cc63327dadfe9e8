"""Reproduce the LCNN paper's claims on the full Fashion-MNIST (issue #7).

Trains a small CNN (``small_cnn``: 4 conv layers with BN, max-pooling, a linear layer) six
ways, plus a retrofit, then audits each one and writes ``docs/results/fashion-mnist.md``:

1. ``standard``        softplus β = 1000 (the paper's baseline), weight decay 5e-4
2. ``lcnn``            LCNN architecture (centered softplus, γ-Lipschitz BN, spectral norms)
                       with λβ = 1e-4, λγ = 1e-5 (LCNN eq. 5, arXiv appendix E)
3. ``gradreg``         standard + λ‖∇ₓℓ‖², λ = 1e-3
4. ``lcnn_gradreg``    LCNN + GradReg with the same constants
5. ``cure``            standard + CURE λ‖∇ℓ(x+hz) − ∇ℓ(x)‖², h ramped up over the first epoch
6. ``pgd_at``          PGD adversarial training, L2, eps 0.1, 3 steps (as the paper)
7. ``standard_to_lcnn`` the trained standard model converted (``lcnn-audit convert``'s
                       function, default options) and fine-tuned with the LCNN penalty

All share the paper's optimiser (SGD, momentum 0.9, lr 0.1, ×0.1 at 75 % and 87.5 % of
training, weight decay 5e-4), batch 128, no augmentation (Fashion-MNIST is centred), the
same seed. Audits, on seeded test/train subsets: accuracy (full test set), mean ‖∇f‖,
‖∇²f‖₂ and curvature (Table 1), PGD-L2 robust accuracy over an eps sweep (Table 2), Δtt
(Table 3), the gradient-robustness figure (Fig. 2), and training time per epoch relative
to the standard model.

Budget. The defaults (width 8, 3 epochs, 500-sample audits) are sized for about 45 min on
2 otherwise idle CPU cores: a standard epoch (60k images) takes about 25 s there (54 ms per
batch of 128), and per-batch costs relative to it are about 2× (LCNN), 2.7× (GradReg),
5.5× (LCNN + GradReg), 4.5–5.7× (CURE) and 5× (PGD-AT), so the trainings cost about 68
standard epochs (~28 min), plus per-epoch evaluation and the audits. ``--quick`` runs every
step on a tiny subset for one epoch and prints the extrapolated training time for the
machine it runs on (it said 61 min on one thread of a busy shared machine); if that is too
long, ``--epochs 2`` cuts the training by a third.

Resumable: each model's weights go to ``OUT/NAME.safetensors``; a model whose file exists
is not retrained, an interrupted training resumes exactly from ``OUT/NAME.run/`` and
finished audits are cached in ``OUT/NAME.audit.json``. Rerun the same command to continue.

    python experiments/fashion_mnist.py              # full run -> docs/results/fashion-mnist.md
    python experiments/fashion_mnist.py --quick      # smoke test -> runs/fashion-mnist-quick/
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from lcnn_audit.attacks import AttackOptions, attack_audit
from lcnn_audit.attacks.stats import clopper_pearson
from lcnn_audit.convert import ConvertOptions, convert_checkpoint
from lcnn_audit.data import load_data
from lcnn_audit.geometry import CurvatureOptions
from lcnn_audit.geometry.robustness import GradRobustnessOptions, discrepancy, grad_robustness
from lcnn_audit.io import write_json, write_text
from lcnn_audit.loading import load_model
from lcnn_audit.penalties import PenaltyConfig
from lcnn_audit.results import environment
from lcnn_audit.training import AdversarialTraining, TrainConfig, evaluate, init_model, train

sys.path.insert(0, str(Path(__file__).resolve().parent))  # experiments/ (figures.py)
from figures import fig2_plot  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
LCNN = {"lambda_beta": 1e-4, "lambda_gamma": 1e-5}  # arXiv appendix E
GRADREG = 1e-3  # arXiv appendix E
# CURE: h is an L2 step in [0, 1] pixel space (docs/finetune.md). A pilot (10k training images, 3 epochs, width
# 8) gave test accuracy 85.7 % (standard), 82.4 % (λ 0.1, h 0.5), 76.7 % (λ 1, h 0.5), 76.6 % (λ 1, h 0.1): the
# CURE paper's λ of order 1 costs far more than its reported ~1 point here, so λ = 0.1.
CURE = {"cure": 0.1, "cure_h": 0.5}
PGD_AT = AdversarialTraining(norm="l2", eps=0.1, steps=3)  # LCNN §5
DEFAULT_EPOCHS, DEFAULT_FINETUNE_EPOCHS = 3, 1
EPS_SWEEP = (0.05, 0.1, 0.15, 0.2, 0.5, 1.0)  # the paper's 0.05-0.2 (Table 2) plus larger radii for 28x28 images
PAPER_EPS = (0.05, 0.1, 0.15, 0.2)  # Table 2's range: the claim is judged there only


@dataclass
class Spec:
    name: str
    label: str
    convert: bool = False
    penalties: dict = field(default_factory=dict)
    adversarial: AdversarialTraining | None = None
    parent: str | None = None  # fine-tune this model's output instead of training from scratch


SPECS = [
    Spec("standard", "Standard (softplus β=1000)"),
    Spec("lcnn", "LCNN", convert=True, penalties=LCNN),
    Spec("gradreg", "GradReg", penalties={"gradreg": GRADREG}),
    Spec("lcnn_gradreg", "LCNN + GradReg", convert=True, penalties={**LCNN, "gradreg": GRADREG}),
    Spec("cure", "CURE", penalties=CURE),
    Spec("pgd_at", "PGD adversarial training", adversarial=PGD_AT),
    Spec("standard_to_lcnn", "Standard → convert → LCNN fine-tune", penalties=LCNN, parent="standard"),
]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=None, help="run folder (default runs/fashion-mnist[-quick])")
    p.add_argument("--doc", type=Path, default=None,
                   help="Markdown report (default docs/results/fashion-mnist.md; with --quick: OUT/fashion-mnist.md)")
    p.add_argument("--data-root", type=Path, default=None, help="Fashion-MNIST location (default: ./data, then "
                   "Debian's /usr/share/datasets/fashion-mnist)")
    p.add_argument("--quick", action="store_true", help="tiny subset, 1 epoch: checks every step end to end")
    p.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS, help="epochs of each from-scratch model")
    p.add_argument("--finetune-epochs", type=int, default=DEFAULT_FINETUNE_EPOCHS,
                   help="epochs of the convert-then-fine-tune model")
    p.add_argument("--finetune-lr", type=float, default=0.01)
    p.add_argument("--width", type=int, default=8, help="small_cnn width (channels: w, w, 2w, 2w)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--audit-n", type=int, default=500, help="test (and train) samples for the audits")
    p.add_argument("--robustness-n", type=int, default=256, help="test samples for the gradient-robustness figure")
    p.add_argument("--pgd-steps", type=int, default=10, help="PGD steps of the robustness sweep")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--only", default=None, help="comma-separated model names to run (default: all)")
    p.add_argument("--reaudit", action="store_true", help="recompute audits even if cached")
    args = p.parse_args(argv)
    if args.quick:
        args.epochs, args.finetune_epochs = 1, 1
        args.audit_n, args.robustness_n = min(args.audit_n, 64), min(args.robustness_n, 32)
    args.out = args.out or ROOT / "runs" / ("fashion-mnist-quick" if args.quick else "fashion-mnist")
    args.doc = args.doc or (args.out / "fashion-mnist.md" if args.quick else ROOT / "docs/results/fashion-mnist.md")
    return args


def log(msg: str) -> None:
    print(time.strftime("%H:%M:%S"), msg, flush=True)


# --------------------------------------------------------------------------- training


def train_config(args, spec: Spec, epochs: int, lr: float) -> TrainConfig:
    return TrainConfig(epochs=epochs, batch_size=args.batch_size, lr=lr, momentum=0.9, weight_decay=5e-4,
                       schedule="multistep", augment="none", penalties=PenaltyConfig(
                           **spec.penalties, cure_h_warmup=1.0 if "cure" in spec.penalties else 0.0),
                       adversarial=spec.adversarial, curvature_n=16 if args.quick else 128, seed=args.seed)


def train_one(args, spec: Spec, train_data, test_data) -> Path:
    path = args.out / f"{spec.name}.safetensors"
    if path.exists():
        log(f"{spec.name}: trained model exists ({path.name}), skipping training")
        return path
    run_dir = args.out / f"{spec.name}.run"
    if spec.parent is None:
        arch = {"width": args.width, "act": "softplus", "beta": 1000.0}
        model = init_model("small_cnn", arch, normalize="fashion-mnist", dataset="fashion-mnist", seed=args.seed,
                           device=args.device, convert=spec.convert, input_shape=train_data.input_shape)
        cfg = train_config(args, spec, args.epochs, 0.1)
    else:
        parent_path = args.out / f"{spec.parent}.safetensors"
        if not parent_path.exists():
            raise SystemExit(f"{spec.name} fine-tunes {spec.parent}, which is not trained yet ({parent_path}); "
                             f"run --only {spec.parent} first")
        parent = load_model(parent_path, device=args.device)
        probe = load_data("fashion-mnist", "test", n=min(len(test_data), 1000), seed=args.seed,
                          data_root=args.data_root)
        model, conv = convert_checkpoint(parent, ConvertOptions(), data=probe)
        write_json(args.out / f"{spec.name}.convert.json", conv.to_dict())
        log(f"{spec.name}: converted {spec.parent}: accuracy {conv.summary['accuracy_before']:.4f} -> "
            f"{conv.summary['accuracy_after']:.4f} on {len(probe)} test samples; {conv.summary['counts']}")
        cfg = train_config(args, spec, args.finetune_epochs, args.finetune_lr)
    log(f"{spec.name}: training {cfg.epochs} epoch(s) on {len(train_data)} samples")

    def on_epoch(rec):
        pen = ", ".join(f"{k} {v:.4g}" for k, v in rec["penalties"].items())
        log(f"  {spec.name} epoch {rec['epoch']}: loss {rec['train_loss']:.4f} [{pen}] test acc "
            f"{rec.get('test_accuracy', float('nan')):.4f} curvature {rec.get('curvature', float('nan')):.4g} "
            f"({rec['seconds']:.0f}s)")

    res = train(model, train_data, test_data, cfg, run_dir=run_dir, resume=True, output=path,
                run_config={"experiment": "fashion_mnist", "model": spec.name}, on_epoch=on_epoch)
    if not res.complete:
        log("interrupted; rerun the same command to resume")
        sys.exit(130)
    return path


# --------------------------------------------------------------------------- audits


def audit_one(args, spec: Spec, path: Path, train_data, test_data) -> dict:
    cache = args.out / f"{spec.name}.audit.json"
    if cache.exists() and not args.reaudit:
        return json.loads(cache.read_text())
    log(f"{spec.name}: auditing")
    model = load_model(path, device=args.device)
    t0 = time.perf_counter()
    copts = CurvatureOptions(tol=1e-3, max_iter=40, fro_probes=0, jacobian="off", seed=args.seed)
    test_sub = load_data("fashion-mnist", "test", n=args.audit_n, seed=args.seed + 1, data_root=args.data_root)
    train_sub = load_data("fashion-mnist", "train", n=args.audit_n, seed=args.seed + 2, data_root=args.data_root)
    disc = discrepancy(model, train_sub, test_sub, copts, batch_size=128)
    att = attack_audit(model, test_sub, AttackOptions(attacks=("pgd",), norms=("l2",), eps=EPS_SWEEP,
                                                      steps=args.pgd_steps, restarts=1, masking_checks=False,
                                                      seed=args.seed), batch_size=256)
    rob_sub = load_data("fashion-mnist", "test", n=args.robustness_n, seed=args.seed + 3, data_root=args.data_root)
    gr = grad_robustness(model, rob_sub, GradRobustnessOptions(draws=2, curvature=copts), batch_size=128)
    log_path = args.out / f"{spec.name}.run" / "log.json"
    hist = json.loads(log_path.read_text())["summary"]["epochs"] if log_path.exists() else []
    out = {
        "name": spec.name, "label": spec.label,
        "accuracy": evaluate(model, test_data, 512)["accuracy"],
        "test": {k: disc.summary["test"][k]["mean"] for k in ("grad_norm", "hessian_norm", "curvature")},
        "train": {k: disc.summary["train"][k]["mean"] for k in ("grad_norm", "hessian_norm", "curvature")},
        "delta_tt": disc.summary["delta_tt"],
        "delta_tt_train": disc.summary["delta_tt_train"],
        "audit_n": args.audit_n,
        "not_converged": disc.summary["test"].get("not_converged", 0) + disc.summary["train"].get("not_converged", 0),
        "clean_accuracy_audit": att.summary["clean_accuracy"],
        "robust": {f"{r['eps']:g}": r["robust_accuracy"] for r in att.summary["results"] if r["attack"] == "pgd"},
        "attack_flags": att.summary.get("flag_messages", []),
        "grad_robustness": {k: gr.summary[k] for k in ("curves", "delta", "curvature")},
        "epoch_seconds": [h["seconds"] for h in hist],
        "history": hist,
        "audit_seconds": time.perf_counter() - t0,
    }
    write_json(cache, out)
    return out


# --------------------------------------------------------------------------- report


def pct(v: float) -> str:
    return "–" if v is None or math.isnan(v) else f"{100 * v:.2f}"


def num(v: float) -> str:
    if v is None or math.isnan(v):
        return "–"
    return f"{v:.3g}" if abs(v) >= 1e-3 else f"{v:.2e}"


def mean_epoch_seconds(a: dict) -> float:
    s = a["epoch_seconds"]
    return sum(s) / len(s) if s else float("nan")


def claims(results: dict[str, dict]) -> list[str]:
    """The paper's claims, each judged by a stated numeric criterion on the measured numbers."""
    out = []
    std, lcnn = results.get("standard"), results.get("lcnn")
    if std and lcnn:
        ratio = lcnn["test"]["curvature"] / std["test"]["curvature"]
        drop = 100 * (std["accuracy"] - lcnn["accuracy"])
        ok = ratio <= 0.5 and drop <= 1.0
        out.append(f"**LCNN lowers curvature substantially with ≤ 1 point of accuracy lost** — "
                   f"{'holds' if ok else 'does not hold'} here. Criterion: mean test curvature at most half of the "
                   f"standard model's and accuracy drop ≤ 1 point. Measured: curvature ×{ratio:.3g} "
                   f"({num(std['test']['curvature'])} → {num(lcnn['test']['curvature'])}), accuracy "
                   f"{'drop' if drop >= 0 else 'gain'} {abs(drop):.2f} points.")
    six = {k: v for k, v in results.items() if k != "standard_to_lcnn"}
    lg, at = results.get("lcnn_gradreg"), results.get("pgd_at")
    if lg and at and len(six) > 1:
        lowest = min(six.values(), key=lambda a: a["test"]["curvature"])
        eps = sorted((set(lg["robust"]) & set(at["robust"])) & {f"{e:g}" for e in PAPER_EPS}, key=float)
        n = lg.get("audit_n", 500)
        state, parts = "holds", []
        for e in eps:
            ka, kb = round(at["robust"][e] * n), round(lg["robust"][e] * n)
            (la, ha), (lb, hb) = clopper_pearson(ka, n), clopper_pearson(kb, n)
            gap = 100 * (ka - kb) / n
            parts.append(f"{e}: {gap:+.1f} (PGD-AT [{100 * la:.1f}, {100 * ha:.1f}], LCNN + GradReg "
                         f"[{100 * lb:.1f}, {100 * hb:.1f}])")
            if gap > 2.3:
                state = "does not hold" if hb < la else ("inconclusive" if state == "holds" else state)
        state = state if lowest["name"] == "lcnn_gradreg" else "does not hold"
        out.append(f"**LCNN + GradReg has the lowest curvature and robustness on par with adversarial training** — "
                   f"{state} here. Criterion: lowest mean test curvature of the six models, and on the paper's ε "
                   f"range (0.05–0.2) PGD-AT − LCNN + GradReg ≤ 2.3 points (the paper's largest gap) at every ε; "
                   f"'does not hold' where a larger gap has disjoint Clopper-Pearson 95 % intervals, "
                   f"'inconclusive' where they overlap. Measured: lowest curvature is {lowest['label']} "
                   f"({num(lowest['test']['curvature'])}; LCNN + GradReg {num(lg['test']['curvature'])}); gap per "
                   f"eps, points: " + "; ".join(parts) + ".")
    if six:
        rows = []
        stable = 0
        for a in six.values():
            d = a.get("delta_tt_train", a["delta_tt"])
            ok = d["curvature"] * 71 <= min(d["grad_norm"], d["hessian_norm"])
            stable += ok
            rows.append(f"{a['label']} ({num(d['curvature'])} vs {num(d['grad_norm'])}/{num(d['hessian_norm'])})")
        holds = stable > len(six) / 2
        out.append(f"**Curvature's train-test discrepancy is 2–3 orders of magnitude smaller** — "
                   f"{'holds' if holds else 'does not hold'} here ({stable} of {len(six)} models). Criterion, per "
                   f"model: with Δtt = |test − train| / train (the form of the printed Table 3), Δtt of mean "
                   f"curvature at most 1/71 of the smaller of Δtt(‖∇f‖) and Δtt(‖∇²f‖) (71: the paper's own weakest "
                   f"row); the claim holds if it holds for most models. Note that these 3-epoch models barely "
                   f"overfit; experiments/overfit.py tests the claim where they do. Δtt curvature vs "
                   f"gradient/Hessian: " + "; ".join(rows) + ".")
    conv = results.get("standard_to_lcnn")
    if conv and lcnn and std:
        out.append(f"**Retrofitting (convert + {conv['history'][-1]['epoch'] if conv['history'] else '?'} "
                   f"fine-tuning epoch(s)) vs LCNN from scratch**: curvature {num(conv['test']['curvature'])} vs "
                   f"{num(lcnn['test']['curvature'])} (standard {num(std['test']['curvature'])}), accuracy "
                   f"{pct(conv['accuracy'])} % vs {pct(lcnn['accuracy'])} % (standard {pct(std['accuracy'])} %).")
    return out


def report(args, results: dict[str, dict], figure: Path | None, env: dict, wall: float) -> str:
    order = [s.name for s in SPECS if s.name in results]
    base = mean_epoch_seconds(results["standard"]) if "standard" in results else float("nan")
    eps = sorted({e for a in results.values() for e in a["robust"]}, key=float)
    lines = [
        "# Fashion-MNIST: reproducing the LCNN paper's claims",
        "",
        ("> **Quick mode** (tiny subset, 1 epoch): these numbers only show that the pipeline runs; they say "
         "nothing about the claims.\n" if args.quick else ""),
        f"Generated by `python experiments/fashion_mnist.py{' --quick' if args.quick else ''}` "
        f"({time.strftime('%Y-%m-%d')}, lcnn-audit {env['lcnn_audit']}, torch {env['torch']}, "
        f"{env['num_threads']} CPU thread(s), {wall / 60:.1f} min for this invocation).",
        "",
        "## Setup",
        "",
        f"- Data: Fashion-MNIST, {args.n_train} training and {args.n_test} test images"
        + (" (subset)" if args.quick else " (the full sets)") + ", inputs in [0, 1], normalisation inside the model.",
        f"- Model: `small_cnn` width {args.width} (conv {args.width}-{args.width}-{2 * args.width}-{2 * args.width}, "
        "BN, max-pool after conv 2 and 4, linear), softplus β = 1000 (the paper's standard baseline).",
        f"- Training: {args.epochs} epoch(s) from scratch, SGD momentum 0.9, lr 0.1 (×0.1 at 75 % and 87.5 %), "
        f"weight decay 5e-4 (not on β, γ), batch {args.batch_size}, no augmentation, seed {args.seed}. "
        f"Retrofit: `convert` defaults, then {args.finetune_epochs} epoch(s) at lr {args.finetune_lr} with the "
        "LCNN penalty.",
        f"- Penalties: LCNN λβ = {LCNN['lambda_beta']:g}, λγ = {LCNN['lambda_gamma']:g}; GradReg λ = {GRADREG:g}; "
        f"CURE λ = {CURE['cure']:g}, h = {CURE['cure_h']:g} (L2, [0,1] pixels; linear ramp over epoch 1); "
        f"PGD-AT L2 eps {PGD_AT.eps:g}, {PGD_AT.steps} steps.",
        f"- Audits: curvature, Δtt and PGD on {args.audit_n} seeded test (and train) samples; f = cross-entropy at "
        f"the label; ‖∇²f‖₂ by Lanczos (rel. tol 1e-3); PGD-L2 {args.pgd_steps} steps, 1 restart, best iterate; "
        f"gradient robustness on {args.robustness_n} test samples, 2 random directions per radius.",
        "",
        "## Table 1: geometry (test subset) and accuracy (full test set)",
        "",
        "| model | accuracy % | mean ‖∇f‖ | mean ‖∇²f‖₂ | mean curvature C_f | time/epoch vs standard |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for k in order:
        a = results[k]
        rel = mean_epoch_seconds(a) / base if not math.isnan(base) and base > 0 else float("nan")
        lines.append(f"| {a['label']} | {pct(a['accuracy'])} | {num(a['test']['grad_norm'])} | "
                     f"{num(a['test']['hessian_norm'])} | {num(a['test']['curvature'])} | "
                     f"{rel:.2f}× ({mean_epoch_seconds(a):.0f} s) |")
    lines += ["", "## Table 2: PGD-L2 robust accuracy % (test subset)", "",
              "| model | clean | " + " | ".join(f"ε = {e}" for e in eps) + " |",
              "|---|---:|" + "---:|" * len(eps)]
    for k in order:
        a = results[k]
        lines.append(f"| {a['label']} | {pct(a['clean_accuracy_audit'])} | "
                     + " | ".join(pct(a["robust"].get(e)) for e in eps) + " |")
    flags = [f"{results[k]['label']}: {m}" for k in order for m in results[k]["attack_flags"]]
    if flags:
        lines += ["", "Attack flags: " + "; ".join(flags)]
    lines += ["", "## Table 3: train-test discrepancy Δtt g = |g(test) − g(train)| / g(test) (caption) and "
              "/ g(train) (printed values)", "",
              "| model | Δtt mean ‖∇f‖ | Δtt mean ‖∇²f‖₂ | Δtt mean C_f | /train ‖∇f‖ | /train ‖∇²f‖₂ | /train C_f |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    for k in order:
        d, t = results[k]["delta_tt"], results[k].get("delta_tt_train", {})
        lines.append(f"| {results[k]['label']} | {num(d['grad_norm'])} | {num(d['hessian_norm'])} | "
                     f"{num(d['curvature'])} | {num(t.get('grad_norm'))} | {num(t.get('hessian_norm'))} | "
                     f"{num(t.get('curvature'))} |")
    if figure is not None:
        lines += ["", "## Figure 2: gradient robustness", "",
                  f"![relative gradient change against noise norm]({figure.name})", "",
                  "Mean relative gradient change ‖∇f(x+ε) − ∇f(x)‖/‖∇f(x)‖ under random noise of norm ‖ε‖ "
                  "(band: median to p95), with Proposition 1's quadratic approximation r·E[C_f] (dashed)."]
    lines += ["", "## Do the paper's claims hold here?", ""] + [f"- {c}" for c in claims(results)]
    nc = sum(a["not_converged"] for a in results.values())
    if nc:
        lines += ["", f"Note: {nc} Lanczos run(s) did not reach the tolerance within 40 steps; their ‖∇²f‖₂ is a "
                      "lower estimate."]
    lines += ["", "## Training logs", "", "Per-epoch train loss, penalty terms, test accuracy and mean curvature on "
              "128 test samples are in `<run folder>/<model>.run/log.json`."]
    return "\n".join(line for line in lines if line is not None) + "\n"


def robustness_figure(results: dict[str, dict], path: Path) -> Path:
    """Fig. 2 for every model: measured mean relative gradient change (solid) and Proposition 1's
    quadratic approximation r·E[C_f] (dashed), log-log, legend outside the axes."""
    curves = []
    for a in results.values():
        c = a["grad_robustness"]["curves"]
        curves.append((a["label"], [x["radius"] for x in c], [x["mean"] for x in c], [x["quadratic"] for x in c], "o"))
    return fig2_plot(curves, "Fashion-MNIST gradient robustness (solid: measured mean; dashed: r·E[C_f])", path, 120)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    n_train, n_test = (512, 256) if args.quick else (None, None)
    train_data = load_data("fashion-mnist", "train", n=n_train, seed=args.seed, data_root=args.data_root)
    test_data = load_data("fashion-mnist", "test", n=n_test, seed=args.seed, data_root=args.data_root)
    args.n_train, args.n_test = len(train_data), len(test_data)
    only = set(args.only.split(",")) if args.only else None
    specs = [s for s in SPECS if only is None or s.name in only]
    results = {}
    for spec in specs:
        path = train_one(args, spec, train_data, test_data)
        results[spec.name] = audit_one(args, spec, path, train_data, test_data)
    for spec in SPECS:  # include earlier models' cached audits in the report
        cache = args.out / f"{spec.name}.audit.json"
        if spec.name not in results and cache.exists():
            results[spec.name] = json.loads(cache.read_text())
    results = {s.name: results[s.name] for s in SPECS if s.name in results}
    with_curves = {k: a for k, a in results.items() if a["grad_robustness"].get("curves")}
    figure = robustness_figure(with_curves, args.doc.parent / "fashion-mnist-grad-robustness.png") if with_curves \
        else None
    wall = time.perf_counter() - t0
    write_text(args.doc, report(args, results, figure, environment(args.device), wall))
    write_json(args.out / "summary.json", {"args": {k: str(v) for k, v in vars(args).items()}, "results": results})
    log(f"wrote {args.doc}")
    if args.quick and "standard" in results:
        base = mean_epoch_seconds(results["standard"]) * 60000 / args.n_train
        per = sum(mean_epoch_seconds(a) for k, a in results.items() if k != "standard_to_lcnn") * 60000 / args.n_train
        conv = mean_epoch_seconds(results.get("standard_to_lcnn", results["standard"])) * 60000 / args.n_train
        est = per * DEFAULT_EPOCHS + conv * DEFAULT_FINETUNE_EPOCHS
        log(f"extrapolated full-data training time with the defaults: {est / 60:.0f} min (standard epoch "
            f"{base:.0f} s), plus evaluation and audits")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
