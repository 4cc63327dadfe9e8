"""Models as lcnn-audit sees them, in layers (each imports only those listed before it):

* ``wrapper``: :class:`~.wrapper.AuditModel` (inputs in [0, 1], (N, C) finite logits), the
  input ``Normalize`` and its spec parser, and the helpers every module uses on a model
  (:func:`model_device`, :func:`model_dtype`, :func:`preserve_training_flags`, ``set_eval``);
* ``builtin``, ``timm_arch``, ``arch``: architecture resolution for ``--arch``;
* ``checkpoint``: reading every checkpoint format (pickle-safe) and writing safetensors;
* ``recipe``: the embedded recipe's validation and trust rule (it reads
  :class:`lcnn_audit.convert.ConvertOptions`, and :mod:`lcnn_audit.convert` needs only
  ``wrapper`` and ``checkpoint``);
* ``load``: :func:`~.load.load_model` / :func:`~.load.save_model`, the public API.

Only ``wrapper`` is imported here: ``convert`` imports this package, so importing ``load``
here would close a cycle."""

from .wrapper import AuditModel, Normalize, model_device, model_dtype, preserve_training_flags, unwrap

__all__ = ["AuditModel", "Normalize", "model_device", "model_dtype", "preserve_training_flags", "unwrap"]
