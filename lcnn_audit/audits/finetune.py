"""``lcnn-audit finetune`` as a library call: train a model from initialisation, or fine-tune
a trained one (optionally converted to an LCNN first), with curvature penalties.

:func:`finetune` is the whole command: it builds or converts the model
(:func:`prepare_model`), picks the learning rate (``TrainConfig.lr=None``: 0.1 from scratch,
0.01 when fine-tuning; :func:`lcnn_audit.training.effective_lr`) and runs
:func:`lcnn_audit.training.train`. ``--lcnn``'s weights are :func:`lcnn_penalty_weights`
(LCNN arXiv appendix E: λβ = 1e-4, λγ = 1e-5). The CLI parses options, calls these and
renders; a Python caller gets the same run from the same arguments.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..convert import ConversionReport, convert_model
from ..data import ImageData
from ..errors import UsageError
from ..io import write_text
from ..loading import AuditModel
from ..reproducibility import StopFlag
from ..results import AuditResult
from ..training import StepInfo, TrainConfig, init_model, train
from .convert import check_model_path

#: LCNN penalty weights of the LCNN paper (arXiv version, appendix E), used by ``--lcnn``.
PAPER_LAMBDA_BETA, PAPER_LAMBDA_GAMMA = 1e-4, 1e-5


@dataclass(frozen=True)
class FromScratch:
    """Train ``arch`` from a seeded initialisation (``--from-scratch --arch NAME``) instead of
    fine-tuning a loaded model. ``normalize=None``: the dataset's documented mean/std when
    ``dataset`` has one (:func:`lcnn_audit.training.init_model`)."""

    arch: str
    arch_kwargs: dict = field(default_factory=dict)
    normalize: str | None = None
    dataset: str | None = None


def lcnn_penalty_weights(lcnn: bool = False, lambda_beta: float | None = None,
                         lambda_gamma: float | None = None) -> tuple[float, float]:
    """(λβ, λγ) of the LCNN penalty (eq. 5): with ``lcnn`` or either weight given, a weight
    left ``None`` is the paper's (1e-4, 1e-5); otherwise the penalty is off (0, 0)."""
    if lcnn or lambda_beta or lambda_gamma:
        return (PAPER_LAMBDA_BETA if lambda_beta is None else float(lambda_beta),
                PAPER_LAMBDA_GAMMA if lambda_gamma is None else float(lambda_gamma))
    return 0.0, 0.0


def prepare_model(source: AuditModel | FromScratch, input_shape: tuple[int, ...], *, convert: bool = False,
                  seed: int = 0, device: str = "cpu",
                  name: str = "the model") -> tuple[AuditModel, ConversionReport | None]:
    """The model to train and, when a loaded model was converted here, the conversion report.

    From scratch, ``convert`` builds the LCNN architecture (γ starting at the paper's 11);
    a loaded model is converted in place on ``input_shape`` (function-preserving γ), and one
    that already is an LCNN is refused (``name`` says which in the message)."""
    if isinstance(source, FromScratch):
        model = init_model(source.arch, dict(source.arch_kwargs), source.normalize, dataset=source.dataset,
                           seed=seed, device=device, convert=convert, input_shape=tuple(input_shape))
        return model, None
    if not convert:
        return source, None
    if (getattr(source, "recipe", None) or {}).get("convert"):
        raise UsageError(f"{name} is already LCNN-converted; drop --convert")
    return convert_model(source, None, input_shape=tuple(input_shape), inplace=True)


def finetune(  # noqa: PLR0913 - the public API: data, config and keyword-only run controls (as train)
    source: AuditModel | FromScratch,
    train_data: ImageData,
    test_data: ImageData | None,
    config: TrainConfig,
    *,
    convert: bool = False,
    device: str = "cpu",
    checkpoint: str | None = None,
    output: str | Path | None = None,
    run_dir: str | Path | None = None,
    resume: bool = False,
    on_ready: Callable[[AuditModel, ConversionReport | None], None] | None = None,
    on_step: Callable[[StepInfo], None] | None = None,
    on_epoch: Callable[[dict], None] | None = None,
    stop: StopFlag | None = None,
    handle_sigint: bool = False,
    seed_global_rngs: bool = False,
    compile_kernels: bool = False,
) -> AuditResult:
    """Train ``source`` (a loaded model, fine-tuned in place; or :class:`FromScratch`) on
    ``train_data``, evaluating on ``test_data`` after every epoch; the ``lcnn-audit finetune``
    command.

    ``convert``: see :func:`prepare_model` (seeded by ``config.seed``). ``config.lr=None``
    trains at 0.1 from scratch and 0.01 when fine-tuning. ``checkpoint`` (where a loaded
    model came from) is recorded in the log as the run's source and named in messages.
    ``output`` (a ``.safetensors`` path, checked first), ``run_dir``, ``resume``, the
    callbacks, ``stop``, ``handle_sigint``, ``seed_global_rngs`` and ``compile_kernels`` are
    those of :func:`lcnn_audit.training.train`; ``on_ready(model, conversion report or
    None)`` is called once the model is built or converted, before training starts.
    """
    config.validate()
    if output is not None:
        check_model_path(output, "output")
    scratch = isinstance(source, FromScratch)
    model, report = prepare_model(source, train_data.input_shape, convert=convert, seed=config.seed,
                                  device=device, name=checkpoint or "the model")
    if on_ready is not None:
        on_ready(model, report)
    run_config = {"source": {"from_scratch": True} if scratch else {"checkpoint": checkpoint}}
    return train(model, train_data, test_data, config, run_dir=run_dir, resume=resume, output=output,
                 run_config=run_config, on_step=on_step, on_epoch=on_epoch, stop=stop, handle_sigint=handle_sigint,
                 seed_global_rngs=seed_global_rngs, compile_kernels=compile_kernels, from_scratch=scratch)


def epoch_rows(result: AuditResult) -> list[dict]:
    """One flat row per trained epoch of a ``finetune`` result (``penalties.NAME`` columns)."""
    rows = []
    for rec in result.summary.get("epochs") or []:
        row = {k: v for k, v in rec.items() if k != "penalties"}
        row.update({f"penalties.{k}": v for k, v in (rec.get("penalties") or {}).items()})
        rows.append(row)
    return rows


def save_epochs_csv(result: AuditResult, path: str | Path) -> Path:
    """Write :func:`epoch_rows` as CSV (atomically), columns in first-seen order."""
    rows = epoch_rows(result)
    cols = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols)
    w.writeheader()
    w.writerows(rows)
    return write_text(path, buf.getvalue())
