"""The curvature audit (``lcnn-audit curvature``): per-sample ‖∇f‖₂, ‖∇²f‖₂ and
C_f = ‖∇²f‖₂ / (‖∇f‖₂ + ε) (LCNN §3.1), over :func:`lcnn_audit.geometry.curvature_audit`."""

from __future__ import annotations

import dataclasses

from torch import nn

from ..data import ImageData
from ..examples import Examples, attach_examples, curved_examples
from ..geometry.audit import curvature_audit
from ..geometry.measures import CurvatureOptions
from ..results import AuditResult
from ..runner import Progress, dist_info


def run(model: nn.Module, data: ImageData, options: CurvatureOptions | None = None, *, batch_size: int = 128,
        state_path=None, resume: bool = False, keep_state: bool = False, progress: Progress | None = None,
        config: dict | None = None, examples: int = 0) -> AuditResult:
    """:func:`~lcnn_audit.geometry.curvature_audit`; with ``examples=k``, the ``k`` most curved
    samples' pictures are kept in the result (see :func:`add_examples`)."""
    result = curvature_audit(model, data, options, batch_size=batch_size, state_path=state_path, resume=resume,
                             keep_state=keep_state, progress=progress, config=config)
    if examples:
        add_examples(model, data, result, examples, options)
    return result


def add_examples(model: nn.Module, data: ImageData, result: AuditResult, k: int,
                 options: CurvatureOptions | None = None) -> Examples | None:
    """Attach the ``k`` most curved samples (input, ∇f, top eigenvector) to a complete
    ``result`` for the report, and return them; None for an interrupted run, or off rank 0
    under torchrun (rank 0 holds every sample). The vectors are recomputed with ``options``
    minus the Frobenius and Jacobian extras, which do not change them."""
    if k < 1 or not result.complete or dist_info()[0] != 0 or not len(result):
        return None
    opts = dataclasses.replace(options or CurvatureOptions(), fro_probes=0, jacobian="off")
    ex = curved_examples(model, data, result, k=min(k, len(result)), options=opts)
    attach_examples(result, ex)
    return ex
