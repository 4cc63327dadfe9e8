"""The bound as a function of a model (:func:`curvature_bound`) and as an audit result
(:func:`bound_audit`, command ``bound``); the LCNN penalty (eq. 5) is reported beside it."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch
from torch import nn

from ..errors import ModelError, UsageError
from ..layers import CenteredSoftplus, LipschitzBatchNorm1d, LipschitzBatchNorm2d
from ..loading import AuditModel, Normalize
from ..model import model_device, model_dtype, preserve_training_flags
from ..notices import emit_notices
from ..results import AuditResult, environment
from .graph import propagate, record, trace
from .options import BOUND_MAX_ITER, BOUND_TOL, LAMBDA_BETA, LAMBDA_GAMMA, BoundOptions
from .result import BoundReport


def _model_parts(model: nn.Module):
    """(net, its input normalisation or None, output key, recipe) of a model or AuditModel."""
    if isinstance(model, AuditModel):
        norm = model.normalize if isinstance(model.normalize, Normalize) else None
        return model.net, norm, model.output_key, getattr(model, "recipe", {}) or {}
    return model, None, None, {}


def _input_shape(recipe: dict, input_shape) -> tuple[int, ...]:
    if input_shape is not None:
        shape = tuple(int(s) for s in input_shape)
        if not shape or any(s <= 0 for s in shape):
            raise UsageError(f"input shape must be positive sizes (C,H,W), got {input_shape}")
        return shape
    conv = recipe.get("convert") or {}
    if conv.get("input_shape"):
        return tuple(int(s) for s in conv["input_shape"])
    raise UsageError("the bound needs the model's input size (conv operator norms depend on it): pass --input-shape "
                     "C,H,W or --data; converted checkpoints record it")


def _check_weights(net: nn.Module) -> None:
    """A NaN or infinite weight (or batch-norm variance) makes every bound meaningless: refuse."""
    bad = [n for n, p in net.named_parameters() if p.is_floating_point() and not bool(torch.isfinite(p).all())]
    bad += [n for n, m in net.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
            and m.running_var is not None and not bool(torch.isfinite(m.running_var).all())]
    if bad:
        raise ModelError(f"the model's weights hold NaN or infinite values ({', '.join(bad[:4])}"
                         f"{', ...' if len(bad) > 4 else ''}), so no bound can be computed; check the checkpoint")


def curvature_bound(model: nn.Module, input_shape=None, *, lambda_beta: float = LAMBDA_BETA,
                    lambda_gamma: float = LAMBDA_GAMMA, tol: float = BOUND_TOL,
                    max_iter: int = BOUND_MAX_ITER, progress: Callable[[int, int], object] | None = None
                    ) -> BoundReport:
    """Theorem 1 data-free bound, rigorous Lipschitz/Hessian bounds and the LCNN penalty of
    ``model`` (eval mode) on inputs of ``input_shape`` (C, H, W); see :mod:`lcnn_audit.bound`.

    An :class:`~lcnn_audit.loading.AuditModel` includes its input normalisation as the first
    layer; a converted checkpoint's recipe supplies the input shape. ``progress(done, total)``
    counts the graph nodes bounded. The model's training flags are left as they were.
    """
    BoundOptions(lambda_beta=lambda_beta, lambda_gamma=lambda_gamma, tol=tol, max_iter=max_iter).validate()
    net, normalize, output_key, recipe = _model_parts(model)
    shape = _input_shape(recipe, input_shape)
    _check_weights(net)
    device, dtype = model_device(net), model_dtype(net)
    t0 = time.perf_counter()
    with preserve_training_flags(model):
        model.eval()  # before tracing: code that branches on self.training is traced in eval mode
        gm = trace(net)
        x = torch.rand((1, *shape), generator=torch.Generator().manual_seed(0)).to(device, dtype)
        if normalize is not None:
            with torch.no_grad():
                x = normalize(x)
        report = propagate(gm, record(gm, x, shape), normalize, output_key, tol=tol, max_iter=max_iter,
                           progress=progress)
    report.summary.update(_penalty(net, lambda_beta, lambda_gamma))
    report.summary["input_shape"] = list(shape)
    report.summary["seconds"] = time.perf_counter() - t0
    return report


def bound_audit(model: nn.Module, input_shape=None, *, lambda_beta: float = LAMBDA_BETA,
                lambda_gamma: float = LAMBDA_GAMMA, tol: float = BOUND_TOL, max_iter: int = BOUND_MAX_ITER,
                config: dict | None = None, progress: Callable[[int, int], object] | None = None) -> AuditResult:
    """:func:`curvature_bound` as an :class:`~lcnn_audit.results.AuditResult` (command ``bound``):
    the totals in ``summary``, one entry per layer in ``summary["layers"]``."""
    report = curvature_bound(model, input_shape, lambda_beta=lambda_beta, lambda_gamma=lambda_gamma, tol=tol,
                             max_iter=max_iter, progress=progress)
    d = report.to_dict()
    summary = {**d["summary"], "layers": d["layers"]}
    emit_notices("bound", summary["notes"][1:])  # the first note explains the bound, it is no caveat
    cfg = {"input_shape": summary["input_shape"], "tol": tol, "max_iter": max_iter, "lambda_beta": lambda_beta,
           "lambda_gamma": lambda_gamma, "model": dict(getattr(model, "recipe", {}) or {}), **(config or {})}
    return AuditResult(command="bound", config=cfg, summary=summary, per_sample={},
                       timing={"seconds": summary.pop("seconds")}, environment=environment(model_device(model)))


def _penalty(net: nn.Module, lambda_beta: float, lambda_gamma: float) -> dict:
    """R_f = λβ·Σβᵢ + λγ·Σ log γⱼ (LCNN eq. 5) over the centered softplus and γ-Lipschitz BN layers."""
    betas = [float(m.beta.detach()) for m in net.modules() if isinstance(m, CenteredSoftplus)]
    gammas = [float(m.gamma.detach()) for m in net.modules()
              if isinstance(m, (LipschitzBatchNorm1d, LipschitzBatchNorm2d))]
    sum_beta, sum_log_gamma = sum(betas), sum(math.log(g) for g in gammas)
    return {"sum_beta": sum_beta, "sum_log_gamma": sum_log_gamma, "n_softplus": len(betas), "n_gamma_bn": len(gammas),
            "lambda_beta": lambda_beta, "lambda_gamma": lambda_gamma,
            "penalty": lambda_beta * sum_beta + lambda_gamma * sum_log_gamma}
