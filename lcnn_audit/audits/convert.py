"""``lcnn-audit convert`` as a library call: convert a loaded model to an LCNN, measure clean
accuracy before and after, save it with its recipe (Srinivas et al., NeurIPS 2022, §3.3-3.4).

The conversion is :func:`lcnn_audit.convert.convert_model`; accuracy before/after and the
result are :func:`lcnn_audit.convert.convert_checkpoint`. :func:`convert` is the command:
it refuses an output path that would not load again (:func:`check_model_path`, shared with
``finetune``) before any work, then runs :func:`~lcnn_audit.convert.convert_checkpoint`.
"""

from __future__ import annotations

from pathlib import Path

from ..convert import ConvertOptions, convert_checkpoint
from ..data import ImageData
from ..errors import UsageError
from ..loading import AuditModel
from ..results import AuditResult

__all__ = ["check_model_path", "convert", "convert_checkpoint"]


def check_model_path(path: str | Path, option: str = "output") -> None:
    """A model is written as safetensors with its recipe: refuse another extension (``out.pt``
    would hold safetensors bytes that torch.load cannot read). ``option`` names the path in
    the message (``--out`` on the command line)."""
    path = Path(path)
    if path.suffix.lower() != ".safetensors":
        raise UsageError(f"{option} {path}: models are written as safetensors with their recipe; name the file "
                         f"{path.with_suffix('.safetensors').name}")


def convert(model: AuditModel, options: ConvertOptions | None = None, *, output: str | Path | None = None,
            input_shape: tuple[int, ...] | None = None, data: ImageData | None = None, batch_size: int = 128,
            config: dict | None = None, progress=None) -> tuple[AuditModel, AuditResult]:
    """The ``lcnn-audit convert`` command: validate ``options``, check ``output`` (a
    ``.safetensors`` path) before any work, convert ``model`` (its input size from ``data``'s
    first batch or ``input_shape``), report clean accuracy before and after on ``data`` and
    save the LCNN with its recipe. Returns (converted model, result of command ``convert``)."""
    options = options or ConvertOptions()
    options.validate()
    if output is not None:
        check_model_path(output, "output")
    return convert_checkpoint(model, options, output=output, input_shape=input_shape, data=data,
                              batch_size=batch_size, config=config, progress=progress)
