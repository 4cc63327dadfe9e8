"""lcnn-audit: curvature and robustness audits for PyTorch image classifiers.

Reference: Srinivas, Matoba, Lakkaraju, Fleuret, *Efficient Training of Low-Curvature
Neural Networks*, NeurIPS 2022 (the "LCNN paper").
"""

__version__ = "0.1.0"

from .data import ImageData, load_data  # noqa: E402
from .errors import LcnnAuditError  # noqa: E402
from .loading import load_model  # noqa: E402
from .results import AuditResult  # noqa: E402

__all__ = ["__version__", "AuditResult", "ImageData", "LcnnAuditError", "load_data", "load_model"]
