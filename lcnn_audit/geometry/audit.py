"""``curvature_audit``: the Python function behind ``lcnn-audit curvature``."""

from __future__ import annotations

import time

import torch
from torch import nn

from ..coerce import as_image_data
from ..data import ImageData
from ..independence import check_batch_independence
from ..model.wrapper import check_model_data, model_device
from ..notices import emit_notices
from ..results import AuditResult, environment, summarize_fields
from ..runner import Progress, run_batches
from .gauss_newton import has_relu
from .measures import CurvatureOptions, compute_geometry
from .state import measurement_state

FIELD_ORDER = ("index", "label", "pred", "correct", "grad_norm", "hessian_norm", "curvature", "hessian_eigs",
               "alignment", "hessian_fro", "fd_curvature", "jacobian_fro", "cross_lipschitz", "converged",
               "iterations")


def curvature_audit(
    model: nn.Module,
    data: ImageData,
    options: CurvatureOptions | None = None,
    *,
    batch_size: int = 128,
    state_path=None,
    resume: bool = False,
    keep_state: bool = False,
    progress: Progress | None = None,
    config: dict | None = None,
) -> AuditResult:
    """Per-sample gradient norm, Hessian spectral norm, normalised curvature
    C_f = ‖∇²f‖₂/(‖∇f‖₂+ε) (LCNN §3.1) and related measures, with Table 1-style summaries.

    The model's mode and ``requires_grad`` flags are restored afterwards.
    """
    data = as_image_data(data)
    opts = options or CurvatureOptions()
    opts.validate()
    device = model_device(model)
    probe = data.get(torch.arange(min(len(data), 2)))
    methods: set[str] = set()
    cfg = {"options": opts.to_dict(), "data": data.describe(), "batch_size": batch_size, **(config or {})}
    t0 = time.perf_counter()
    with measurement_state(model, opts.dtype, opts.smooth_relu) as prep:
        num_classes = check_model_data(prep.model, probe.x.to(device, prep.dtype), data.labels)
        notices = prep.notices  # the same list: measurement_state adds what it substituted when it ends
        random_note = check_batch_independence(prep.model, probe.x.to(device, prep.dtype))
        if random_note:
            notices.append(random_note)
        if opts.smooth_relu is None and has_relu(prep.model):
            notices.append("the model uses ReLU: its input Hessian is only the softmax part JᵀAJ (ReLU has no "
                           "second derivative); pass --smooth-relu 1000 to measure the softplus surrogate "
                           "used as the LCNN paper's standard baseline")

        def compute(batch):
            x = batch.x.to(device=device, dtype=prep.dtype)
            y = batch.y.to(device)
            fields, method = compute_geometry(prep.model, x, y, batch.index.to(device), opts)
            methods.add(method)
            fields["index"] = batch.index
            fields["correct"] = fields["pred"] == y
            return fields

        run = run_batches(data, compute, batch_size, config=cfg, state_path=state_path, resume=resume,
                          keep_state=keep_state, progress=progress)
    per_sample = {k: run.per_sample[k] for k in FIELD_ORDER if k in run.per_sample}
    summary = summarize_fields({k: v for k, v in per_sample.items() if k != "hessian_eigs"})
    if per_sample.get("correct"):
        summary["accuracy"] = sum(per_sample["correct"]) / len(per_sample["correct"])
    summary["n"] = len(per_sample.get("index", []))
    summary["method"] = sorted(methods)[0] if len(methods) == 1 else sorted(methods)
    summary["not_converged"] = sum(1 for c in per_sample.get("converged", []) if not c)
    summary["notices"] = list(notices)
    summary["num_classes"] = num_classes
    emit_notices("curvature", notices)
    return AuditResult(
        command="curvature", config=cfg, summary=summary, per_sample=per_sample,
        timing={"seconds": time.perf_counter() - t0, "samples_per_second": len(data) / max(run.seconds, 1e-9)},
        environment=environment(device), complete=run.complete,
    )
