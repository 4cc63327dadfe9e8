"""The train-test discrepancy audit (``lcnn-audit discrepancy``, LCNN §5.4, Table 3):
Δtt g = |g(test) − g(train)| / g(test) of the split means of ‖∇f‖, ‖∇²f‖ and C_f, over
:func:`lcnn_audit.geometry.robustness.discrepancy`."""

from __future__ import annotations

from typing import Any

from torch import nn

from ..data import ImageData, same_samples
from ..errors import UsageError
from ..geometry.options import DiscrepancyOptions
from ..geometry.robustness import discrepancy
from ..results import AuditResult
from ..runner import Progress


def run(model: nn.Module, data: ImageData, options: DiscrepancyOptions | None = None, *, train_data: ImageData,
        batch_size: int = 128, state_path=None, resume: bool = False, keep_state: bool = False,
        progress: Progress | None = None, config: dict | None = None) -> AuditResult:
    """:func:`~lcnn_audit.geometry.robustness.discrepancy` between ``train_data`` and ``data``
    (the test split), with ``options.curvature``."""
    opts = options or DiscrepancyOptions()
    opts.validate()
    return discrepancy(model, train_data, data, opts.curvature, batch_size=batch_size, state_path=state_path,
                       resume=resume, keep_state=keep_state, progress=progress, config=config)


def inputs(options: DiscrepancyOptions, data: ImageData | None, source: Any) -> dict[str, ImageData]:
    """:func:`run`'s data for a policy's (or the demo's) data ``source`` (a
    :class:`~lcnn_audit.gates.DataSpec`): its test split (``data`` when that is it) and the
    train split, from ``options.train_path`` when set. Refuses a source whose two splits are
    one set of images (every discrepancy would be 0)."""
    test = data if data is not None and source.split == "test" else source.load("test")
    train = source.load("train", spec=options.train_path)
    if options.train_path is None and same_samples(train, test):
        raise UsageError(f"audits.discrepancy: data {source.spec} has no separate train and test splits (both read "
                         f"{test.source}), so every discrepancy would be 0; set audits.discrepancy.train_path")
    return {"data": test, "train_data": train}
