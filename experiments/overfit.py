"""The LCNN paper's claims in the overfitting regime (issue #15): Table 3 as the paper saw it.

``experiments/fashion_mnist.py`` trains on all 60k images for 3 epochs, where the models
barely overfit and Table 3's train-test discrepancy cannot appear. Here every model is
trained on a small subset (default 256 images, batch 64) for 60 epochs, to ~100 % train
accuracy, the regime of the paper's 200-epoch ResNet-18s, and audited at epochs 5, 20 and
60 so Δtt is seen as it grows. One command, resumable, with progress:

    python experiments/overfit.py --out runs/overfit          # -> docs/results/overfit.md

Models (the rows of the paper's Table 1): standard (softplus β = 1000), LCNN, GradReg,
LCNN + GradReg, CURE, softplus (β = 10) + weight decay, PGD adversarial training; plus
avg-pool variants of standard and LCNN + GradReg, where Proposition 1 (twice
differentiable f) applies. Each is trained with 3 seeds (the seed picks the training
subset and the initialisation; the models of one seed share their subset).

Phases, each cached in OUT (rerun the same command to continue after an interruption):
timing (interleaved same-run step times), training (``OUT/train/<model>-s<seed>/``, with
weight snapshots at the checkpoint epochs), geometry audits per (model, seed, epoch) for
f = loss and the logit control f = logit, gradient robustness (Fig. 2), PGD-L2 (Table 2),
AutoAttack-L2 (APGD-CE) on a small subset, and Δtt of the bundled demo model on all of its
1000 + 1000 samples. The report is written from whatever is cached: ``--report-only``.

The criteria are fixed in CRITERIA below, written before the run, each quoting the paper.

Budget. The defaults are sized for a shared 2-core machine: about 40 min on one thread of a
lightly loaded core (a standard model trains its 60 epochs in ~16 s, LCNN ~45 s, the
GradReg/CURE/PGD-AT models 2–4× that; the geometry audits, the attacks and Fig. 2 take
about as long again). A pilot at 512 images × 80 epochs showed the same pattern but would
have needed ~2 h on the loaded machine. ``--n-train 512 --epochs 80 --checkpoints 5,20,80
--batch-size 128`` runs that setting.
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
from lcnn_audit.data import load_data
from lcnn_audit.geometry import CurvatureOptions
from lcnn_audit.geometry.robustness import GradRobustnessOptions, discrepancy, grad_robustness
from lcnn_audit.io import write_json, write_text
from lcnn_audit.loading import load_model, save_model, unwrap
from lcnn_audit.penalties import PenaltyConfig
from lcnn_audit.results import environment
from lcnn_audit.training import AdversarialTraining, TrainConfig, evaluate, init_model, output_recipe, subset, train

sys.path.insert(0, str(Path(__file__).resolve().parent))  # experiments/ (figures.py)
from figures import fig2_plot  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")
LCNN = {"lambda_beta": 1e-4, "lambda_gamma": 1e-5}  # arXiv appendix E
GRADREG = 1e-3  # arXiv appendix E
CURE = {"cure": 0.1, "cure_h": 0.5}  # as experiments/fashion_mnist.py (its pilot); h: L2 step in [0,1] pixels
PGD_AT = AdversarialTraining(norm="l2", eps=0.1, steps=3)  # LCNN §5
TABLE2_EPS = (0.05, 0.1, 0.15, 0.2)  # the paper's Table 2 range
PAPER_TABLE3 = {  # Table 3 as printed: Δtt of ‖∇f‖, ‖∇²f‖, C_f
    "standard": (11.75, 12.28, 0.025), "gradreg": (11.33, 11.22, 0.017),
    "lcnn": (19.99, 11.33, 0.129), "lcnn_gradreg": (21.82, 10.43, 0.146)}
FIELDS = ("grad_norm", "hessian_norm", "curvature")
SYMBOL = {"grad_norm": "‖∇f‖", "hessian_norm": "‖∇²f‖₂", "curvature": "C_f"}

# Written before the run. Each criterion quotes the paper (NeurIPS version, §5) and says how it is judged.
CRITERIA = {
    "table3_gap": (
        "Table 3 caption: \"there exists a large train-test descrepancy, with the test gradient / hessian norms being "
        "> 10× the corresponding values for the train set\". Judged at the last checkpoint on the 3-seed mean: "
        "test/train "
        "ratio of mean ‖∇f‖ and of mean ‖∇²f‖₂ above 10 (Δtt/train above 9)."),
    "table3_curvature": (
        "Table 3 caption: \"the descrepancy is 2-3 orders of magnitude smaller for our proposed curvature measure\"; "
        "§5.4: \"multiple orders of magnitude smaller\". Judged with the form the printed numbers use, "
        "Δtt = |test − train| / train, at the last checkpoint, per model, on the 3-seed mean: the ratio "
        "min(Δtt ‖∇f‖, Δtt ‖∇²f‖₂) / Δtt C_f is at least 71, the smallest ratio in the paper's own Table 3 "
        "(LCNN + GradReg: 10.43 / 0.146; the paper's rows give 71–660, i.e. 1.9–2.8 orders). The claim holds if "
        "it holds for most models; the ratio is also shown against a strict 100 (two orders)."),
    "table1": (
        "§5.1: \"LCNN-based models are best at penalizing curvature\" and \"combining both penalizations (LCNN + "
        "GradReg) further reduces curvature\"; \"most of our baselines except CURE and adversarial training do not "
        "meaningfully lose predictive performance\". Judged at the last checkpoint on the 3-seed means: LCNN + GradReg "
        "has the lowest mean test C_f of the seven models, LCNN's is below the standard model's with disjoint "
        "bootstrap intervals, and LCNN's test accuracy is at most 1 point below the standard model's."),
    "table2": (
        "§5.3: \"LCNN+GradReg models perform on par with adversarial training\" (Table 2: gaps of 0.1–2.3 points at "
        "‖ε‖₂ = 0.05–0.2). Judged on ε ∈ {0.05, 0.1, 0.15, 0.2}, PGD-L2 robust accuracy pooled over the 3 seeds with "
        "Clopper-Pearson 95 % intervals: holds if PGD-AT − LCNN + GradReg ≤ 2.3 points at every ε; does not hold "
        "if, at "
        "some ε, the gap exceeds 2.3 points and the two intervals are disjoint; inconclusive otherwise."),
    "fig2": (
        "Fig. 2 caption: \"low-curvature models lead to an order of magnitude improvement in gradient robustness\". "
        "Judged at the last checkpoint: the ratio of the mean relative gradient change ‖∇f(x+ε) − ∇f(x)‖/‖∇f(x)‖ "
        "of the standard model to that of LCNN + GradReg (3-seed means) is at least 10 at every noise norm "
        "1e-3 … 1e-1 (the paper's range); \"partly\" if at some. Judged separately for max- and avg-pool models."),
    "time": (
        "§5.1: \"LCNNs are indeed able to penalize curvature by only marginally (1.6×) increasing training time\" "
        "(a GTX 1080Ti). Reported, not judged: this is a CPU, where the ratio differs; one same-run ratio per step "
        "(interleaved steps) and per epoch (training logs)."),
}


@dataclass
class Spec:
    name: str
    label: str
    convert: bool = False
    penalties: dict = field(default_factory=dict)
    adversarial: AdversarialTraining | None = None
    beta: float = 1000.0
    pool: str = "max"


SPECS = [
    Spec("standard", "Standard (softplus β=1000)"),
    Spec("lcnn", "LCNN", convert=True, penalties=LCNN),
    Spec("gradreg", "GradReg", penalties={"gradreg": GRADREG}),
    Spec("lcnn_gradreg", "LCNN + GradReg", convert=True, penalties={**LCNN, "gradreg": GRADREG}),
    Spec("cure", "CURE", penalties=CURE),
    Spec("softplus_wd", "Softplus (β=10) + wt. decay", beta=10.0),
    Spec("pgd_at", "PGD adversarial training", adversarial=PGD_AT),
    Spec("standard_avg", "Standard, avg-pool", pool="avg"),
    Spec("lcnn_gradreg_avg", "LCNN + GradReg, avg-pool", convert=True, penalties={**LCNN, "gradreg": GRADREG},
         pool="avg"),
]
TABLE1 = [s.name for s in SPECS if s.pool == "max"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "overfit", help="run folder (cache)")
    p.add_argument("--doc", type=Path, default=None, help="Markdown report (default docs/results/overfit.md)")
    p.add_argument("--data", default="fashion-mnist", help="fashion-mnist, or demo (the bundled 1000+1000 sample)")
    p.add_argument("--data-root", type=Path, default=None,
                   help="Fashion-MNIST location (default ./data, then /usr/share/datasets/fashion-mnist)")
    p.add_argument("--n-train", type=int, default=256, help="training images (the subset the models overfit)")
    p.add_argument("--n-test", type=int, default=128, help="test images of the geometry audits")
    p.add_argument("--n-train-audit", type=int, default=128, help="training images of the geometry audits")
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--checkpoints", default="5,20,60", help="epochs whose weights are audited")
    p.add_argument("--logit-all", action="store_true",
                   help="run the f = logit control at every checkpoint (default: the last one only)")
    p.add_argument("--all-checkpoints", action="store_true",
                   help="audit every model at every checkpoint (default: only Table 3's four models)")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--models", default=",".join(s.name for s in SPECS))
    p.add_argument("--width", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--attack-n", type=int, default=128, help="test images attacked per model (Table 2)")
    p.add_argument("--pgd-steps", type=int, default=20)
    p.add_argument("--pgd-restarts", type=int, default=2)
    p.add_argument("--aa-n", type=int, default=64, help="AutoAttack (APGD-CE, L2) images, seed 0; 0 skips")
    p.add_argument("--robustness-n", type=int, default=64, help="test images of Fig. 2")
    p.add_argument("--bootstrap", type=int, default=2000)
    p.add_argument("--demo", action=argparse.BooleanOptionalAction, default=True,
                   help="Δtt of the bundled demo model on its full 1000 + 1000 samples")
    p.add_argument("--timing-steps", type=int, default=20, help="interleaved steps per model of the timing phase")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--report-only", action="store_true", help="write the report from the cache, compute nothing")
    args = p.parse_args(argv)
    args.seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    args.checkpoints = sorted({int(c) for c in args.checkpoints.split(",") if c.strip()} | {args.epochs})
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in names if m not in {s.name for s in SPECS}]
    if unknown:
        p.error(f"unknown model(s) {', '.join(unknown)}; use some of {', '.join(s.name for s in SPECS)}")
    args.specs = [s for s in SPECS if s.name in names]
    if any(c < 1 or c > args.epochs for c in args.checkpoints):
        p.error("--checkpoints must lie in 1..--epochs")
    if args.data_root is None and args.data == "fashion-mnist" and not (Path("data") / "FashionMNIST").exists() \
            and DEBIAN_FASHION.exists():
        args.data_root = DEBIAN_FASHION
    args.doc = args.doc or ROOT / "docs" / "results" / "overfit.md"
    return args


T0 = time.perf_counter()


def log(msg: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} [{(time.perf_counter() - T0) / 60:5.1f} min] {msg}", flush=True)


def cached(path: Path, compute):
    """JSON cache: compute once, atomically written; a rerun reads it back."""
    if path.exists():
        return json.loads(path.read_text())
    out = compute()
    write_json(path, out)
    return out


# --------------------------------------------------------------------------- data and models


def datasets(args, seed: int):
    """(training subset the models fit, training audit subset of it, test audit subset)."""
    kw = {"data_root": args.data_root}
    train_data = load_data(args.data, "train", n=args.n_train, seed=1000 + seed, **kw)
    train_audit = subset(train_data, args.n_train_audit, 2000 + seed) if args.n_train_audit < len(train_data) \
        else train_data
    test_audit = load_data(args.data, "test", n=args.n_test, seed=3000 + seed, **kw)
    return train_data, train_audit, test_audit


def build(args, spec: Spec, seed: int, input_shape):
    arch = {"width": args.width, "act": "softplus", "beta": spec.beta, "pool": spec.pool}
    return init_model("small_cnn", arch, normalize="fashion-mnist", dataset="fashion-mnist", seed=seed,
                      convert=spec.convert, input_shape=input_shape)


def config(args, spec: Spec, seed: int) -> TrainConfig:
    return TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=0.1, momentum=0.9, weight_decay=5e-4,
                       schedule="multistep", augment="none",
                       penalties=PenaltyConfig(**spec.penalties,
                                               cure_h_warmup=1.0 if "cure" in spec.penalties else 0.0),
                       adversarial=spec.adversarial, curvature_n=0, eval_n=512, seed=seed)


def snapshot_path(args, name: str, seed: int, epoch: int) -> Path:
    return args.out / "train" / f"{name}-s{seed}" / f"epoch{epoch:03d}.safetensors"


def train_one(args, spec: Spec, seed: int, train_data, test_data, k: int, total: int) -> None:
    run_dir = args.out / "train" / f"{spec.name}-s{seed}"
    final = snapshot_path(args, spec.name, seed, args.epochs)
    if final.exists() and all(snapshot_path(args, spec.name, seed, c).exists() for c in args.checkpoints):
        return
    model = build(args, spec, seed, train_data.input_shape)
    recipe = output_recipe(model)
    t0 = time.perf_counter()
    log(f"[train {k}/{total}] {spec.name} seed {seed}: {args.epochs} epochs on {len(train_data)} images")

    def on_step(info):
        # snapshot at the last step of a checkpoint epoch, before the epoch's checkpoint: an interrupted
        # run redoes the epoch exactly (deterministic resume) and rewrites the same weights
        if info.step == info.steps and info.epoch in args.checkpoints:
            save_model(unwrap(model), snapshot_path(args, spec.name, seed, info.epoch), recipe)

    def on_epoch(rec):
        if rec["epoch"] in args.checkpoints or rec["epoch"] % 20 == 0:
            log(f"  {spec.name} s{seed} epoch {rec['epoch']}: loss {rec['train_loss']:.4f} train acc "
                f"{rec['train_accuracy']:.3f} test acc {rec.get('test_accuracy', float('nan')):.3f} "
                f"({time.perf_counter() - t0:.0f}s)")

    res = train(model, train_data, test_data, config(args, spec, seed), run_dir=run_dir, resume=True,
                run_config={"experiment": "overfit", "model": spec.name}, on_step=on_step, on_epoch=on_epoch)
    if not res.complete:
        log("interrupted; rerun the same command to resume")
        sys.exit(130)
    missing = [c for c in args.checkpoints if not snapshot_path(args, spec.name, seed, c).exists()]
    if missing:
        raise SystemExit(f"{run_dir}: snapshots of epochs {missing} are missing; delete the folder and rerun")


# --------------------------------------------------------------------------- audits


def _bootstrap_delta(tr: torch.Tensor, te: torch.Tensor, B: int, seed: int) -> dict:
    """Bootstrap replicates (B,) of both Δtt forms, train and test resampled independently."""
    g = torch.Generator().manual_seed(seed)
    mtr = tr[torch.randint(len(tr), (B, len(tr)), generator=g)].mean(1)
    mte = te[torch.randint(len(te), (B, len(te)), generator=g)].mean(1)
    return {"test": ((mte - mtr).abs() / mte).tolist(), "train": ((mte - mtr).abs() / mtr).tolist(),
            "test_mean": mte.tolist()}


def geometry_audit(args, spec: Spec, seed: int, epoch: int, target: str, train_audit, test_audit, full_test) -> dict:
    path = args.out / "audit" / f"{spec.name}-s{seed}-e{epoch:03d}-{target}.json"

    def compute():
        model = load_model(snapshot_path(args, spec.name, seed, epoch))
        opts = CurvatureOptions(target=target, tol=1e-3, max_iter=40, fro_probes=0, jacobian="off", seed=seed)
        d = discrepancy(model, train_audit, test_audit, opts, batch_size=128)
        ps = d.per_sample
        split = ps["split"]
        out = {"delta_tt": d.summary["delta_tt"], "delta_tt_train": d.summary["delta_tt_train"],
               "train": {g: d.summary["train"][g]["mean"] for g in FIELDS},
               "test": {g: d.summary["test"][g]["mean"] for g in FIELDS},
               "not_converged": sum(1 for c in ps.get("converged", []) if not c), "boot": {}}
        for g in FIELDS:
            v = torch.tensor(ps[g], dtype=torch.float64)
            is_tr = torch.tensor([s == "train" for s in split])
            out["boot"][g] = _bootstrap_delta(v[is_tr], v[~is_tr], args.bootstrap, 7 * seed + epoch)
        if target == "loss":
            out["accuracy"] = evaluate(model, full_test, 1024)["accuracy"]
            with torch.no_grad():
                for name, data in (("train", train_audit), ("test", test_audit)):
                    b = data.get(torch.arange(len(data)))
                    p = torch.softmax(model(b.x), 1).gather(1, b.y[:, None]).squeeze(1)
                    out[f"one_minus_py_{name}"] = float((1 - p).mean())
        return out

    return cached(path, compute)


def robustness_audit(args, spec: Spec, seed: int) -> dict:
    path = args.out / "robustness" / f"{spec.name}-s{seed}.json"

    def compute():
        model = load_model(snapshot_path(args, spec.name, seed, args.epochs))
        data = load_data(args.data, "test", n=args.robustness_n, seed=4000 + seed, data_root=args.data_root)
        copts = CurvatureOptions(tol=1e-3, max_iter=40, fro_probes=0, jacobian="off", seed=seed)
        gr = grad_robustness(model, data, GradRobustnessOptions(draws=2, curvature=copts), batch_size=128)
        return {"curves": gr.summary["curves"], "curvature": gr.summary["curvature"]["mean"],
                "notices": gr.summary["notices"],
                "per_radius": [list(v) for v in zip(*gr.per_sample["grad_change"], strict=True)]}

    return cached(path, compute)


def attack_one(args, spec: Spec, seed: int) -> dict:
    path = args.out / "attack" / f"{spec.name}-s{seed}.json"

    def compute():
        model = load_model(snapshot_path(args, spec.name, seed, args.epochs))
        data = load_data(args.data, "test", n=args.attack_n, seed=5000 + seed, data_root=args.data_root)
        opts = AttackOptions(attacks=("pgd",), norms=("l2",), eps=TABLE2_EPS, steps=args.pgd_steps,
                             restarts=args.pgd_restarts, masking_checks=False, seed=seed)
        res = attack_audit(model, data, opts, batch_size=256)
        return {"n": len(data), "clean": res.summary["clean_accuracy"], "flags": res.summary.get("flag_messages", []),
                "robust": {f"{r['eps']:g}": r["robust_accuracy"] for r in res.summary["results"]
                           if r["attack"] == "pgd"}, "options": opts.to_dict()}

    return cached(path, compute)


def autoattack_one(args, spec: Spec, seed: int) -> dict:
    path = args.out / "attack" / f"{spec.name}-s{seed}-apgd.json"

    def compute():
        model = load_model(snapshot_path(args, spec.name, seed, args.epochs))
        data = load_data(args.data, "test", n=args.aa_n, seed=5000 + seed, data_root=args.data_root)
        opts = AttackOptions(attacks=("autoattack",), norms=("l2",), eps=TABLE2_EPS, version="custom",
                             aa_attacks=("apgd-ce",), masking_checks=False, seed=seed)
        res = attack_audit(model, data, opts, batch_size=256)
        return {"n": len(data), "clean": res.summary["clean_accuracy"], "flags": res.summary.get("flag_messages", []),
                "robust": {f"{r['eps']:g}": r["robust_accuracy"] for r in res.summary["results"]
                           if r["attack"] == "autoattack"}}

    return cached(path, compute)


def demo_audit(args) -> dict:
    def compute():
        model = load_model("demo")
        tr, te = load_data("demo", "train"), load_data("demo", "test")
        opts = CurvatureOptions(tol=1e-3, max_iter=40, fro_probes=0, jacobian="off")
        d = discrepancy(model, tr, te, opts, batch_size=250)
        ps = d.per_sample
        is_tr = torch.tensor([s == "train" for s in ps["split"]])
        boot = {}
        for g in FIELDS:
            v = torch.tensor(ps[g], dtype=torch.float64)
            boot[g] = _bootstrap_delta(v[is_tr], v[~is_tr], args.bootstrap, 11)
        sub = {}  # the seed-0, 100-sample subsets the older docs quoted
        for g in FIELDS:
            v = torch.tensor(ps[g], dtype=torch.float64)
            tr_i = load_data("demo", "train", n=100, seed=0).indices
            te_i = load_data("demo", "test", n=100, seed=0).indices
            idx = torch.tensor(ps["index"])
            a = v[is_tr & torch.isin(idx, tr_i)].mean()
            b = v[~is_tr & torch.isin(idx, te_i)].mean()
            sub[g] = float((b - a).abs() / b)
        return {"n_train": len(tr), "n_test": len(te), "delta_tt": d.summary["delta_tt"],
                "delta_tt_train": d.summary["delta_tt_train"], "boot": boot, "subset100": sub,
                "train": {g: d.summary["train"][g]["mean"] for g in FIELDS},
                "test": {g: d.summary["test"][g]["mean"] for g in FIELDS}}

    return cached(args.out / "demo.json", compute)


def timing(args, train_data) -> dict:
    """Same-run step times: standard and LCNN steps interleaved (ABAB...), median of each."""
    def compute():
        from lcnn_audit.penalties import PENALTIES, PenaltyBatch

        specs = {s.name: s for s in SPECS}
        models = {n: build(args, specs[n], 0, train_data.input_shape) for n in ("standard", "lcnn")}
        opt = {n: torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9) for n, m in models.items()}
        b = train_data.get(torch.arange(min(args.batch_size, len(train_data))))
        times = {n: [] for n in models}
        for i in range(args.timing_steps + 3):
            for n, m in models.items():
                t0 = time.perf_counter()
                m.train()
                pen = PenaltyConfig(**specs[n].penalties).active(0.0)
                pb = PenaltyBatch(m, b.x, b.y, b.index, seed=0, track_input=False)
                total = pb.loss + sum(PENALTIES[k](pb, **kw) for k, kw in pen.items())
                opt[n].zero_grad(set_to_none=True)
                total.backward()
                opt[n].step()
                if i >= 3:  # warm-up
                    times[n].append(time.perf_counter() - t0)
        med = {n: sorted(t)[len(t) // 2] for n, t in times.items()}
        return {"batch": len(b.y), "median_step_s": med, "ratio": med["lcnn"] / med["standard"],
                "steps": args.timing_steps}

    return cached(args.out / "timing.json", compute)


# --------------------------------------------------------------------------- statistics


def mean(v):
    v = [x for x in v if not math.isnan(x)]
    return sum(v) / len(v) if v else float("nan")


def ci(reps: list[list[float]]) -> tuple[float, float]:
    """95 % percentile interval of the seed-mean of bootstrap replicates (one list per seed)."""
    if not reps:
        return float("nan"), float("nan")
    t = torch.tensor(reps, dtype=torch.float64).mean(0).sort().values
    return float(t[int(0.025 * (len(t) - 1))]), float(t[int(0.975 * (len(t) - 1))])


def num(v) -> str:
    if v is None or math.isnan(v):
        return "–"
    if abs(v) >= 1000:
        return f"{v:.3g}"
    return f"{v:.3g}" if abs(v) >= 1e-3 else f"{v:.2e}"


def cell(point, lo, hi) -> str:
    return f"{num(point)} [{num(lo)}, {num(hi)}]"


# --------------------------------------------------------------------------- report


def collect(args) -> dict:
    R = {"geometry": {}, "robustness": {}, "attack": {}, "apgd": {}}
    for spec in SPECS:
        for seed in args.seeds:
            for epoch in args.checkpoints:
                for target in ("loss", "logit"):
                    p = args.out / "audit" / f"{spec.name}-s{seed}-e{epoch:03d}-{target}.json"
                    if p.exists():
                        R["geometry"][(spec.name, seed, epoch, target)] = json.loads(p.read_text())
            for kind, suffix in (("robustness", ""), ("attack", ""), ("apgd", "-apgd")):
                folder = "robustness" if kind == "robustness" else "attack"
                p = args.out / folder / f"{spec.name}-s{seed}{suffix}.json"
                if p.exists():
                    R[kind][(spec.name, seed)] = json.loads(p.read_text())
    for name in ("timing", "demo"):
        p = args.out / f"{name}.json"
        R[name] = json.loads(p.read_text()) if p.exists() else None
    R["logs"] = {}
    for spec in SPECS:
        for seed in args.seeds:
            p = args.out / "train" / f"{spec.name}-s{seed}" / "log.json"
            if p.exists():
                R["logs"][(spec.name, seed)] = json.loads(p.read_text())["summary"]["epochs"]
    # a model that did not train (final train accuracy < 50 % after a run of >= 20 epochs, meant to fit its
    # subset: stuck near chance) is left out of every mean and verdict, and listed in the report; its audits
    # stay in the cache. Short runs (the miniature) keep every model.
    R["failed"] = sorted(k for k, lg in R["logs"].items() if args.epochs >= 20 and lg and len(lg) >= args.epochs
                         and lg[args.epochs - 1]["train_accuracy"] < 0.5)
    for kind in ("geometry", "robustness", "attack", "apgd"):
        R[kind] = {k: v for k, v in R[kind].items() if (k[0], k[1]) not in R["failed"]}
    return R


def geo_rows(R, name, epoch, target, seeds):
    return [R["geometry"][(name, s, epoch, target)] for s in seeds if (name, s, epoch, target) in R["geometry"]]


def delta_stats(rows, g, form):
    """3-seed mean of one Δtt form with its bootstrap interval and the seed range."""
    key = "delta_tt_train" if form == "train" else "delta_tt"
    vals = [r[key][g] for r in rows]
    lo, hi = ci([r["boot"][g][form] for r in rows])
    return mean(vals), lo, hi, (min(vals) if vals else float("nan")), (max(vals) if vals else float("nan"))


def verdict_table3(R, args) -> tuple[list[str], list[str]]:
    last = args.epochs
    lines, verdicts = [], []
    gap_ok, curv_ok, n = 0, 0, 0
    for name in TABLE1:
        rows = geo_rows(R, name, last, "loss", args.seeds)
        if not rows:
            continue
        n += 1
        d = {g: delta_stats(rows, g, "train") for g in FIELDS}
        gap = min(d["grad_norm"][0], d["hessian_norm"][0])
        ratio = gap / d["curvature"][0] if d["curvature"][0] > 0 else float("inf")
        gap_ok += gap > 9
        curv_ok += ratio >= 71
        lines.append(f"{label(name)}: Δtt/train ‖∇f‖ {num(d['grad_norm'][0])}, ‖∇²f‖₂ {num(d['hessian_norm'][0])}, "
                     f"C_f {num(d['curvature'][0])} [{num(d['curvature'][1])}, {num(d['curvature'][2])}] → ratio "
                     f"{num(ratio)}{' (≥ 100)' if ratio >= 100 else ''}")
    if n:
        verdicts.append(f"**Large train-test gap in ‖∇f‖ and ‖∇²f‖₂ (test > 10× train)** — "
                        f"{'holds' if gap_ok > n / 2 else 'does not hold'} here ({gap_ok} of {n} models).")
        verdicts.append(f"**Δtt of curvature 2–3 orders of magnitude smaller** — "
                        f"{'holds' if curv_ok > n / 2 else 'does not hold'} here ({curv_ok} of {n} models reach the "
                        f"paper's own weakest ratio, 71). " + "; ".join(lines) + ".")
    return verdicts, lines


LABELS = {s.name: s.label for s in SPECS}


def label(name):
    return LABELS.get(name, name)


def report(args, R, wall: float) -> tuple[str, dict]:
    env = environment("cpu")
    seeds = args.seeds
    last = args.epochs
    shown_out = args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out
    L = [
        "# Fashion-MNIST in the overfitting regime: Table 3, with seeds and intervals",
        "",
        f"Generated by `python experiments/overfit.py --out {shown_out}`"
        f" ({time.strftime('%Y-%m-%d')}, lcnn-audit {env['lcnn_audit']}, torch {env['torch']}, "
        f"{torch.get_num_threads()} CPU thread(s); "
        + ("written from the run's cache with --report-only). " if args.report_only else
           f"{wall / 60:.1f} min for the last invocation). ")
        +
        "[README.md](README.md) says how to read it; [fashion-mnist.md](fashion-mnist.md) is the full-data, "
        "3-epoch Table 1 setting.",
        "",
        "## Setup",
        "",
        f"- Data: {args.data}, a seeded subset of {args.n_train} training images per seed (the set the models fit); "
        f"geometry audited on {args.n_train_audit} of those and on {args.n_test} test images, per seed; accuracy on "
        "the full test set.",
        f"- Models: `small_cnn` width {args.width}, BN, softplus β = 1000 unless noted; seeds {seeds} (the seed "
        "picks the training subset and the initialisation).",
        f"- Training: {args.epochs} epochs, SGD momentum 0.9, lr 0.1 (×0.1 at 75 % and 87.5 %), weight decay 5e-4 "
        f"(not on β, γ), batch {args.batch_size}, no augmentation. Weights audited at epochs "
        f"{', '.join(map(str, args.checkpoints))}.",
        f"- Penalties: LCNN λβ = {LCNN['lambda_beta']:g}, λγ = {LCNN['lambda_gamma']:g}; GradReg λ = {GRADREG:g}; "
        f"CURE λ = {CURE['cure']:g}, h = {CURE['cure_h']:g}; PGD-AT L2 ε {PGD_AT.eps:g}, {PGD_AT.steps} steps. "
        "Softplus + wt. decay: β = 10 (the reference code's `low_softplus`), weight decay 5e-4 like every model.",
        "- Geometry: f = cross-entropy at the label (and f = the label's logit, the control); ‖∇²f‖₂ by Lanczos "
        "(rel. tol 1e-3, ≤ 40 HVPs). Intervals: 95 % bootstrap percentile intervals "
        f"({args.bootstrap} resamples of the train and test samples, independently per seed, averaged over seeds); "
        "they cover sampling noise given the trained models, not seed-to-seed variation, which the seed range "
        "shows.",
        "",
        "## Criteria (fixed before the run)",
        "",
    ] + [f"- **{k}**: {v}" for k, v in CRITERIA.items()]

    # Table 3 per checkpoint, both forms
    for target in ("loss", "logit"):
        title = ("## Table 3: train-test discrepancy as training proceeds (f = loss)" if target == "loss" else
                 "## Control: f = the label's logit")
        L += ["", title, "",
              "Δtt/train = |test − train| / train (the form the printed Table 3 needs), 3-seed mean with bootstrap "
              "interval; Δtt/test = |test − train| / test (the caption's form), 3-seed mean.", "",
              "| model | epoch | train acc | Δtt/train ‖∇f‖ | Δtt/train ‖∇²f‖₂ | Δtt/train C_f | Δtt/test ‖∇f‖ | "
              "Δtt/test ‖∇²f‖₂ | Δtt/test C_f |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for spec in SPECS:
            for epoch in args.checkpoints:
                rows = geo_rows(R, spec.name, epoch, target, seeds)
                if not rows:
                    continue
                logs = [R["logs"].get((spec.name, s)) for s in seeds if (spec.name, s) not in R["failed"]]
                tacc = mean([lg[epoch - 1]["train_accuracy"] for lg in logs if lg and len(lg) >= epoch])
                tr = [cell(*delta_stats(rows, g, "train")[:3]) for g in FIELDS]
                te = [num(delta_stats(rows, g, "test")[0]) for g in FIELDS]
                L.append(f"| {spec.label} | {epoch} | {100 * tacc:.1f} % | " + " | ".join(tr + te) + " |")
        if target == "logit":
            L += ["", "Softmax saturation behind the loss-gradient gap (last checkpoint, 3-seed mean of 1 − p_y):", "",
                  "| model | 1 − p_y train | 1 − p_y test |", "|---|---:|---:|"]
            for spec in SPECS:
                rows = geo_rows(R, spec.name, last, "loss", seeds)
                if rows and "one_minus_py_train" in rows[0]:
                    L.append(f"| {spec.label} | {num(mean([r['one_minus_py_train'] for r in rows]))} | "
                             f"{num(mean([r['one_minus_py_test'] for r in rows]))} |")
    L += ["", "The paper's printed Table 3 (CIFAR-100 ResNet-18, 200 epochs) for comparison:", "",
          "| model | Δtt ‖∇f‖ | Δtt ‖∇²f‖₂ | Δtt C_f | min / C_f |", "|---|---:|---:|---:|---:|"]
    for k, (a, b, c) in PAPER_TABLE3.items():
        L.append(f"| {label(k)} | {a} | {b} | {c} | {min(a, b) / c:.0f} |")

    # Table 1 at the last checkpoint
    L += ["", f"## Table 1 at epoch {last} (test audit subset; accuracy on the full test set)", "",
          "| model | accuracy % | mean ‖∇f‖ | mean ‖∇²f‖₂ | mean C_f | seed range of mean C_f |",
          "|---|---:|---:|---:|---:|---:|"]
    t1 = {}
    for spec in SPECS:
        rows = geo_rows(R, spec.name, last, "loss", seeds)
        if not rows:
            continue
        cm = [r["test"]["curvature"] for r in rows]
        lo, hi = ci([r["boot"]["curvature"]["test_mean"] for r in rows])
        t1[spec.name] = {"acc": mean([r["accuracy"] for r in rows]), "curv": mean(cm), "lo": lo, "hi": hi}
        L.append(f"| {spec.label} | {100 * t1[spec.name]['acc']:.2f} | "
                 f"{num(mean([r['test']['grad_norm'] for r in rows]))}"
                 f" | {num(mean([r['test']['hessian_norm'] for r in rows]))} | {cell(mean(cm), lo, hi)} | "
                 f"{num(min(cm))}–{num(max(cm))} |")

    # Table 2
    L += ["", f"## Table 2: PGD-L2 robust accuracy % at epoch {last} (paper's ε range)", "",
          f"PGD-L2, {args.pgd_steps} steps, {args.pgd_restarts} restarts (random start, best iterate), on "
          f"{args.attack_n} test images per seed, pooled over the seeds, with Clopper-Pearson 95 % intervals.", "",
          "| model | clean | " + " | ".join(f"ε = {e:g}" for e in TABLE2_EPS) + " |",
          "|---|---:|" + "---:|" * len(TABLE2_EPS)]
    t2 = {}
    for spec in SPECS:
        rows = [R["attack"][(spec.name, s)] for s in seeds if (spec.name, s) in R["attack"]]
        if not rows:
            continue
        n = sum(r["n"] for r in rows)
        clean = sum(round(r["clean"] * r["n"]) for r in rows) / n
        t2[spec.name] = {}
        cells = []
        for e in TABLE2_EPS:
            k = sum(round(r["robust"][f"{e:g}"] * r["n"]) for r in rows)
            lo, hi = clopper_pearson(k, n)
            t2[spec.name][e] = (k / n, lo, hi)
            cells.append(f"{100 * k / n:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]")
        L.append(f"| {spec.label} | {100 * clean:.1f} | " + " | ".join(cells) + " |")
    aa = [(k, v) for k, v in R["apgd"].items()]
    if aa:
        L += ["", f"AutoAttack-L2 (APGD-CE, {aa[0][1]['n']} test images, seed {aa[0][0][1]}), robust accuracy % "
              "beside PGD on the same images' superset:", "",
              "| model | " + " | ".join(f"ε = {e:g}" for e in TABLE2_EPS) + " |", "|---|" + "---:|" * len(TABLE2_EPS)]
        for (name, _), v in aa:
            L.append(f"| {label(name)} | " + " | ".join(f"{100 * v['robust'][f'{e:g}']:.1f}" for e in TABLE2_EPS)
                     + " |")
    flags = [f"{label(k[0])} s{k[1]}: {m}" for k, v in R["attack"].items() for m in v.get("flags", [])]
    if flags:
        L += ["", "Attack flags: " + "; ".join(flags)]

    # Fig. 2
    fig = None
    fig2 = {}
    for spec in SPECS:
        rows = [R["robustness"][(spec.name, s)] for s in seeds if (spec.name, s) in R["robustness"]]
        if rows:
            radii = [c["radius"] for c in rows[0]["curves"]]
            fig2[spec.name] = {"radii": radii,
                               "mean": [mean([r["curves"][i]["mean"] for r in rows]) for i in range(len(radii))],
                               "quadratic": [mean([r["curves"][i]["quadratic"] for r in rows])
                                             for i in range(len(radii))]}
    if fig2:
        fig = robustness_figure(fig2, args.doc.parent / "overfit-grad-robustness.png")
        L += ["", f"## Figure 2: gradient robustness at epoch {last}", "", f"![gradient robustness]({fig.name})", "",
              "Mean relative gradient change under random noise of norm ‖ε‖ (3-seed mean; solid), and r·E[C_f] "
              "(dashed). Ratio standard / LCNN + GradReg per radius:", "",
              "| pooling | " + " | ".join(f"{r:.2g}" for r in next(iter(fig2.values()))["radii"]) + " |",
              "|---|" + "---:|" * len(next(iter(fig2.values()))["radii"])]
        for a, b, pool in (("standard", "lcnn_gradreg", "max"), ("standard_avg", "lcnn_gradreg_avg", "avg")):
            if a in fig2 and b in fig2:
                L.append(f"| {pool} | " + " | ".join(f"{x / y:.2f}" for x, y in
                                                     zip(fig2[a]["mean"], fig2[b]["mean"], strict=True)) + " |")

    # training time
    tm = R.get("timing")
    per_epoch = {}
    for name in ("standard", "lcnn"):
        secs = [h["seconds"] for s in seeds for h in (R["logs"].get((name, s)) or [])]
        if secs:
            per_epoch[name] = sorted(secs)[len(secs) // 2]
    L += ["", "## Training time (this CPU)", ""]
    if tm:
        L.append(f"- Per step (batch {tm['batch']}, {tm['steps']} interleaved steps each, median): standard "
                 f"{1e3 * tm['median_step_s']['standard']:.0f} ms, LCNN {1e3 * tm['median_step_s']['lcnn']:.0f} ms: "
                 f"**{tm['ratio']:.2f}×**.")
    if len(per_epoch) == 2:
        L.append(f"- Per epoch ({args.n_train} images, median over epochs and seeds of the training logs, same run): "
                 f"standard {per_epoch['standard']:.2f} s, LCNN {per_epoch['lcnn']:.2f} s: "
                 f"**{per_epoch['lcnn'] / per_epoch['standard']:.2f}×**.")
    L.append("- The paper's 1.6× is per epoch on a GTX 1080Ti (ResNet-18, CIFAR-100); on a CPU the centered "
             "softplus, γ-BN and spectral-norm ops are not fused or hidden behind memory bandwidth.")

    # demo
    demo = R.get("demo")
    if demo:
        L += ["", "## The bundled demo model's Δtt", "",
              f"All {demo['n_train']} + {demo['n_test']} bundled samples, bootstrap 95 % intervals:", "",
              "| measure | train mean | test mean | Δtt/test | Δtt/train | seed-0 100-sample subsets, Δtt/test |",
              "|---|---:|---:|---:|---:|---:|"]
        for g in FIELDS:
            lo, hi = ci([demo["boot"][g]["test"]])
            lo2, hi2 = ci([demo["boot"][g]["train"]])
            L.append(f"| {SYMBOL[g]} | {num(demo['train'][g])} | {num(demo['test'][g])} | "
                     f"{cell(demo['delta_tt'][g], lo, hi)} | {cell(demo['delta_tt_train'][g], lo2, hi2)} | "
                     f"{num(demo['subset100'][g])} |")

    # verdicts
    V = []
    v3, _ = verdict_table3(R, args)
    V += v3
    if "standard" in t1 and "lcnn" in t1 and "lcnn_gradreg" in t1:
        six = {k: v for k, v in t1.items() if k in TABLE1}
        lowest = min(six, key=lambda k: six[k]["curv"])
        disjoint = t1["lcnn"]["hi"] < t1["standard"]["lo"]
        drop = 100 * (t1["standard"]["acc"] - t1["lcnn"]["acc"])
        ok = lowest == "lcnn_gradreg" and disjoint and drop <= 1
        V.append(f"**Table 1: LCNN models lowest curvature, LCNN + GradReg lowest, no accuracy lost** — "
                 f"{'holds' if ok else 'does not hold'} here. Lowest mean test C_f: {label(lowest)} "
                 f"({num(six[lowest]['curv'])}); LCNN {num(t1['lcnn']['curv'])} vs standard "
                 f"{num(t1['standard']['curv'])} (intervals {'disjoint' if disjoint else 'overlap'}); accuracy "
                 f"{'drop' if drop >= 0 else 'gain'} {abs(drop):.2f} points.")
    if "lcnn_gradreg" in t2 and "pgd_at" in t2:
        gaps, state = [], "holds"
        for e in TABLE2_EPS:
            a, b = t2["pgd_at"][e], t2["lcnn_gradreg"][e]
            gap = 100 * (a[0] - b[0])
            gaps.append(f"{e:g}: {gap:+.1f}")
            if gap > 2.3:
                if b[2] < a[1]:
                    state = "does not hold"
                elif state == "holds":
                    state = "inconclusive"
        V.append(f"**Table 2: LCNN + GradReg on par with adversarial training** — {state} here. Gap PGD-AT − "
                 f"LCNN + GradReg, points: " + ", ".join(gaps) + ".")
    for a, b, pool in (("standard", "lcnn_gradreg", "max"), ("standard_avg", "lcnn_gradreg_avg", "avg")):
        if a in fig2 and b in fig2:
            ratios = [x / y for x, y in zip(fig2[a]["mean"], fig2[b]["mean"], strict=True)]
            k = sum(r >= 10 for r in ratios)
            state = "holds" if k == len(ratios) else ("holds in part" if k else "does not hold")
            V.append(f"**Fig. 2: an order of magnitude better gradient robustness ({pool}-pool)** — {state} here: "
                     f"standard / LCNN + GradReg ratio {min(ratios):.2f}–{max(ratios):.2f} over ‖ε‖ = "
                     f"{fig2[a]['radii'][0]:.0e}…{fig2[a]['radii'][-1]:.0e} ({k} of {len(ratios)} radii ≥ 10).")
    L += ["", "## Do the paper's claims hold here?", ""] + [f"- {v}" for v in V]
    nc = sum(r["not_converged"] for r in R["geometry"].values())
    if nc:
        L += ["", f"Note: {nc} Lanczos run(s) did not reach the tolerance within 40 HVPs; their ‖∇²f‖₂ is a lower "
              "estimate."]
    final = {k: R["logs"][k][last - 1] for k in R["failed"]}
    failed = [f"{label(k[0])} seed {k[1]} (train accuracy {100 * h['train_accuracy']:.1f} %, loss "
              f"{h['train_loss']:.3f})" for k, h in final.items()]
    if failed:
        L += ["", f"**Training failures**, left out of every mean, interval and verdict above (final train accuracy "
              f"below 50 %: the model stayed at chance): {', '.join(failed)}. Rows of that model average the "
              "remaining seeds."]
    missing = [f"{s.name} s{seed}" for s in args.specs for seed in seeds
               if (s.name, seed, last, "loss") not in R["geometry"]]
    if missing:
        L += ["", f"**Incomplete run**: no final audit for {', '.join(missing)}; rerun the command to finish."]
    summary = {"table1": t1, "table2": {k: {f"{e:g}": v for e, v in d.items()} for k, d in t2.items()},
               "fig2": fig2, "verdicts": V, "timing": tm, "per_epoch_seconds": per_epoch, "demo": demo and {
                   k: demo[k] for k in ("delta_tt", "delta_tt_train", "subset100", "train", "test")}}
    return "\n".join(L) + "\n", summary


def robustness_figure(fig2: dict, path: Path) -> Path:
    curves = [(label(name), c["radii"], c["mean"], c["quadratic"], "s" if name.endswith("_avg") else "o")
              for name, c in fig2.items()]
    return fig2_plot(curves, "Overfit Fashion-MNIST models (solid: measured mean; dashed: r·E[C_f])", path, 110)


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if not args.report_only:
        specs, seeds = args.specs, args.seeds
        data = {s: datasets(args, s) for s in seeds}
        full_test = load_data(args.data, "test", data_root=args.data_root)
        if {"standard", "lcnn"} <= {s.name for s in specs}:
            tm = timing(args, data[seeds[0]][0])
            log(f"timing: LCNN/standard per step {tm['ratio']:.2f}×")
        jobs = [(sp, s) for s in seeds for sp in specs]
        for k, (spec, seed) in enumerate(jobs, 1):
            train_one(args, spec, seed, data[seed][0], data[seed][2], k, len(jobs))
        # every checkpoint for the paper's Table 3 rows (and --all-checkpoints: every model); the last one for
        # the other models; the logit control on the Table 3 rows at the last checkpoint (--logit-all: all)
        geo = [(sp, s, e, t) for s in seeds for sp in specs for e in args.checkpoints for t in ("loss", "logit")
               if (e == args.epochs or args.all_checkpoints or sp.name in PAPER_TABLE3)
               and (t == "loss" or (sp.name in PAPER_TABLE3 and (args.logit_all or e == args.epochs)))]
        for k, (spec, seed, epoch, target) in enumerate(geo, 1):
            r = geometry_audit(args, spec, seed, epoch, target, data[seed][1], data[seed][2], full_test)
            if k % 6 == 0 or k == len(geo):
                log(f"[geometry {k}/{len(geo)}] {spec.name} s{seed} e{epoch} {target}: Δtt/train "
                    + ", ".join(f"{g} {r['delta_tt_train'][g]:.3g}" for g in FIELDS))
        for spec, seed in jobs:
            robustness_audit(args, spec, seed)
        log("gradient robustness done")
        for k, (spec, seed) in enumerate(jobs, 1):
            if spec.pool == "max":
                a = attack_one(args, spec, seed)
                log(f"[attack {k}/{len(jobs)}] {spec.name} s{seed}: " + ", ".join(
                    f"{e} {v:.3f}" for e, v in a["robust"].items()))
        if args.demo:
            d = demo_audit(args)
            log(f"demo Δtt/test {d['delta_tt']}")
        if args.aa_n > 0:
            for spec in specs:
                if spec.name in ("standard", "lcnn_gradreg", "pgd_at"):
                    a = autoattack_one(args, spec, seeds[0])
                    log(f"apgd {spec.name}: {a['robust']}")
    R = collect(args)
    text, summary = report(args, R, time.perf_counter() - t0)
    write_text(args.doc, text)
    write_json(args.out / "summary.json", {"args": {k: str(v) for k, v in vars(args).items() if k != "specs"},
                                           "criteria": CRITERIA, **json.loads(json.dumps(summary, default=str))})
    log(f"wrote {args.doc}")
    for v in summary["verdicts"]:
        log(v[:200])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
