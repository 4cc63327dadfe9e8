"""Per-sample input-space geometry: gradients, Hessian spectra, curvature.

The names below are imported on first use (PEP 562): :mod:`.options` (the options classes)
needs no torch, so that the CLI reads its defaults from them before torch is imported."""

#: public name -> the submodule that defines it
_EXPORTS = {"CurvatureOptions": "options", "GradRobustnessOptions": "options", "DiscrepancyOptions": "options",
            "compute_geometry": "measures", "curvature_audit": "audit"}


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


__all__ = ["CurvatureOptions", "DiscrepancyOptions", "GradRobustnessOptions", "compute_geometry", "curvature_audit"]
