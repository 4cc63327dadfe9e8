"""The bound's settings and their defaults (LCNN eq. 5 weights, operator-norm certificates).

Two tolerances, on purpose. :data:`BOUND_TOL` (1e-7) is the relative residual certificate of
the operator norms the bound multiplies together: each layer's norm is reported as
σ·√(1 + residual), an upper bound on the true norm once the residual ‖AᵀAv − σ²v‖/σ² is below
the tolerance, so the tolerance is how much a certified bound may exceed the norm. The bound
works in float64 and runs once per model, so it affords 1e-7 and 1000 products
(:data:`BOUND_MAX_ITER`). :data:`lcnn_audit.layers.spectral.DEFAULT_TOL` (1e-6, 500 products)
is the convergence of the spectral normalisation a conversion applies to float32 weights
(about ten float32 ulps): a tighter value buys nothing there and would change converted
checkpoints. ``DEFAULT_TOL`` / ``DEFAULT_MAX_ITER`` of :mod:`lcnn_audit.bound` are the
bound's names of old, kept as aliases of the ``BOUND_`` ones.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..options import Problem, finite_problems, validate

LAMBDA_BETA = 1e-4  # λβ of the LCNN penalty (eq. 5; arXiv appendix)
LAMBDA_GAMMA = 1e-5  # λγ of the LCNN penalty (eq. 5; arXiv appendix)
BOUND_TOL = 1e-7
BOUND_MAX_ITER = 1000


@dataclass(frozen=True)
class BoundOptions:
    """``audits.bound``: :func:`lcnn_audit.bound.bound_audit` settings (input shape default: the data's)."""

    # the class docstring is the policy schema's description (docs/policy.schema.json): input_shape
    # (C, H, W) sizes the operator norms (None: the data's, or a converted checkpoint's recipe);
    # lambda_beta / lambda_gamma weight the LCNN penalty (eq. 5); tol / max_iter bound each operator
    # norm's Lanczos run (see the module docstring)
    input_shape: tuple[int, ...] | None = None
    lambda_beta: float = LAMBDA_BETA
    lambda_gamma: float = LAMBDA_GAMMA
    tol: float = BOUND_TOL
    max_iter: int = BOUND_MAX_ITER

    def problems(self) -> list[Problem]:
        """Every invalid setting, as :class:`~lcnn_audit.options.Problem` s."""
        out = finite_problems(self)
        if self.input_shape is not None and (not self.input_shape or any(s <= 0 for s in self.input_shape)):
            out.append(Problem("input_shape", f"must be positive sizes [C, H, W], got {list(self.input_shape)}"))
        if "tol" not in {p.field for p in out} and not 0 < self.tol < 1:
            out.append(Problem("tol", f"must lie in (0, 1), got {self.tol}"))
        if self.max_iter < 1:
            out.append(Problem("max_iter", f"must be >= 1, got {self.max_iter}"))
        return out

    def validate(self) -> None:
        """Raise one :class:`~lcnn_audit.options.OptionsError` listing every problem."""
        validate(self)
