"""Models as lcnn-audit sees them: the wrapper, architectures, checkpoint reading, loading.

``wrapper`` holds the helpers every module uses on a model (:func:`model_device`,
:func:`preserve_training_flags`)."""

from .wrapper import model_device, model_dtype, preserve_training_flags

__all__ = ["model_device", "model_dtype", "preserve_training_flags"]
