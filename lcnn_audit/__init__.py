"""lcnn-audit: curvature and robustness audits for PyTorch image classifiers.

Reference: Srinivas, Matoba, Lakkaraju, Fleuret, *Efficient Training of Low-Curvature
Neural Networks*, NeurIPS 2022 (the "LCNN paper"). Every CLI command wraps one function
re-exported here.
"""

__version__ = "0.1.0"

import logging as _logging  # noqa: E402

_logging.getLogger("lcnn_audit").addHandler(_logging.NullHandler())  # the library logs, the application shows

from .attacks import AttackOptions, attack_audit  # noqa: E402
from .benchmark import robustness_benchmark  # noqa: E402
from .bound import bound_audit, curvature_bound  # noqa: E402
from .coerce import as_image_data  # noqa: E402
from .convert import ConvertOptions, convert_model  # noqa: E402
from .data import ImageData, load_data  # noqa: E402
from .errors import LcnnAuditError  # noqa: E402
from .gates import gate, load_policy  # noqa: E402
from .geometry import CurvatureOptions, curvature_audit  # noqa: E402
from .geometry.robustness import GradRobustnessOptions, discrepancy, grad_robustness  # noqa: E402
from .loading import load_model, save_model  # noqa: E402
from .notices import LcnnAuditNotice  # noqa: E402
from .report import write_report  # noqa: E402
from .results import AuditResult  # noqa: E402
from .training import TrainConfig, train  # noqa: E402

__all__ = [
    "__version__", "AttackOptions", "AuditResult", "ConvertOptions", "CurvatureOptions", "GradRobustnessOptions",
    "ImageData", "LcnnAuditError", "LcnnAuditNotice", "TrainConfig", "as_image_data", "attack_audit", "bound_audit",
    "convert_model", "curvature_audit", "curvature_bound", "discrepancy", "gate", "grad_robustness", "load_data",
    "load_model", "load_policy", "robustness_benchmark", "save_model", "train", "write_report",
]
