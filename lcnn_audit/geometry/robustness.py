"""Gradient robustness (LCNN paper §4.1, §5.2, Fig. 2) and train-test discrepancy (§5.4, Table 3).

Gradient robustness: for noise ε with ‖ε‖₂ = r, the relative gradient change
‖∇f(x+ε) − ∇f(x)‖ / ‖∇f(x)‖ is compared with Proposition 1,

    ≤ r·δ·exp(r·δ)   (δ ≥ max C_f over the segment)      ~ r·C_f(x)  (quadratic approximation),

and the loss change |f(x+ε) − f(x)| with Proposition 2's quadratic form
‖ε‖·‖∇f‖·(1 + ‖ε‖·C_f/2). Noise directions are uniform on the sphere, drawn per sample
from the counter RNG and shared across radii, so curves are smooth and reproducible.

Train-test discrepancy: Δtt g = |g(test) − g(train)| / g(test), with g the split mean of
gradient norm, Hessian norm or curvature (Table 3's caption), and the same difference over
g(train) (``delta_tt_train``). The printed Table 3 values (10–22 for ‖∇f‖, "test norms
> 10× train") need the train denominator: |te − tr|/te < 1 whenever te > tr > 0.
"""

from __future__ import annotations

import math
import time

import torch
from torch import nn

from .. import rng
from ..coerce import as_image_data
from ..data import ImageData
from ..independence import check_batch_independence
from ..model.wrapper import check_model_data, model_device, require_finite
from ..notices import emit_notices
from ..progress import new_phase
from ..results import AuditResult, environment, summarize
from ..runner import Progress, part_state_path, run_batches
from .audit import curvature_audit
from .gauss_newton import has_maxpool, has_relu
from .measures import CurvatureOptions, compute_geometry
from .objective import input_gradient, make_objective
from .options import DEFAULT_RADII, GradRobustnessOptions  # noqa: F401 - their former home
from .state import measurement_state

STREAM_NOISE, STREAM_ADV = 20, 40
DISCREPANCY_FIELDS = ("grad_norm", "hessian_norm", "curvature")


def _flat(t):
    return t.reshape(t.shape[0], -1)


def gradient_changes(objective, x, index, opts: GradRobustnessOptions, seed: int):
    """Per-sample relative gradient change and loss change, (B, R) each (mean over draws),
    and the maximum over draws of the relative gradient change."""
    f0, g0, _, _ = input_gradient(objective, x)
    f0, g0 = f0.detach().double(), _flat(g0).double()
    g0n = g0.norm(dim=1).clamp_min(1e-300)
    B, R, M = x.shape[0], len(opts.radii), opts.draws
    rel = torch.zeros(B, R, M, dtype=torch.float64, device=x.device)
    dloss = torch.zeros_like(rel)
    for m in range(M):
        u = rng.per_sample_sphere(seed, STREAM_NOISE + m, index, tuple(x.shape[1:]), x.dtype).to(x.device)
        for i, r in enumerate(opts.radii):
            f1, g1, _, _ = input_gradient(objective, x + r * u)
            rel[:, i, m] = (_flat(g1).double() - g0).norm(dim=1) / g0n
            dloss[:, i, m] = (f1.detach().double() - f0).abs()
    return rel.mean(2), rel.amax(2), dloss.mean(2), g0


def adversarial_gradient_change(objective, x, index, radii, g0, *, steps: int, seed: int) -> torch.Tensor:
    """Worst relative gradient change on the sphere ‖ε‖ = r, (B, R), by projected
    (normalised) gradient ascent on ‖∇f(x+ε) − ∇f(x)‖² from a random start, keeping the
    best iterate. This is the explanation-manipulation attack the paper cites (Ghorbani et al.)."""
    g0n = g0.norm(dim=1).clamp_min(1e-300)
    out = torch.zeros(x.shape[0], len(radii), dtype=torch.float64, device=x.device)
    view = (-1,) + (1,) * (x.dim() - 1)
    for i, r in enumerate(radii):
        eps = r * rng.per_sample_sphere(seed, STREAM_ADV + i, index, tuple(x.shape[1:]), x.dtype).to(x.device)
        for step in range(steps + 1):
            e = eps.detach().requires_grad_(True)
            with torch.enable_grad():
                xe = x + e
                f, _ = objective(xe)
                (g,) = torch.autograd.grad(f.sum(), xe, create_graph=step < steps)
                diff = (_flat(g).double() - g0).pow(2).sum(1)
                out[:, i] = torch.maximum(out[:, i], diff.detach().sqrt() / g0n)
                if step == steps or not diff.requires_grad:  # no graph: ∇f does not depend on ε
                    break
                (d,) = torch.autograd.grad(diff.sum(), e)
            d = d / _flat(d).norm(dim=1).clamp_min(1e-30).view(view)
            eps = eps + 0.5 * r * (1 - step / steps) * d
            eps = r * eps / _flat(eps).norm(dim=1).clamp_min(1e-30).view(view)
    return out


def grad_robustness(
    model: nn.Module,
    data: ImageData,
    options: GradRobustnessOptions | None = None,
    *,
    batch_size: int = 128,
    state_path=None,
    resume: bool = False,
    keep_state: bool = False,
    progress: Progress | None = None,
    config: dict | None = None,
) -> AuditResult:
    """Relative gradient change under random (and optionally adversarial) noise of each
    radius, beside Proposition 1's quadratic approximation and bound (LCNN Fig. 2)."""
    data = as_image_data(data)
    opts = options or GradRobustnessOptions()
    opts.validate()
    copts = opts.curvature
    device = model_device(model)
    cfg = {"options": opts.to_dict(), "data": data.describe(), "batch_size": batch_size, **(config or {})}
    t0 = time.perf_counter()
    with measurement_state(model, copts.dtype, copts.smooth_relu) as prep:
        probe_x = data.get(torch.arange(min(len(data), 2))).x.to(device, prep.dtype)
        check_model_data(prep.model, probe_x, data.labels)
        random_note = check_batch_independence(prep.model, probe_x)

        def compute(batch):
            x, y, idx = batch.x.to(device, prep.dtype), batch.y.to(device), batch.index.to(device)
            geo, _ = compute_geometry(prep.model, x, y, idx, copts)
            objective = make_objective(prep.model, geo["label"].to(device), copts.target)
            rel, rel_max, dloss, g0 = gradient_changes(objective, x, idx, opts, copts.seed)
            require_finite(rel, "input gradients under the noise", batch.index)
            r = torch.tensor(opts.radii, dtype=torch.float64, device=device)
            c, gn = geo["curvature"].to(device), geo["grad_norm"].to(device)
            out = {"index": batch.index, "label": batch.y, "grad_norm": gn, "hessian_norm": geo["hessian_norm"],
                   "curvature": c, "grad_change": rel, "grad_change_max": rel_max, "loss_change": dloss,
                   "loss_change_quadratic": r[None] * gn[:, None] * (1 + r[None] * c[:, None] / 2)}
            if opts.adversarial:
                out["grad_change_adv"] = adversarial_gradient_change(objective, x, idx, opts.radii, g0,
                                                                     steps=opts.adv_steps, seed=copts.seed)
            return out

        run = run_batches(data, compute, batch_size, config=cfg, state_path=state_path, resume=resume,
                          keep_state=keep_state, progress=progress)
    ps = run.per_sample
    summary = summarize_curves(ps, opts.radii) if ps.get("index") else {}
    summary["n"] = len(ps.get("index", []))
    summary["notices"] = list(prep.notices) + ([random_note] if random_note else [])
    if copts.smooth_relu is None and has_relu(model):
        summary["notices"].append(
            "the model uses ReLU: its gradient jumps across activation boundaries, which Proposition 1 (for "
            "twice-differentiable f) does not cover, so measured changes may exceed the theory lines; "
            "--smooth-relu BETA measures the softplus surrogate")
    if has_maxpool(model):
        summary["notices"].append(
            "the model uses max-pooling: its gradient jumps where a pooling window's maximum changes, and on "
            "constant image regions the window values tie exactly, so even tiny noise picks another subgradient; "
            "expect a floor in the relative gradient change as the radius goes to 0 (Proposition 1 assumes a "
            "twice-differentiable f)")
    emit_notices("grad-robustness", summary["notices"])
    return AuditResult(command="grad-robustness", config=cfg, summary=summary, per_sample=ps,
                       timing={"seconds": time.perf_counter() - t0}, environment=environment(device),
                       complete=run.complete)


def summarize_curves(ps: dict, radii) -> dict:
    """Per radius: mean/median/p95 of the relative gradient change and the theory lines."""
    rel = torch.tensor(ps["grad_change"], dtype=torch.float64)
    c = torch.tensor(ps["curvature"], dtype=torch.float64)
    delta = float(c.max())
    mean_c = float(c.mean())
    curves = []
    for i, r in enumerate(radii):
        s = summarize(rel[:, i])
        entry = {"radius": r, "mean": s["mean"], "median": s["median"], "p95": s["p95"], "max": s["max"],
                 "quadratic": r * mean_c, "bound": r * delta * math.exp(min(r * delta, 700.0)),
                 "loss_change_mean": summarize([v[i] for v in ps["loss_change"]])["mean"],
                 "loss_change_quadratic_mean": summarize([v[i] for v in ps["loss_change_quadratic"]])["mean"]}
        if "grad_change_adv" in ps:
            adv = summarize([v[i] for v in ps["grad_change_adv"]])
            entry.update(adv_mean=adv["mean"], adv_median=adv["median"], adv_p95=adv["p95"], adv_max=adv["max"])
        curves.append(entry)
    return {"curves": curves, "delta": delta, "curvature": summarize(c),
            "grad_norm": summarize(ps["grad_norm"]), "hessian_norm": summarize(ps["hessian_norm"])}


def discrepancy(
    model: nn.Module,
    train_data: ImageData,
    test_data: ImageData,
    options: CurvatureOptions | None = None,
    *,
    batch_size: int = 128,
    state_path=None,
    resume: bool = False,
    keep_state: bool = False,
    progress: Progress | None = None,
    config: dict | None = None,
) -> AuditResult:
    """Train-test discrepancy of the split means of gradient norm, Hessian norm and curvature
    (LCNN Table 3), same engine and settings: ``summary["delta_tt"]`` is the caption's
    |g(test) − g(train)| / g(test), ``summary["delta_tt_train"]`` the same over g(train),
    the form that reproduces the printed table's values."""
    train_data, test_data = as_image_data(train_data), as_image_data(test_data)
    opts = options or CurvatureOptions()
    t0 = time.perf_counter()
    results = {}
    for split, data in (("train", train_data), ("test", test_data)):
        sp = None if state_path is None else part_state_path(state_path, split)
        new_phase(progress, f"discrepancy ({split})")
        results[split] = curvature_audit(model, data, opts, batch_size=batch_size, state_path=sp, resume=resume,
                                         keep_state=keep_state, progress=progress, config=config)
    complete = all(r.complete for r in results.values())
    delta, delta_train = {}, {}
    for g in DISCREPANCY_FIELDS:
        tr, te = results["train"].summary[g]["mean"], results["test"].summary[g]["mean"]
        delta[g] = abs(te - tr) / te if te else float("nan")
        delta_train[g] = abs(te - tr) / tr if tr else float("nan")
    per_sample: dict[str, list] = {}
    for split, res in results.items():
        n = len(res.per_sample.get("index", []))
        for k in ("index", "label", *DISCREPANCY_FIELDS, "correct"):
            per_sample.setdefault(k, []).extend(res.per_sample.get(k, []))
        per_sample.setdefault("split", []).extend([split] * n)
    summary = {"delta_tt": delta, "delta_tt_train": delta_train, "train": results["train"].summary,
               "test": results["test"].summary,
               "n_train": len(train_data), "n_test": len(test_data)}
    cfg = {"options": opts.to_dict(), "train_data": train_data.describe(), "test_data": test_data.describe(),
           "batch_size": batch_size, **(config or {})}
    return AuditResult(command="discrepancy", config=cfg, summary=summary, per_sample=per_sample,
                       timing={"seconds": time.perf_counter() - t0},
                       environment=environment(model_device(model)), complete=complete)


def combine_models(results: list[AuditResult], names: list[str]) -> AuditResult:
    """One result for several models on the same data: ``summary["models"]`` lists each
    model's summary; per-sample fields are suffixed ``@k`` for the k-th model."""
    per_sample = {"index": results[0].per_sample.get("index", []), "label": results[0].per_sample.get("label", [])}
    for k, res in enumerate(results):
        for f, v in res.per_sample.items():
            if f not in ("index", "label"):
                per_sample[f"{f}@{k}"] = v
    models = [{"checkpoint": name, **res.summary} for name, res in zip(names, results, strict=True)]
    return AuditResult(command=results[0].command, config={"models": [r.config for r in results]},
                       summary={"models": models, "n": results[0].summary.get("n", 0)}, per_sample=per_sample,
                       timing={"seconds": sum(r.timing.get("seconds", 0.0) for r in results)},
                       environment=results[0].environment, complete=all(r.complete for r in results))


def model_summaries(result: AuditResult) -> list[tuple[str, dict]]:
    """(name, summary) for each model of a single- or multi-model grad-robustness result."""
    if "models" not in result.summary:
        return [(_short(str(result.config.get("checkpoint", "model"))), result.summary)]
    out, seen = [], {}
    for m in result.summary["models"]:
        name = _short(m["checkpoint"])
        seen[name] = seen.get(name, 0) + 1
        out.append((name if seen[name] == 1 else f"{name}#{seen[name]}", m))
    return out


def _short(name: str) -> str:
    from pathlib import Path

    return Path(name).stem if name not in ("demo",) else name
