"""lcnn-audit's attacks beside torchattacks' at matched budgets: robust accuracy, minimal norms, time per step.

Runs on the bundled demo CNN and its data sample (no downloads)::

    pip install --no-deps torchattacks      # benchmark-only peer, never imported by the package
    python benchmarks/attack_peers.py                # 500 samples, CPU, about 4 minutes on 1 thread
    python benchmarks/attack_peers.py --n 200 --markdown

Every row attacks the same ``--n`` test samples with the same eps, steps and step size
(``2.5·eps/steps``); robust accuracy divides by all n (misclassified points are never
robust). torchattacks' random starts use the global torch RNG, so it runs once per
``--peer-seeds`` seed and its best (lowest) robust count is the one compared; ours is
deterministic (clean first start, one restart) and runs twice: with its default step rule
(APGD's, Croce & Hein 2020) and with the peer's fixed step ``2.5·eps/steps``. Minimal-norm
attacks (DeepFool, C&W) report
the median L2 norm over the originally correct samples, failures counting as ∞. Times are
process CPU seconds per step (per iteration for C&W; whole runs for DeepFool) for the whole
batch. The robust-accuracy rows time one run each; the PGD time-per-step table below them
comes from ``--timing-reps`` rounds of interleaved 10-step runs (ours with APGD's rule, ours
with the fixed step, peer; then again) and gives the median time of each and the median of
the per-round ratios, so that every ratio is measured in the same conditions. ``--baseline DIR``
adds another version's default PGD (``DIR/lcnn_audit``) to those rounds, for a same-run
before/after. torchattacks' DeepFool loops over samples in Python, so DeepFool runs on the
first ``--df-n`` samples only (both).
The script exits 0 and prints a notice when torchattacks is missing.
"""

from __future__ import annotations

import argparse
import importlib
import os
import statistics
import sys
import time

import torch

from lcnn_audit import load_data, load_model
from lcnn_audit.attacks import FGSM, PGD, CarliniWagnerL2, DeepFool

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from attacks import describe_device  # noqa: E402  (benchmarks/attacks.py)


def describe_machine() -> str:
    return f"{describe_device(torch.device('cpu'))}, torch {torch.__version__}"


def timed(fn, repeats: int = 2):
    """(result of the last call, smallest process CPU time): with one torch thread that is the work
    done, which other jobs on a shared machine do not inflate the way they inflate wall time."""
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.process_time()
        out = fn()
        best = min(best, time.process_time() - t0)
    return out, best


def robust_count(model, x, y, x_adv) -> int:
    with torch.no_grad():
        return int(((model(x).argmax(1) == y) & (model(x_adv).argmax(1) == y)).sum())


def median_norm(model, x, y, x_adv) -> float:
    with torch.no_grad():
        correct = model(x).argmax(1) == y
        fooled = model(x_adv).argmax(1) != y
    d = (x_adv - x).flatten(1).norm(dim=1)
    d = torch.where(fooled, d, torch.full_like(d, float("inf")))[correct]
    return float(d.sort().values[len(d) // 2])


def pgd_timing(model, x, y, ta, reps: int, bar: str, markdown: bool, baseline=None) -> float:
    """The interleaved PGD time-per-step table; returns the largest ratio ours / torchattacks.
    ``baseline`` (another version's PGD class, see ``--baseline``) joins the same rounds."""
    n = len(y)
    print()
    extra = f" {bar} s/step baseline (APGD) {bar} ratio baseline APGD" if baseline is not None else ""
    print(f"{bar} PGD, 10 steps, {n} samples {bar} s/step ours (APGD rule) {bar} s/step ours (fixed step) {bar} "
          f"s/step torchattacks {bar} ratio APGD {bar} ratio fixed{extra} {bar}".strip())
    if markdown:
        print("|---|---|---|---|---|---|" + ("---|---|" if baseline is not None else ""))
    worst_ratio = 0.0
    for norm, eps in (("l2", 0.5), ("linf", 8 / 255)):
        cls = ta.PGDL2 if norm == "l2" else ta.PGD
        runs = {"apgd": lambda norm=norm, eps=eps: PGD(norm, eps, steps=10)(model, x, y),
                "fixed": lambda norm=norm, eps=eps: PGD(norm, eps, steps=10, step_size=eps / 4)(model, x, y),
                "peer": lambda cls=cls, eps=eps: cls(model, eps=eps, alpha=eps / 4, steps=10)(x, y)}
        if baseline is not None:
            runs["base"] = lambda norm=norm, eps=eps: baseline(norm, eps, steps=10)(model, x, y)
        per = {key: [] for key in runs}
        for _ in range(reps):  # one round: ours (APGD), ours (fixed), peer[, baseline], back to back
            for key, fn in runs.items():
                per[key].append(timed(fn, repeats=1)[1] / 10)
        med = {key: statistics.median(v) for key, v in per.items()}
        ra = statistics.median(a / p for a, p in zip(per["apgd"], per["peer"], strict=True))
        rf = statistics.median(f / p for f, p in zip(per["fixed"], per["peer"], strict=True))
        worst_ratio = max(worst_ratio, ra, rf)
        line = (f"{bar} {norm} eps {eps:.4g} {bar} {med['apgd']:.4f} {bar} {med['fixed']:.4f} {bar} "
                f"{med['peer']:.4f} {bar} {ra:.2f} {bar} {rf:.2f}")
        if baseline is not None:
            rb = statistics.median(b / p for b, p in zip(per["base"], per["peer"], strict=True))
            line += f" {bar} {med['base']:.4f} {bar} {rb:.2f}"
        print(f"{line} {bar}".strip())
    return worst_ratio


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--peer-seeds", type=int, default=2)
    ap.add_argument("--df-n", type=int, default=100, help="samples for DeepFool (torchattacks' loops per sample)")
    ap.add_argument("--timing-reps", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="one eps per norm and 10 steps only")
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--timing-only", action="store_true", help="only the interleaved PGD time-per-step table")
    ap.add_argument("--baseline", help="a directory holding another version's lcnn_audit/ (e.g. from `git archive "
                    "main lcnn_audit | tar -x -C DIR`), timed in the same rounds of the time-per-step table")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        ta = importlib.import_module("torchattacks")
    except ImportError:
        print("torchattacks is not installed (pip install --no-deps torchattacks); nothing to compare")
        return 0
    model = load_model("demo")
    x, y = load_data("demo", n=args.n, split="test").tensors()
    n = len(y)
    with torch.no_grad():
        clean = int((model(x).argmax(1) == y).sum())
    print(f"machine: {describe_machine()}; torchattacks {ta.__version__}; "
          f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(f"demo model, {n} test samples, clean accuracy {clean / n:.3f}")

    baseline = None
    if args.baseline:
        from pgd_step import load_baseline  # benchmarks/pgd_step.py

        baseline = load_baseline(args.baseline)
    if args.timing_only:
        worst_ratio = pgd_timing(model, x, y, ta, args.timing_reps, "|" if args.markdown else " ", args.markdown,
                                 baseline)
        print(f"\nlargest PGD time-per-step ratio, ours / torchattacks: {worst_ratio:.2f}")
        return 0
    rows = []  # (attack, eps, steps, ours, peer best, peer range, s/step ours, s/step peer)
    l2_eps = (0.5,) if args.quick else (0.25, 0.5, 1.0)
    linf_eps = (8 / 255,) if args.quick else (2 / 255, 8 / 255)
    step_grid = (10,) if args.quick else (10, 50)
    for norm, eps_list in (("l2", l2_eps), ("linf", linf_eps)):
        for eps in eps_list:
            for steps in step_grid:
                alpha = 2.5 * eps / steps
                default = PGD(norm, eps, steps=steps)  # APGD's step rule, clean first start
                adv, t_ours = timed(lambda default=default: default(model, x, y), repeats=1)
                mine = robust_count(model, x, y, adv)
                fixed = PGD(norm, eps, steps=steps, step_size=alpha)  # the peer's fixed step, clean first start
                adv, t_fixed = timed(lambda fixed=fixed: fixed(model, x, y), repeats=1)
                mine_fixed = robust_count(model, x, y, adv)
                peer_counts, t_peer = [], float("inf")
                for seed in range(args.peer_seeds):
                    torch.manual_seed(seed)
                    cls = ta.PGDL2 if norm == "l2" else ta.PGD
                    atk = cls(model, eps=eps, alpha=alpha, steps=steps, random_start=True)
                    t0 = time.process_time()
                    padv = atk(x, y)
                    t_peer = min(t_peer, time.process_time() - t0)
                    peer_counts.append(robust_count(model, x, y, padv))
                rng = (min(peer_counts), max(peer_counts))
                rows.append((f"PGD-{norm}", eps, steps, mine, min(peer_counts), rng, t_ours / steps, t_peer / steps))
                rows.append((f"PGD-{norm}, fixed step", eps, steps, mine_fixed, min(peer_counts), rng,
                             t_fixed / steps, t_peer / steps))
                print(f"  PGD-{norm} eps={eps:.4g} steps={steps}: ours {mine} (fixed step {mine_fixed}), "
                      f"torchattacks {peer_counts}", flush=True)
    for norm, eps in (("linf", 8 / 255), ("l2", 0.5)):
        ours = FGSM(norm, eps)
        adv, t_ours = timed(lambda ours=ours: ours(model, x, y))
        if norm == "linf":
            padv, t_peer = timed(lambda eps=eps: ta.FGSM(model, eps=eps)(x, y))
            rows.append(("FGSM-linf", eps, 1, robust_count(model, x, y, adv), robust_count(model, x, y, padv), None,
                         t_ours, t_peer))
        else:  # torchattacks has no L2 fast gradient method; PGDL2 with one step of size eps, no start, is FGM
            padv, t_peer = timed(lambda eps=eps: ta.PGDL2(model, eps=eps, alpha=eps, steps=1, random_start=False)(x, y))
            rows.append(("FGM-l2", eps, 1, robust_count(model, x, y, adv), robust_count(model, x, y, padv), None,
                         t_ours, t_peer))
    min_rows = []  # (attack, budget, ours median, peer median, s/iter ours, s/iter peer)
    df = DeepFool(steps=50, overshoot=0.02, candidates=10)
    xd, yd = x[:args.df_n], y[:args.df_n]
    adv, t_ours = timed(lambda: df(model, xd, yd), repeats=1)
    padv, t_peer = timed(lambda: ta.DeepFool(model, steps=50, overshoot=0.02)(xd, yd), repeats=1)
    min_rows.append(("DeepFool-l2", f"50 steps, overshoot 0.02, first {len(yd)} samples, whole run",
                     median_norm(model, xd, yd, adv), median_norm(model, xd, yd, padv), t_ours, t_peer))
    cw_steps = 50
    cw = CarliniWagnerL2(steps=cw_steps, search_steps=1, lr=0.01, initial_const=1.0)
    adv, t_ours = timed(lambda: cw(model, x, y), repeats=1)
    padv, t_peer = timed(lambda: ta.CW(model, c=1.0, kappa=0.0, steps=cw_steps, lr=0.01)(x, y), repeats=1)
    min_rows.append(("C&W-l2", f"c=1, {cw_steps} Adam steps, lr 0.01", median_norm(model, x, y, adv),
                     median_norm(model, x, y, padv), t_ours / cw_steps, t_peer / cw_steps))

    ok = True
    bar = "|" if args.markdown else " "
    print()
    print(f"{bar} attack {bar} eps {bar} steps {bar} robust acc, ours {bar} robust acc, torchattacks best (range) "
          f"{bar} s/step ours {bar} s/step peer {bar} time ratio {bar}".strip())
    if args.markdown:
        print("|---|---|---|---|---|---|---|---|")
    for name, eps, steps, mine, peer, rng, to, tp in rows:
        ok &= mine <= peer
        rng_txt = f" ({rng[0] / n:.3f}–{rng[1] / n:.3f})" if rng else ""
        print(f"{bar} {name} {bar} {eps:.4g} {bar} {steps} {bar} {mine / n:.3f} {bar} {peer / n:.3f}{rng_txt} {bar} "
              f"{to:.4f} {bar} {tp:.4f} {bar} {to / tp:.2f} {bar}".strip())
    print()
    print(f"{bar} attack {bar} budget {bar} median L2, ours {bar} median L2, torchattacks {bar} s/iter ours {bar} "
          f"s/iter peer {bar} time ratio {bar}".strip())
    if args.markdown:
        print("|---|---|---|---|---|---|---|")
    for name, budget, mo, mp, to, tp in min_rows:
        ok &= mo <= mp
        print(f"{bar} {name} {bar} {budget} {bar} {mo:.4f} {bar} {mp:.4f} {bar} {to:.4f} {bar} {tp:.4f} {bar} "
              f"{to / tp:.2f} {bar}".strip())
    worst_ratio = pgd_timing(model, x, y, ta, args.timing_reps, bar, args.markdown, baseline)
    print(f"\nlargest PGD time-per-step ratio, ours / torchattacks: {worst_ratio:.2f}")
    print("ours <= peer at every row" if ok else "SOME ROW IS WEAKER THAN THE PEER")
    return 0


if __name__ == "__main__":
    sys.exit(main())
