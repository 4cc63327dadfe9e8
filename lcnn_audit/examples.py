"""The most curved samples, as pictures: input, input gradient, top Hessian eigenvector
(and, after an attack, the adversarial example and its perturbation).

Means hide where curvature lives; these pictures show it. The audits find the samples (the
``k`` largest per-sample curvatures C_f = ‖∇²f‖₂/(‖∇f‖₂+ε), LCNN §3.1) and only those ``k``
are recomputed here, with the same options, to get the vectors the audit does not keep:
∇ₓf and the unit eigenvector u₁ of the eigenvalue λ₁ of largest magnitude (Lanczos Ritz
vector, or the exact Gauss-Newton one for piecewise-linear nets). u₁'s sign is arbitrary;
it is chosen so that ⟨u₁, ∇f⟩ ≥ 0.

:class:`Examples` holds the tensors; :meth:`Examples.to_dict` stores them in a result's
``summary["examples"]`` compactly (float16, base64, images at most 64 pixels a side) so the
report can draw them without recomputing; :func:`lcnn_audit.plots.examples_figure` draws
the grid.
"""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .coerce import as_image_data
from .errors import UsageError
from .geometry.measures import CurvatureOptions, compute_geometry
from .geometry.state import measurement_state
from .model.wrapper import model_device
from .results import AuditResult

MAX_SIDE = 64  # stored images are downsampled to this many pixels a side at most
IMAGE_KEYS = ("x", "gradient", "top_vector", "x_adv", "perturbation")


@dataclass
class Examples:
    """``k`` samples with their pictures; image tensors are (k, C, H, W) float32 on the CPU."""

    index: list[int]
    label: list[int]
    pred: list[int]
    curvature: list[float]
    eigenvalue: list[float]  # λ₁, signed
    grad_norm: list[float]
    images: dict[str, torch.Tensor] = field(default_factory=dict)  # keys from IMAGE_KEYS
    adversarial: dict | None = None  # {"attack", "norm", "eps": [..], "adv_pred": [..], "norm_value": [..]}

    def __len__(self) -> int:
        return len(self.index)

    def __repr__(self) -> str:
        shape = tuple(self.images["x"].shape[1:]) if "x" in self.images else ()
        return f"Examples(k={len(self)}, input_shape={shape}, images={list(self.images)})"

    def to_dict(self, max_side: int = MAX_SIDE) -> dict:
        """JSON form; images above ``max_side`` pixels are average-pooled, stored as base64 float16."""
        imgs = {}
        for k, t in self.images.items():
            if max(t.shape[-2:]) > max_side:
                t = F.adaptive_avg_pool2d(t, (min(t.shape[-2], max_side), min(t.shape[-1], max_side)))
            # float16 holds |v| <= 65504: store each sample over its max |v| (kept in float64), so a
            # huge gradient of a random-weight net is kept rather than cast to inf
            scale = t.detach().double().flatten(1).abs().amax(dim=1).clamp_min(1e-300)
            arr = (t.double() / scale.view(-1, *[1] * (t.ndim - 1))).numpy().astype("<f2")
            imgs[k] = {"shape": list(arr.shape), "scale": scale.tolist(),
                       "float16_base64": base64.b64encode(arr.tobytes()).decode("ascii")}
        return {"index": self.index, "label": self.label, "pred": self.pred, "curvature": self.curvature,
                "eigenvalue": self.eigenvalue, "grad_norm": self.grad_norm, "images": imgs,
                "adversarial": self.adversarial}

    @classmethod
    def from_dict(cls, d: dict) -> Examples:
        """Inverse of :meth:`to_dict`."""
        imgs = {}
        for k, v in (d.get("images") or {}).items():
            raw = np.frombuffer(base64.b64decode(v["float16_base64"]), dtype="<f2").astype(np.float64)
            raw = raw.reshape(v["shape"])
            if "scale" in v:  # per-sample scale (older results stored the values directly)
                raw = raw * np.asarray(v["scale"], dtype=np.float64).reshape(-1, *[1] * (raw.ndim - 1))
            imgs[k] = torch.from_numpy(raw.astype(np.float32))
        return cls(index=list(d["index"]), label=list(d["label"]), pred=list(d["pred"]),
                   curvature=list(d["curvature"]), eigenvalue=list(d["eigenvalue"]), grad_norm=list(d["grad_norm"]),
                   images=imgs, adversarial=d.get("adversarial"))


def _positions(data, index: list[int]) -> torch.Tensor:
    """Positions in ``data`` (0..len-1) of dataset indices ``index``."""
    where = {int(i): p for p, i in enumerate(data.indices.tolist())}
    missing = [i for i in index if i not in where]
    if missing:
        raise UsageError(f"samples {missing[:3]} of the result are not in the data given; pass the data the audit "
                         "ran on")
    return torch.tensor([where[i] for i in index])


def top_curved(result: AuditResult, k: int, among: list[int] | None = None) -> list[int]:
    """Dataset indices of the ``k`` samples with the largest curvature (NaN last) in ``result``."""
    ps = result.per_sample
    if "curvature" not in ps:
        raise UsageError(f"a {result.command} result has no per-sample curvature")
    rows = [(float("-inf") if math.isnan(c) else c, i) for i, c in zip(ps["index"], ps["curvature"], strict=True)
            if among is None or i in among]
    rows.sort(key=lambda r: -r[0])
    return [i for _, i in rows[:k]]


def _geometry(model: nn.Module, data, index: list[int], opts: CurvatureOptions):
    batch = data.get(_positions(data, index))
    device = model_device(model)
    with measurement_state(model, opts.dtype, opts.smooth_relu) as prep:
        x = batch.x.to(device, prep.dtype)
        geo, _ = compute_geometry(prep.model, x, batch.y.to(device), batch.index.to(device), opts, vectors=True)
    g, u = geo["gradient"].double(), geo["top_vector"].double()
    sign = torch.where((g * u).flatten(1).sum(1) < 0, -1.0, 1.0).view(-1, *[1] * (u.dim() - 1))
    return batch, geo, (u * sign).float()


def curved_examples(model: nn.Module, data, result: AuditResult, k: int = 6,
                    options: CurvatureOptions | None = None) -> Examples:
    """The ``k`` most curved samples of a curvature (or grad-robustness) ``result`` on ``data``,
    recomputed with ``options`` (default: the result's own) to get ∇f and u₁."""
    if k < 1:
        raise UsageError(f"k must be at least 1, got {k}")
    data = as_image_data(data)
    opts = options or _options_of(result)
    index = top_curved(result, k)
    batch, geo, u = _geometry(model, data, index, opts)
    return Examples(index=index, label=batch.y.tolist(), pred=geo["pred"].tolist(),
                    curvature=geo["curvature"].tolist(), eigenvalue=geo["top_eig"].tolist(),
                    grad_norm=geo["grad_norm"].tolist(),
                    images={"x": batch.x.float().cpu(), "gradient": geo["gradient"].float().cpu(),
                            "top_vector": u.cpu()})


def _options_of(result: AuditResult) -> CurvatureOptions:
    o = (result.config.get("options") or {})
    o = o.get("curvature", o)  # grad-robustness nests its curvature options
    names = set(CurvatureOptions.__dataclass_fields__)
    return CurvatureOptions(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in o.items() if k in names})


def adversarial_examples(model: nn.Module, data, result: AuditResult, k: int = 6, candidates: int = 64, *,
                         options: CurvatureOptions | None = None) -> Examples:
    """For an attack ``result``: of the (first ``candidates``) samples the attack broke in the
    first norm, the ``k`` most curved, each with its adversarial example at the smallest eps
    that broke it (re-attacked alone: the attacks are seeded per sample, so this reproduces
    the audit's) and the perturbation."""
    from .attacks.base import recheck  # noqa: PLC0415
    from .attacks.fields import robust as robust_field  # noqa: PLC0415
    from .attacks.options import WORST, AttackOptions  # noqa: PLC0415

    if result.command != "attack":
        raise UsageError(f"adversarial examples need an attack result, got {result.command}")
    data = as_image_data(data)
    aopts = AttackOptions(**_attack_kwargs(result))
    norm = aopts.norms[0]
    ps = result.per_sample
    bounded = [a for a, n in aopts.plan() if n == norm and a in ("pgd", "fgsm", "autoattack")]
    if not bounded:
        raise UsageError("adversarial examples need an eps-bounded attack (pgd, fgsm or autoattack) in the result")
    first: dict[int, float] = {}  # dataset index -> smallest eps that broke it
    for eps in aopts.eps_for(norm):
        robust = ps.get(robust_field(WORST, norm, eps), [])
        for i, c, r in zip(ps["index"], ps["correct"], robust, strict=False):
            if c and not r and i not in first:
                first[i] = eps
    if not first:
        raise UsageError("the attack broke no sample, so there is no adversarial example to show")
    chosen = sorted(first, key=lambda i: (first[i], i))[:candidates]
    # only C_f, ∇f and u₁ are needed: no Frobenius probes, no Jacobian measures
    copts = options or CurvatureOptions(seed=aopts.seed, fro_probes=0, jacobian="off")
    _, geo, _ = _geometry(model, data, chosen, copts)
    index = [chosen[int(i)] for i in geo["curvature"].argsort(descending=True)[:k].cpu()]
    batch, geo, u = _geometry(model, data, index, copts)
    device = model_device(model)
    x, y, idx = batch.x.to(device), batch.y.to(device), batch.index.to(device)
    eps_of = torch.tensor([first[i] for i in index], dtype=torch.float64)
    best = x.clone()
    found = torch.zeros(len(index), dtype=torch.bool, device=device)
    with measurement_state(model) as prep:
        for eps in sorted(set(eps_of.tolist())):
            sel = (eps_of == eps).nonzero().squeeze(1).to(device)
            tries = [(a, None) for a in bounded]
            if aopts.masking_checks and "pgd" in bounded:  # the audit's longer PGD run counts in the worst case
                tries.append(("pgd", aopts.steps * aopts.steps_factor))
            for attack, steps in tries:
                if bool(found[sel].all()):
                    break
                atk = aopts.build(attack, norm, eps, steps=steps)
                xs, ys, ids = x[sel], y[sel], idx[sel]
                x_adv = atk.run(prep.model, xs, ys, ids).x_adv if attack == "autoattack" else atk(prep.model, xs, ys,
                                                                                                   ids)
                rc = recheck(prep.model, xs, x_adv, ys, norm, eps, f"{attack} {norm} eps={eps:g} (examples)")
                new = rc.adversarial & ~found[sel]
                best[sel[new]] = x_adv[new]
                found[sel[rc.adversarial]] = True
        with torch.no_grad():
            adv_pred = prep.model(best).argmax(1)
    delta = (best - x).cpu()
    p = float("inf") if norm == "linf" else (1 if norm == "l1" else 2)
    return Examples(index=index, label=batch.y.tolist(), pred=geo["pred"].tolist(),
                    curvature=geo["curvature"].tolist(), eigenvalue=geo["top_eig"].tolist(),
                    grad_norm=geo["grad_norm"].tolist(),
                    images={"x": batch.x.float().cpu(), "gradient": geo["gradient"].float().cpu(),
                            "top_vector": u.cpu(), "x_adv": best.float().cpu(), "perturbation": delta.float()},
                    adversarial={"norm": norm, "eps": eps_of.tolist(), "attacks": bounded,
                                 "adv_pred": adv_pred.tolist(), "found": found.tolist(),
                                 "distance": delta.flatten(1).norm(p=p, dim=1).tolist()})


def _attack_kwargs(result: AuditResult) -> dict:
    from .attacks.options import AttackOptions  # noqa: PLC0415

    o = dict(result.config.get("options") or {})
    names = set(AttackOptions.__dataclass_fields__) - {"notices"}
    kw = {k: v for k, v in o.items() if k in names}
    if isinstance(kw.get("eps"), dict):
        kw["eps"] = {n: tuple(v) for n, v in kw["eps"].items()}
    elif isinstance(kw.get("eps"), list):
        kw["eps"] = tuple(kw["eps"])
    for key in ("attacks", "norms", "aa_attacks"):
        if isinstance(kw.get(key), list):
            kw[key] = tuple(kw[key])
    return kw


def attach_examples(result: AuditResult, examples: Examples) -> AuditResult:
    """Store ``examples`` in ``result.summary["examples"]`` (for the report)."""
    result.summary["examples"] = examples.to_dict()
    return result
