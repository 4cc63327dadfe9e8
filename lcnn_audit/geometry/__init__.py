"""Per-sample input-space geometry: gradients, Hessian spectra, curvature.

The names below are imported on first use (PEP 562): :mod:`.options` (the options classes)
needs no torch, so that the CLI reads its defaults from them before torch is imported."""


from .._lazy import lazy_attributes

#: public name -> the submodule that defines it
_EXPORTS = {"CurvatureOptions": "options", "GradRobustnessOptions": "options", "DiscrepancyOptions": "options",
            "compute_geometry": "measures", "curvature_audit": "audit"}


__getattr__, __dir__ = lazy_attributes(__name__, globals(), _EXPORTS)


__all__ = ["CurvatureOptions", "DiscrepancyOptions", "GradRobustnessOptions", "compute_geometry", "curvature_audit"]
