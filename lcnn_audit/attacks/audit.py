"""``attack_audit``: the robustness audit behind ``lcnn-audit attack``.

Protocol (GUIDE §3):

* the model runs in eval mode, fp32, on inputs in [0, 1] (normalisation inside), and
  returns logits; its mode and ``requires_grad`` flags are restored afterwards;
* only originally correct points are attacked, and every accuracy divides by all n points;
* each (attack, norm) runs over the eps sweep in ascending order; a sample broken at eps_i
  counts as broken at every eps_j > eps_i (its adversarial example is in the larger ball),
  and only still-robust samples are attacked at the next eps; restarts keep the best
  iterate, so every robust accuracy is the per-sample worst case over restarts and smaller
  eps and never rises with eps; ``worst_case`` is the per-sample worst case over every
  attack that ran (including the adaptive counter of :mod:`.counters` and the masking
  checks' extra runs: longer PGD, restarts and a small Square attack on a subsample);
* the Indicators of Attack Failure (:mod:`.indicators`) are computed per sample alongside;
* every x_adv is re-checked (:func:`lcnn_audit.attacks.base.recheck`): shape, finiteness,
  [0, 1], ‖x_adv − x‖ ≤ eps + tolerance, and a fresh forward pass decides whether it is
  misclassified. A failed check raises :class:`~lcnn_audit.errors.CheckFailedError`.
  AutoAttack's own claims (its ``y_adv``) must agree with the fresh pass on a deterministic
  model, or that is a failed check too.

Robust accuracies carry exact Clopper-Pearson 95 % intervals (:mod:`.stats`).
"""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch import nn

from ..coerce import as_image_data
from ..data import ImageData
from ..errors import CheckFailedError, ModelError
from ..geometry.state import measurement_state
from ..independence import check_batch_independence
from ..loading import check_model_data, require_finite
from ..model import model_device
from ..notices import emit_notices
from ..progress import WithinBatch
from ..results import AuditResult, environment, summarize
from ..runner import Progress, dist_info, run_batches
from . import fields as F
from .adv_store import AdvStore, attack_codes_metadata
from .autoattack import AutoAttack, load_autoattack
from .base import flat_norm, input_gradient, recheck
from .counters import bpda, find_modules
from .flags import compute_flags, indicator_summary, large_eps
from .indicators import incomplete_optimization
from .options import WORST, AttackOptions
from .pgd import PGD
from .registry import ADAPTIVE, ATTACKS, MINIMAL_NORM
from .stats import clopper_pearson
from .summary import AttackSummary, ChecksConfig, MinNormStats, ResultRow, RobustEntry

BASE_FIELDS = ("index", "label", "pred", "correct", "grad_norm", "zero_grad", "nondeterministic")
FIELD_GROUPS = (F.ROBUST, *(F.min_norm(a) for a in MINIMAL_NORM), F.AUTOATTACK_BY, F.AUTOATTACK_CHECKS, "check_",
                F.IOAF)
#: Normalised logits differing by more than this across passes count as nondeterministic (AutoAttack's alpha).
NONDETERMINISM_TOL = 1e-4
MORE_STEPS = "pgd_more_steps"
RESTARTS_CHECK = "pgd_restarts_check"
SQUARE_CHECK = "square_check"


def _check_fp32(model: nn.Module) -> None:
    other = sorted({str(p.dtype) for p in model.parameters() if p.is_floating_point() and p.dtype != torch.float32})
    if other:
        raise ModelError(f"attack audits run in fp32, but the model has {', '.join(other)} parameters; "
                         "convert it with model.float()")


class _AdvCollector:
    """Per batch and norm: the adversarial example found at the smallest eps (for --save-adv)."""

    def __init__(self, x: torch.Tensor, num_eps: int, codes: list[str]):
        self.x, self.num_eps, self.codes = x, num_eps, codes
        n = x.shape[0]
        self.x_adv = x.clone()
        self.first = torch.full((n,), num_eps, dtype=torch.long, device=x.device)
        self.pnorm = torch.full((n,), float("inf"), device=x.device)
        self.code = torch.full((n,), -1, dtype=torch.int8, device=x.device)

    def offer(self, pos: torch.Tensor, x_adv: torch.Tensor, j, attack: str, pnorm: torch.Tensor) -> None:
        if pos.numel() == 0:
            return
        j = torch.as_tensor(j, device=pos.device).expand(pos.shape[0])
        better = (j < self.first[pos]) | ((j == self.first[pos]) & (pnorm < self.pnorm[pos]))
        sel = pos[better]
        self.x_adv[sel] = x_adv[better]
        self.first[sel] = j[better]
        self.pnorm[sel] = pnorm[better].float()
        self.code[sel] = self.codes.index(attack)

    def tensors(self, norm: str, eps: list[float]) -> dict[str, torch.Tensor]:
        table = torch.tensor(list(eps) + [float("inf")], device=self.first.device)
        return {f"x_adv_{norm}": self.x_adv.float(), f"first_eps_{norm}": table[self.first].float(),
                f"attack_{norm}": self.code}


class _BatchAudit:
    """Computes every per-sample field of one batch (the ``compute`` of :func:`run_batches`)."""

    def __init__(self, model, options: AttackOptions, device, *, store: AdvStore | None, codes: list[str],
                 progress: WithinBatch | None = None):
        self.m, self.opts, self.device, self.store, self.codes = model, options, device, store, codes
        self.plan = options.plan()
        self.progress = progress
        # progress stages of a batch: each eps of each eps-bounded attack, each minimal-norm attack,
        # and the two masking checks of each norm
        checks = sum(2 for nm in options.norms if options.masking_checks and nm in PGD.norms)
        self.stages = max(1, checks + sum(1 if ATTACKS[a].minimal_norm else len(options.eps_for(n))
                                          for a, n in self.plan))
        self.stage, self.n = 0, 0
        self.seconds: dict[str, float] = defaultdict(float)
        self.attacked: dict[str, int] = defaultdict(int)

    def __call__(self, batch) -> dict:
        m = self.m
        x = batch.x.to(self.device, torch.float32)
        y = batch.y.to(self.device)
        idx = batch.index.to(self.device)
        with torch.no_grad():
            passes = [m(x) for _ in range(3)]
        for p in passes:
            require_finite(p, "logits", batch.index)
        pred = passes[0].argmax(dim=1)
        correct = pred == y
        unit = [p / (p.norm(dim=1, keepdim=True) + 1e-10) for p in passes]
        nondet = torch.zeros_like(correct)
        for p, u in zip(passes[1:], unit[1:], strict=True):
            nondet |= (p.argmax(dim=1) != pred) | ((u - unit[0]).norm(dim=1) > NONDETERMINISM_TOL)
        g, _, _ = input_gradient(m, x, y, "ce")
        require_finite(g, "input gradients", batch.index)
        zero = g.flatten(1).abs().sum(dim=1) == 0
        fields: dict = {"index": batch.index, "label": batch.y, "pred": pred, "correct": correct,
                        "grad_norm": flat_norm(g, "l2"), "zero_grad": zero, "nondeterministic": nondet,
                        F.ioaf("unavailable_gradients"): correct & (zero | ~torch.isfinite(g.flatten(1)).all(dim=1))}
        deterministic = not bool(nondet.any())
        self.stage, self.n = 0, x.shape[0]
        shard = {"index": batch.index, "label": batch.y, "x": x} if self.store else None
        for norm in self.opts.norms:
            collector = _AdvCollector(x, len(self.opts.eps_for(norm)), self.codes) if self.store else None
            self._norm(norm, x, y, idx,
                       correct=correct, deterministic=deterministic, fields=fields, collector=collector)
            if collector is not None:
                shard.update(collector.tensors(norm, self.opts.eps_for(norm)))
        if self.store:
            self.store.write(shard)
        return fields

    # ------------------------------------------------------------------ per norm

    def _norm(self, norm, x, y, idx, *, correct, deterministic, fields, collector) -> None:
        eps_list = self.opts.eps_for(norm)
        keys = [F.eps_key(e) for e in eps_list]
        n = x.shape[0]
        worst = torch.zeros(n, len(eps_list), dtype=torch.bool, device=x.device)
        if norm in PGD.norms:
            fields[F.ioaf("silent_success", norm)] = torch.zeros_like(correct)
            if self.opts.counters:
                fields[F.ioaf("transfer_failure", norm)] = torch.zeros_like(correct)
        for attack in [a for a, nn_ in self.plan if nn_ == norm]:
            t0 = time.perf_counter()
            if ATTACKS[attack].minimal_norm:
                broken = self._minimal(attack, norm, x, y, idx,
                                       correct=correct, eps_list=eps_list, fields=fields, collector=collector)
            else:
                broken = self._bounded(attack, norm, x, y, idx, correct=correct, eps_list=eps_list,
                                       deterministic=deterministic, fields=fields, collector=collector)
            self.seconds[attack] += time.perf_counter() - t0
            for j, k in enumerate(keys):
                fields[F.robust(attack, norm, k)] = correct & ~broken[:, j]
            worst |= broken
        if self.opts.counters and norm in PGD.norms:
            t0 = time.perf_counter()
            self._adaptive(norm, x, y, idx,
                           correct=correct, eps_list=eps_list, worst=worst, fields=fields, collector=collector)
            self.seconds[ADAPTIVE] += time.perf_counter() - t0
        if self.opts.masking_checks and norm in PGD.norms:
            t0 = time.perf_counter()
            self._checks(norm, x, y, idx,
                         correct=correct, eps_list=eps_list, worst=worst, fields=fields, collector=collector)
            self.seconds["masking_checks"] += time.perf_counter() - t0
        for j, k in enumerate(keys):
            fields[F.robust(WORST, norm, k)] = correct & ~worst[:, j]

    def _stage_done(self) -> None:
        """Report progress within the batch after each stage: an eps of an eps-bounded attack, a
        minimal-norm attack, a masking check."""
        self.stage += 1
        if self.progress is not None:
            self.progress.stage(self.stage / self.stages, self.n)

    def _attack(self, attack, norm, eps, x, y, idx, *, what, steps=None, atk=None, fields=None, pos=None,  # noqa: PLR0913, PLR0917 - one sub-batch attack
                **run_kw):
        """Run one eps-bounded attack and re-check its output; returns (x_adv, recheck, raw output).

        ``atk`` is an :class:`~.protocol.Attack` (built from the registry unless given); a bare
        callable ``atk(model, x, y, index) -> x_adv`` without ``run`` works too (output None)."""
        atk = atk if atk is not None else self.opts.build(attack, norm, eps, steps=steps)
        self.attacked[attack] += x.shape[0]
        run = getattr(atk, "run", None)
        with bpda(self.m, self.opts.bpda) if attack == ADAPTIVE else contextlib.nullcontext():
            out = run(self.m, x, y, idx, **run_kw) if run is not None else None
            x_adv = out.x_adv if out is not None else atk(self.m, x, y, idx)
        rc = recheck(self.m, x, x_adv, y, norm, eps, what)
        if isinstance(atk, PGD) and fields is not None and pos is not None:
            fields[F.ioaf("silent_success", norm)][pos] |= out.path_adversarial & ~rc.adversarial
            if attack == ADAPTIVE:
                fields[F.ioaf("transfer_failure", norm)][pos] |= out.adversarial & ~rc.adversarial
        return x_adv, rc, out

    def _bounded(self, attack, norm, x, y, idx, *, correct, eps_list, deterministic, fields, collector):
        n = x.shape[0]
        broken = torch.zeros(n, len(eps_list), dtype=torch.bool, device=x.device)
        for j, eps in enumerate(eps_list):
            prev = broken[:, j - 1] if j else torch.zeros_like(correct)
            act = (correct & ~prev).nonzero().squeeze(1)
            by, checks = [""] * n, [""] * n
            if act.numel():
                what = f"{attack} {norm} eps={eps:g}"
                x_adv, rc, out = self._attack(attack, norm, eps, x[act], y[act], idx[act], what=what, fields=fields,
                                              pos=act)
                if attack == "autoattack":
                    self._autoattack_claims(out, rc, y[act], deterministic, what)
                    raised = ",".join(k for k, v in out.flags.items() if v)
                    for pos, i in enumerate(act.tolist()):
                        by[i] = (out.broken_by[pos] or "unknown") if bool(rc.adversarial[pos]) else ""
                        checks[i] = raised
                hit = act[rc.adversarial]
                broken[hit, j] = True
                if collector is not None:
                    collector.offer(hit, x_adv[rc.adversarial], j, attack, rc.norm[rc.adversarial])
            broken[:, j] |= prev
            if attack == "autoattack":
                fields[F.autoattack_by(norm, eps)] = by
                fields[F.autoattack_checks(norm, eps)] = checks
            self._stage_done()
        return broken

    @staticmethod
    def _autoattack_claims(out, rc, y, deterministic, what) -> None:
        claimed = out.y_adv != y
        unconfirmed = claimed & ~rc.adversarial
        if deterministic and bool(unconfirmed.any()):
            raise CheckFailedError(f"{what}: AutoAttack reported {int(unconfirmed.sum())} sample(s) misclassified "
                                   "that a fresh forward pass classifies correctly")

    def _minimal(self, attack, norm, x, y, idx, *, correct, eps_list, fields, collector):
        n = x.shape[0]
        broken = torch.zeros(n, len(eps_list), dtype=torch.bool, device=x.device)
        dist_field = torch.zeros(n, device=x.device)
        act = correct.nonzero().squeeze(1)
        if act.numel():
            atk = self.opts.build(attack, norm)
            self.attacked[attack] += act.numel()
            out = atk.run(self.m, x[act], y[act], idx[act])
            rc = recheck(self.m, x[act], out.x_adv, y[act], norm, None, f"{attack} {norm}")
            found = rc.adversarial
            dist_field[act] = torch.where(found, rc.norm, torch.full_like(rc.norm, float("inf")))
            eps_t = torch.tensor(eps_list, device=x.device)
            first = torch.searchsorted(eps_t, rc.norm.contiguous(), right=False)  # first eps >= norm
            for j in range(len(eps_list)):
                broken[act[found & (first <= j)], j] = True
            if collector is not None:
                ok = found & (first < len(eps_list))
                collector.offer(act[ok], out.x_adv[ok], first[ok], attack, rc.norm[ok])
        fields[F.min_norm(attack)] = dist_field
        self._stage_done()
        return broken

    def _square(self, norm, eps, j, x, y, *, idx, sub, worst, fields, collector) -> None:
        """A small black-box (Square) attack on the subsample's survivors: shattered gradients lose to it."""
        square = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        act = (sub & ~worst[:, j]).nonzero().squeeze(1)
        if act.numel():
            atk = AutoAttack(norm, eps, version="custom", attacks=["square"], seed=self.opts.seed,
                             n_queries=self.opts.square_queries)
            what = f"square {norm} eps={eps:g}, {self.opts.square_queries} queries (black-box check)"
            x_adv, rc, _ = self._attack(SQUARE_CHECK, norm, eps, x[act], y[act], idx[act], what=what, atk=atk)
            hit = act[rc.adversarial]
            square[hit] = True
            worst[hit, j:] = True
            if collector is not None:
                collector.offer(hit, x_adv[rc.adversarial], j, SQUARE_CHECK, rc.norm[rc.adversarial])
        fields[F.black_box(norm, eps)] = square

    def _adaptive(self, norm, x, y, idx, *, correct, eps_list, worst, fields, collector) -> None:
        """The counter (:mod:`.counters`): margin-loss PGD with ``--eot`` and ``--bpda`` on every input
        when either is given, else on the inputs whose cross-entropy gradient is exactly zero
        (saturated). Its row is the worst case over it and the standard attacks."""
        opts = self.opts
        needs = correct.clone() if (opts.eot > 1 or opts.bpda) else correct & fields["zero_grad"]
        broken = worst.clone()
        for j, eps in enumerate(eps_list):
            if j:
                broken[:, j] |= broken[:, j - 1]
            act = (needs & ~broken[:, j]).nonzero().squeeze(1)
            if act.numel():
                x_adv, rc, _ = self._attack(ADAPTIVE, norm, eps, x[act], y[act], idx[act],
                                            what=f"{ADAPTIVE} {norm} eps={eps:g}", fields=fields, pos=act)
                hit = act[rc.adversarial]
                broken[hit, j] = True
                if collector is not None:
                    collector.offer(hit, x_adv[rc.adversarial], j, ADAPTIVE, rc.norm[rc.adversarial])
        for j, eps in enumerate(eps_list):
            fields[F.robust(ADAPTIVE, norm, eps)] = correct & ~broken[:, j]
        fields[F.ioaf("countered", norm)] = needs
        worst |= broken

    def _checks(self, norm, x, y, idx, *, correct, eps_list, worst, fields, collector) -> None:
        """Masking checks and the Indicators of Attack Failure that need extra attack runs."""
        n = x.shape[0]
        opts = self.opts
        j = len(eps_list) // 2
        eps = eps_list[j]
        if any(a == "pgd" and nn_ == norm for a, nn_ in self.plan):
            more = torch.zeros(n, dtype=torch.bool, device=x.device)
            incomplete = torch.zeros(n, dtype=torch.bool, device=x.device)
            act = correct.nonzero().squeeze(1)
            if act.numel():
                steps = opts.steps * opts.steps_factor
                x_adv, rc, out = self._attack("pgd", norm, eps, x[act], y[act], idx[act],
                                              what=f"pgd {norm} eps={eps:g} with {steps} steps (masking check)",
                                              steps=steps, fields=fields, pos=act, trace=True)
                more[act[rc.adversarial]] = True
                incomplete[act] = incomplete_optimization(out.trace, rc.adversarial)
                if collector is not None:
                    collector.offer(act[rc.adversarial], x_adv[rc.adversarial], j, MORE_STEPS,
                                    rc.norm[rc.adversarial])
            fields[F.more_steps(norm, eps)] = correct & ~more
            fields[F.ioaf("incomplete_optimization", norm)] = incomplete
            worst[:, j:] |= more.unsqueeze(1)
        self._stage_done()
        # the check subsample: every check_every-th dataset index, so membership does not depend on batching
        sub = correct & (idx % opts.check_every == 0)
        fields[F.ioaf("checked", norm)] = sub
        nonconv = torch.zeros(n, dtype=torch.bool, device=x.device)
        act = sub.nonzero().squeeze(1)
        if act.numel():
            steps = opts.steps * opts.steps_factor
            atk = PGD(norm, eps, steps=steps, restarts=2, seed=opts.seed, loss=opts.loss)
            x_adv, rc, out = self._attack(RESTARTS_CHECK, norm, eps, x[act], y[act], idx[act],
                                          what=f"pgd {norm} eps={eps:g}, 2 restarts (non-convergence check)", atk=atk,
                                          fields=fields, pos=act, all_restarts=True)
            ra = out.restart_adversarial
            nonconv[act] = ra.any(dim=1) & ~ra.all(dim=1)
            hit = act[rc.adversarial]
            worst[hit, j:] = True
            if collector is not None:
                collector.offer(hit, x_adv[rc.adversarial], j, RESTARTS_CHECK, rc.norm[rc.adversarial])
        fields[F.ioaf("non_convergence", norm)] = nonconv
        # a small black-box (Square) attack on the subsample's survivors: shattered gradients lose to it
        if square_applies(x):
            self._square(norm, eps, j, x, y, idx=idx, sub=sub, worst=worst, fields=fields, collector=collector)
        big = large_eps(norm, x[0].numel())
        survivors = correct & ~worst[:, -1]
        act = survivors.nonzero().squeeze(1)
        if act.numel():
            _, rc, _ = self._attack("pgd", norm, big, x[act], y[act], idx[act],
                                    what=f"pgd {norm} eps={big:g} (large-eps masking check)")
            survivors[act[rc.adversarial]] = False
        fields[F.large_eps(norm)] = survivors
        self._stage_done()


def square_applies(x: torch.Tensor) -> bool:
    """AutoAttack's Square needs (N, C, H, W) images of at least 5×5 pixels."""
    return x.ndim == 4 and min(x.shape[2], x.shape[3]) >= 5


def attack_audit(
    model: nn.Module,
    data: ImageData,
    options: AttackOptions | None = None,
    *,
    batch_size: int = 128,
    state_path=None,
    resume: bool = False,
    keep_state: bool = False,
    progress: Progress | None = None,
    config: dict | None = None,
    save_adv=None,
) -> AuditResult:
    """Robust accuracy of ``model`` on ``data`` under ``options``' attacks (see the module docstring).

    ``summary`` holds ``clean_accuracy``, ``results`` (one entry per (attack, norm, eps),
    plus ``worst_case`` entries, each with ``robust_accuracy``, ``ci_low``, ``ci_high``, ``n``),
    ``flags`` and ``flag_messages``, and the same numbers nested as
    ``summary[attack][norm][eps_key]``. ``save_adv`` writes the adversarial examples as
    safetensors (see :mod:`.adv_store`). With ``state_path`` the run is resumable per batch.
    """
    data = as_image_data(data)
    opts = (options or AttackOptions()).validate()
    device = model_device(model)
    _check_fp32(model)
    cfg = {"options": opts.to_dict(), "data": data.describe(), "batch_size": batch_size, **(config or {})}
    if save_adv is not None:
        cfg["save_adv"] = str(save_adv)
    aa_package = None
    if any(a == "autoattack" for a, _ in opts.plan()):
        pkg = load_autoattack()
        aa_package = f"{pkg.__name__} {getattr(pkg, '__version__', '')}".strip()
    store = AdvStore(save_adv) if save_adv is not None else None
    if store is not None:
        _prepare_store(store, resume, state_path)
    codes = list(opts.attacks) + [MORE_STEPS, ADAPTIVE, RESTARTS_CHECK, SQUARE_CHECK]
    probe = data.get(torch.arange(min(len(data), 2)))
    t0 = time.perf_counter()
    with measurement_state(model) as prep:
        num_classes = check_model_data(prep.model, probe.x.to(device), probe.y.to(device))
        random_note = check_batch_independence(prep.model, probe.x.to(device))
        find_modules(prep.model, opts.bpda)  # an unknown --bpda name fails before any attack runs
        within = WithinBatch(progress)
        compute = _BatchAudit(prep.model, opts, device, store=store, codes=codes, progress=within)
        run = run_batches(data, compute, batch_size, config=cfg, state_path=state_path, resume=resume,
                          keep_state=keep_state, progress=within)
    per_sample = _ordered(run.per_sample)
    summary = _summary(per_sample, opts)
    summary["num_classes"] = num_classes
    summary["notices"] = list(prep.notices) + list(opts.notices) + ([random_note] if random_note else [])
    summary["checks"] = _checks_config(opts, data)
    summary["flags"], summary["flag_messages"] = compute_flags(per_sample, opts)
    summary["indicators"] = indicator_summary(per_sample, opts)
    emit_notices("attack", summary["notices"] + summary["flag_messages"])
    if store is not None and run.complete and dist_info()[0] == 0:
        meta = attack_codes_metadata(codes, {n: opts.eps_for(n) for n in opts.norms}, cfg)
        summary["save_adv"] = str(store.merge(data.indices, meta))
    env = environment(device)
    if aa_package:
        env["autoattack"] = aa_package
    seconds = time.perf_counter() - t0
    return AuditResult(
        command="attack", config=cfg, summary=summary, per_sample=per_sample,
        timing={"seconds": seconds, "samples_per_second": (len(data) - run.resumed_from) / max(run.seconds, 1e-9),
                "attack_seconds": dict(compute.seconds), "attacked_samples": dict(compute.attacked)},
        environment=env, complete=run.complete,
    )


def _prepare_store(store: AdvStore, resume: bool, state_path) -> None:
    """Drop shards of an earlier run unless this run resumes one (rank 0 only, then a barrier)."""
    rank, world = dist_info()
    resuming = resume and state_path is not None and (
        Path(state_path).exists() or Path(f"{state_path}.rank{rank}").exists())
    if not resuming and rank == 0:
        store.reset()
    if world > 1:
        torch.distributed.barrier()


def _ordered(fields: dict[str, list]) -> dict[str, list]:
    out = {k: fields[k] for k in BASE_FIELDS if k in fields}
    for prefix in FIELD_GROUPS:
        out.update({k: v for k, v in fields.items() if k.startswith(prefix) and k not in out})
    out.update({k: v for k, v in fields.items() if k not in out})
    return out


def _robust_entry(k: int, n: int) -> RobustEntry:
    lo, hi = clopper_pearson(k, n)
    return RobustEntry(robust_accuracy=k / n if n else float("nan"), ci_low=lo, ci_high=hi, n=n, robust=k)


def _min_norm_stats(vals: list, correct: list) -> MinNormStats:
    attacked = [v for v, c in zip(vals, correct, strict=True) if c]
    found = [v for v in attacked if v != float("inf")]
    stats = summarize(found)
    stats["count"] = len(found)
    all_sorted = sorted(attacked)
    return {"attacked": len(attacked), "found": len(found),
            "median_all": all_sorted[len(all_sorted) // 2] if all_sorted else float("nan"), **stats}


def _autoattack_breakdown(per_sample: dict[str, list]) -> dict[str, dict[str, dict[str, int]]]:
    """norm -> eps key -> sub-attack -> how many samples it broke (from ``autoattack_by_*``)."""
    breakdown: dict = {}
    for name, vals in per_sample.items():
        parsed = F.parse(name)
        if parsed is None or parsed.kind != "autoattack_by":
            continue
        counts: dict[str, int] = {}
        for v in vals:
            if v:
                counts[v] = counts.get(v, 0) + 1
        breakdown.setdefault(parsed.norm, {})[parsed.eps] = counts
    return breakdown


def _summary(per_sample: dict[str, list], opts: AttackOptions) -> AttackSummary:
    n = len(per_sample.get("index", []))
    correct = sum(bool(v) for v in per_sample.get("correct", []))
    lo, hi = clopper_pearson(correct, n)
    summary: AttackSummary = {"n": n, "clean_accuracy": correct / n if n else float("nan"), "clean_correct": correct,
                              "clean_ci_low": lo, "clean_ci_high": hi, "interval": "Clopper-Pearson exact, 95%",
                              "results": []}
    plan = opts.plan()
    for norm in opts.norms:
        countered = any(bool(v) for v in per_sample.get(F.ioaf("countered", norm), []))
        adaptive = [ADAPTIVE] if countered or opts.eot > 1 or opts.bpda else []
        for attack in [a for a, nn_ in plan if nn_ == norm] + adaptive + [WORST]:
            for eps in opts.eps_for(norm):
                vals = per_sample.get(F.robust(attack, norm, eps))
                if vals is None:
                    continue
                entry = _robust_entry(sum(bool(v) for v in vals), n)
                summary["results"].append(ResultRow(attack=attack, norm=norm, eps=eps, **entry))
                summary.setdefault(attack, {}).setdefault(norm, {})[F.eps_key(eps)] = entry
    min_norm = {a: _min_norm_stats(per_sample[F.min_norm(a)], per_sample["correct"]) for a in MINIMAL_NORM
                if F.min_norm(a) in per_sample}
    if min_norm:
        summary["min_norm"] = min_norm
    breakdown = _autoattack_breakdown(per_sample)
    if breakdown:
        summary["autoattack_breakdown"] = breakdown
    return summary


def _checks_config(opts: AttackOptions, data: ImageData) -> ChecksConfig:
    if not opts.masking_checks:
        return {"enabled": False}
    numel = 1
    for s in data.input_shape:
        numel *= int(s)
    out: ChecksConfig = {"enabled": True, "large_eps": {}, "more_steps": {}, "check_every": opts.check_every,
                         "restarts_check": {"restarts": 2, "steps": opts.steps * opts.steps_factor},
                         "square_queries": opts.square_queries}
    for norm in opts.norms:
        if norm not in PGD.norms:
            continue
        out["large_eps"][norm] = large_eps(norm, numel)
        if ("pgd", norm) in opts.plan():
            eps_list = opts.eps_for(norm)
            out["more_steps"][norm] = {"eps": eps_list[len(eps_list) // 2],
                                       "steps": opts.steps * opts.steps_factor}
    return out
