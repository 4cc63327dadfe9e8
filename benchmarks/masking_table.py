"""The masking table of ``docs/attacks.md``: what the default ``attack`` run reports on models that
mask gradients, what it reports with the counters, which flags fire, and a reference attack.

    python benchmarks/masking_table.py                  # 200 demo test samples, L2 eps 0.2, ~5 min on 1 thread
    python benchmarks/masking_table.py --n 100 --models shattered,quantise-8

The models (``tests/masking_models.py``) wrap the bundled demo CNN: 8-level input
quantisation, logits scaled by 1e4 (saturated softmax), Gaussian input noise at each
forward, a JPEG-like block-DCT rounding, and shattered gradients x + 0.002·sin(10⁴x).
"standard PGD alone" is the default run's ``pgd`` row; "reported" its ``worst_case`` robust
accuracy (with the masking checks' runs and the automatic margin counter); "with counters" adds the
counter each model needs (``--bpda pre``, ``--eot 8``; the margin loss needs no option);
"reference" is an independent BPDA/EOT/margin PGD at the same budget, with its exact 95 %
Clopper-Pearson interval.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lcnn_audit import load_data, load_model  # noqa: E402
from lcnn_audit.attacks import AttackOptions, attack_audit, clopper_pearson  # noqa: E402
from tests.masking_models import masking_models, reference_attack  # noqa: E402

REFERENCE = {"quantise-8": {"bpda_pre": True}, "saturated-logits": {"margin": True}, "random-noise": {"eot": 8},
             "jpeg-like": {"bpda_pre": True}, "shattered": {"bpda_pre": True}, "honest": {}}


def raised(summary) -> str:
    return ", ".join(k for k, v in summary["flags"].items() if v and k != "gradient_masking") or "none"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--eps", type=float, default=0.2)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--models", default="honest,quantise-8,saturated-logits,random-noise,jpeg-like,shattered")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    net = load_model("demo")
    data = load_data("demo", n=args.n)
    x, y = data.tensors()
    models = {"honest": (net, {}), **masking_models(net)}
    print(f"demo model, {args.n} test samples, PGD-L2 eps {args.eps:g}, {args.steps} steps; robust accuracy "
          "(worst case over every attack the run made)\n")
    print("| model | standard PGD alone | reported (default run) | with counters | reference attack [95% CI] "
          "| flags (default run) |")
    print("|---|---|---|---|---|---|")
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        model, counter = models[name]
        base = attack_audit(model, data, AttackOptions(eps=(args.eps,), steps=args.steps))
        rep = base.summary["worst_case"]["l2"][f"{args.eps:g}"]["robust_accuracy"]
        alone = base.summary["pgd"]["l2"][f"{args.eps:g}"]["robust_accuracy"]
        if counter:
            adapt = attack_audit(model, data, AttackOptions(eps=(args.eps,), steps=args.steps, **counter))
            cnt = adapt.summary["worst_case"]["l2"][f"{args.eps:g}"]["robust_accuracy"]
        else:
            cnt = rep
        robust = reference_attack(model, x, y, "l2", args.eps, args.steps, **REFERENCE[name])
        k = int(robust.sum())
        lo, hi = clopper_pearson(k, len(y))
        opt = " ".join(f"--{k} {','.join(v) if isinstance(v, tuple) else v}" for k, v in counter.items()) or "(auto)"
        print(f"| {name} | {alone:.3f} | {rep:.3f} | {cnt:.3f} `{opt}` | {k / len(y):.3f} [{lo:.3f}, {hi:.3f}] | "
              f"{raised(base.summary)} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
