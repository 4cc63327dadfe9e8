"""The data-free bound (``lcnn-audit bound``, LCNN Theorem 1): per-layer curvature and Lipschitz
constants composed along the model's graph, and the LCNN penalty (eq. 5), over
:func:`lcnn_audit.bound.bound_audit`."""

from __future__ import annotations

from torch import nn

from ..bound import bound_audit
from ..bound.options import BoundOptions
from ..data import ImageData
from ..results import AuditResult
from ..runner import Progress

__all__ = ["BoundOptions", "input_shape", "needs_data", "run"]


def input_shape(options: BoundOptions, data: ImageData | None) -> tuple[int, ...] | None:
    """The input size (C, H, W) the bound uses: ``options.input_shape``, else the data's, else
    None (then :func:`~lcnn_audit.bound.curvature_bound` reads a converted checkpoint's recipe)."""
    if options.input_shape is not None:
        return tuple(options.input_shape)
    return tuple(data.input_shape) if data is not None else None


def needs_data(options: BoundOptions) -> bool:
    """The bound reads data only for its input size."""
    return options.input_shape is None


def run(model: nn.Module, data: ImageData | None, options: BoundOptions | None = None, *, batch_size: int = 128,
        progress: Progress | None = None, config: dict | None = None) -> AuditResult:
    """:func:`~lcnn_audit.bound.bound_audit` on inputs of :func:`input_shape`. ``data`` (may be
    None) only gives the input size; ``batch_size`` is unused (the bound reads no batches)."""
    opts = options or BoundOptions()
    opts.validate()
    return bound_audit(model, input_shape(opts, data), lambda_beta=opts.lambda_beta, lambda_gamma=opts.lambda_gamma,
                       tol=opts.tol, max_iter=opts.max_iter, config=config, progress=progress)
