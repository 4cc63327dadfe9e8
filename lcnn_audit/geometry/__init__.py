"""Per-sample input-space geometry: gradients, Hessian spectra, curvature."""

from .audit import curvature_audit
from .measures import CurvatureOptions, compute_geometry

__all__ = ["CurvatureOptions", "compute_geometry", "curvature_audit"]
