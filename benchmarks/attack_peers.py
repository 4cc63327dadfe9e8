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
the median L2 norm over the originally correct samples, failures counting as ∞; PGD rows also
show torchattacks' ``APGD`` (its port of Croce & Hein's code, same steps, ``--peer-seeds``
seeds), the like-for-like peer of our default step rule. Times in those rows are process CPU
seconds per step (per iteration for C&W; whole runs for DeepFool) of one run each. The PGD
time-per-step table below them times the step itself: the slope between runs of 2 and 10
steps, so each side's fixed costs cancel, in ``--timing-reps`` interleaved rounds (see
:func:`pgd_timing`), pairing ours (APGD rule) with torchattacks' APGD and ours (fixed step)
with its PGD/PGDL2. ``--baseline DIR`` adds another version's default PGD (``DIR/lcnn_audit``)
to those rounds, for a same-run before/after. torchattacks' DeepFool loops over samples in
Python, so DeepFool runs on the first ``--df-n`` samples only (both).
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

from lcnn_audit import allocator, load_data, load_model
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


def pgd_timing(model, x, y, ta, reps: int, bar: str, markdown: bool, baseline=None,  # noqa: PLR0913, PLR0917
               lo: int = 2, hi: int = 10) -> float:
    """The interleaved PGD time-per-step table; returns the largest like-for-like ratio.

    Time per step is the slope ``(t(hi) − t(lo)) / (hi − lo)`` between runs of ``hi`` and ``lo``
    steps, so the fixed costs of each side cancel: our evaluation of the last iterate (one
    forward, to keep the best iterate), torchattacks' input checks and APGD's first forward.
    Each round runs every variant at ``lo`` then ``hi`` steps, back to back; a ratio is the
    median over rounds of the ratio within a round. Like for like means ours (APGD rule) against
    torchattacks' ``APGD`` (the same algorithm) and ours (fixed step) against its ``PGD``/``PGDL2``;
    ours (APGD rule) against the fixed-step peer is printed too. The batch is the correctly
    classified samples, since torchattacks' APGD attacks only those. ``baseline`` (another
    version's PGD class, see ``--baseline``) joins the same rounds."""
    with torch.no_grad():
        keep = model(x).argmax(1) == y
    x, y = x[keep], y[keep]
    n = len(y)
    print()
    print(f"time per step = (t({hi} steps) − t({lo} steps)) / {hi - lo}, {n} correctly classified samples, "
          f"{reps} interleaved rounds; each ratio cell: median of the per-round slope ratios · ratio of the median "
          f"slopes · (whole {hi}-step runs, median per-round ratio)")
    extra = f" {bar} s/step baseline (APGD) {bar} baseline / peer APGD" if baseline is not None else ""
    print(f"{bar} PGD {bar} ours, APGD rule {bar} ours, fixed step {bar} torchattacks APGD {bar} torchattacks PGD "
          f"{bar} ours APGD / peer APGD {bar} ours fixed / peer PGD {bar} ours APGD / peer PGD{extra} {bar}".strip())
    if markdown:
        print("|---|---|---|---|---|---|---|---|" + ("---|---|" if baseline is not None else ""))
    worst_ratio = 0.0
    for norm, eps in (("l2", 0.5), ("linf", 8 / 255)):
        cls, ta_norm = (ta.PGDL2, "L2") if norm == "l2" else (ta.PGD, "Linf")
        runs = {"apgd": lambda s, norm=norm, eps=eps: PGD(norm, eps, steps=s)(model, x, y),
                "fixed": lambda s, norm=norm, eps=eps: PGD(norm, eps, steps=s, step_size=2.5 * eps / hi)(model, x, y),
                "peer_apgd": lambda s, eps=eps, ta_norm=ta_norm: ta.APGD(model, norm=ta_norm, eps=eps, steps=s,
                                                                       n_restarts=1, loss="ce", seed=0)(x, y),
                "peer": lambda s, cls=cls, eps=eps: cls(model, eps=eps, alpha=2.5 * eps / hi, steps=s)(x, y)}
        if baseline is not None:
            runs["base"] = lambda s, norm=norm, eps=eps: baseline(norm, eps, steps=s)(model, x, y)
        slope = {key: [] for key in runs}
        whole = {key: [] for key in runs}
        for _ in range(reps):  # one round: every variant at lo then hi steps, back to back
            for key, fn in runs.items():
                t_lo = timed(lambda fn=fn: fn(lo), repeats=1)[1]
                t_hi = timed(lambda fn=fn: fn(hi), repeats=1)[1]
                slope[key].append((t_hi - t_lo) / (hi - lo))
                whole[key].append(t_hi)

        def ratio(a: str, b: str, per: dict) -> float:
            return statistics.median(u / v for u, v in zip(per[a], per[b], strict=True))

        med = {key: statistics.median(v) for key, v in slope.items()}
        pairs = (("apgd", "peer_apgd"), ("fixed", "peer"), ("apgd", "peer"))
        like = [ratio(a, b, slope) for a, b in pairs[:2]]
        worst_ratio = max(worst_ratio, *like)
        cells = " ".join(f"{bar} {ratio(a, b, slope):.2f} · {med[a] / med[b]:.2f} · ({ratio(a, b, whole):.2f})"
                         for a, b in pairs)
        line = (f"{bar} {norm} eps {eps:.4g} {bar} {med['apgd']:.4f} {bar} {med['fixed']:.4f} {bar} "
                f"{med['peer_apgd']:.4f} {bar} {med['peer']:.4f} {cells}")
        if baseline is not None:
            line += f" {bar} {med['base']:.4f} {bar} {ratio('base', 'peer_apgd', slope):.2f}"
        print(f"{line} {bar}".strip())
    return worst_ratio


def print_robust_rows(rows, n: int, bar: str, markdown: bool) -> bool:
    """The robust-accuracy table; whether our default is at least as strong as every peer in every row."""
    ok = True
    print()
    print(f"{bar} attack {bar} eps {bar} steps {bar} robust acc, ours {bar} robust acc, torchattacks best (range) "
          f"{bar} torchattacks APGD, best (range) {bar} s/step ours (one run) {bar} s/step peer (one run) {bar} "
          f"time ratio {bar}".strip())
    if markdown:
        print("|---|---|---|---|---|---|---|---|---|")
    for name, eps, steps, mine, peer, rng, to, tp, apgd in rows:
        if "fixed" not in name:  # the target is on the default; the fixed-step rows are for reference
            ok &= mine <= peer and (apgd is None or mine <= apgd[0])
        rng_txt = f" ({rng[0] / n:.3f}–{rng[1] / n:.3f})" if rng else ""
        apgd_txt = f"{apgd[0] / n:.3f} ({apgd[0] / n:.3f}–{apgd[1] / n:.3f})" if apgd else ""
        print(f"{bar} {name} {bar} {eps:.4g} {bar} {steps} {bar} {mine / n:.3f} {bar} {peer / n:.3f}{rng_txt} {bar} "
              f"{apgd_txt} {bar} {to:.4f} {bar} {tp:.4f} {bar} {to / tp:.2f} {bar}".strip())
    return ok


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--peer-seeds", type=int, default=2)
    ap.add_argument("--df-n", type=int, default=100, help="samples for DeepFool (torchattacks' loops per sample)")
    ap.add_argument("--timing-reps", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="one eps per norm and 10 steps only")
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--timing-steps", default="2,10", help="LO,HI: the run lengths whose slope is the time per step")
    ap.add_argument("--timing-only", action="store_true", help="only the interleaved PGD time-per-step table")
    ap.add_argument("--baseline", help="a directory holding another version's lcnn_audit/ (e.g. from `git archive "
                    "main lcnn_audit | tar -x -C DIR`), timed in the same rounds of the time-per-step table")
    args = ap.parse_args(argv)
    timing_steps = tuple(int(v) for v in args.timing_steps.split(","))
    if len(timing_steps) != 2 or not 0 < timing_steps[0] < timing_steps[1]:
        ap.error("--timing-steps takes LO,HI with 0 < LO < HI, e.g. 2,10")
    torch.set_num_threads(args.threads)
    allocator.tune_host_allocator()  # as every lcnn-audit command does (LCNN_AUDIT_MALLOC=system: off)
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
                                 baseline, *timing_steps)
        print(f"\nlargest like-for-like PGD time-per-step ratio, ours / torchattacks: {worst_ratio:.2f}")
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
                apgd_counts = [robust_count(model, x, y, ta.APGD(model, norm="L2" if norm == "l2" else "Linf", eps=eps,
                                                                 steps=steps, n_restarts=1, loss="ce", seed=seed)(x, y))
                               for seed in range(args.peer_seeds)]
                apgd = (min(apgd_counts), max(apgd_counts))
                rows.append((f"PGD-{norm}", eps, steps, mine, min(peer_counts), rng, t_ours / steps, t_peer / steps,
                             apgd))
                rows.append((f"PGD-{norm}, fixed step", eps, steps, mine_fixed, min(peer_counts), rng,
                             t_fixed / steps, t_peer / steps, apgd))
                print(f"  PGD-{norm} eps={eps:.4g} steps={steps}: ours {mine} (fixed step {mine_fixed}), "
                      f"torchattacks PGD {peer_counts}, APGD {apgd_counts}", flush=True)
    for norm, eps in (("linf", 8 / 255), ("l2", 0.5)):
        ours = FGSM(norm, eps)
        adv, t_ours = timed(lambda ours=ours: ours(model, x, y))
        if norm == "linf":
            padv, t_peer = timed(lambda eps=eps: ta.FGSM(model, eps=eps)(x, y))
            rows.append(("FGSM-linf", eps, 1, robust_count(model, x, y, adv), robust_count(model, x, y, padv), None,
                         t_ours, t_peer, None))
        else:  # torchattacks has no L2 fast gradient method; PGDL2 with one step of size eps, no start, is FGM
            padv, t_peer = timed(lambda eps=eps: ta.PGDL2(model, eps=eps, alpha=eps, steps=1, random_start=False)(x, y))
            rows.append(("FGM-l2", eps, 1, robust_count(model, x, y, adv), robust_count(model, x, y, padv), None,
                         t_ours, t_peer, None))
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

    bar = "|" if args.markdown else " "
    ok = print_robust_rows(rows, n, bar, args.markdown)
    print()
    print(f"{bar} attack {bar} budget {bar} median L2, ours {bar} median L2, torchattacks {bar} s/iter ours {bar} "
          f"s/iter peer {bar} time ratio {bar}".strip())
    if args.markdown:
        print("|---|---|---|---|---|---|---|")
    for name, budget, mo, mp, to, tp in min_rows:
        ok &= mo <= mp
        print(f"{bar} {name} {bar} {budget} {bar} {mo:.4f} {bar} {mp:.4f} {bar} {to:.4f} {bar} {tp:.4f} {bar} "
              f"{to / tp:.2f} {bar}".strip())
    worst_ratio = pgd_timing(model, x, y, ta, args.timing_reps, bar, args.markdown, baseline, *timing_steps)
    print(f"\nlargest like-for-like PGD time-per-step ratio, ours / torchattacks: {worst_ratio:.2f}")
    print("ours (default) <= every peer at every row" if ok else "SOME DEFAULT ROW IS WEAKER THAN A PEER")
    return 0


if __name__ == "__main__":
    sys.exit(main())
