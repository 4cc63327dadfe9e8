"""lcnn-audit: curvature and robustness audits for PyTorch image classifiers.

Reference: Srinivas, Matoba, Lakkaraju, Fleuret, *Efficient Training of Low-Curvature
Neural Networks*, NeurIPS 2022 (the "LCNN paper"). Every CLI command wraps one function
re-exported here.
"""

import logging as _logging

from ._version import __version__

#: public name -> the module that defines it; imported on first use (PEP 562), so that the
#: command line starts (and a Ctrl-C during start-up is handled) before torch is imported
_EXPORTS = {
    "AttackOptions": "attacks.options", "attack_audit": "attacks", "bound_audit": "bound", "curvature_bound": "bound",
    "ConvertOptions": "convert_options", "convert_model": "convert", "ImageData": "data", "load_data": "data",
    "LcnnAuditError": "errors", "gate": "gates", "load_policy": "gates", "CurvatureOptions": "geometry.options",
    "curvature_audit": "geometry", "GradRobustnessOptions": "geometry.options",
    "discrepancy": "geometry.robustness", "grad_robustness": "geometry.robustness", "load_model": "model.load",
    "save_model": "model.load", "write_report": "report", "AuditResult": "results", "TrainConfig": "training.config",
    "train": "training", "robustness_benchmark": "benchmark", "as_image_data": "coerce",
    "LcnnAuditNotice": "notices",
}

_logging.getLogger("lcnn_audit").addHandler(_logging.NullHandler())  # the library logs, the application shows


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'lcnn_audit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


__all__ = [
    "__version__", "AttackOptions", "AuditResult", "ConvertOptions", "CurvatureOptions", "GradRobustnessOptions",
    "ImageData", "LcnnAuditError", "LcnnAuditNotice", "TrainConfig", "as_image_data", "attack_audit", "bound_audit",
    "convert_model", "curvature_audit", "curvature_bound", "discrepancy", "gate", "grad_robustness", "load_data",
    "load_model", "load_policy", "robustness_benchmark", "save_model", "train", "write_report",
]
