"""What the bound reports: one row per graph node, and the totals."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class LayerBound:
    """One layer (graph node) of the bound; see :mod:`lcnn_audit.bound` for the columns."""

    name: str
    op: str
    curvature: float  # Cᵢ = sup |fᵢ''/fᵢ'| (0 for affine maps)
    second_derivative: float  # κᵢ = sup |fᵢ''|
    lipschitz: float  # Lᵢ
    width: int  # nᵢ, output size per sample
    running_lipschitz: float  # Lipschitz bound of x ↦ this layer's output (Πⱼ≤ᵢ Lⱼ on a chain)
    running_hessian: float  # bound on ‖∇²ₓ (this layer's output)‖
    theorem1: float  # Σ over layers up to here of Cⱼ·Πₖ≤ⱼ Lₖ
    smooth: bool = True
    certified: bool = True  # closed form, exact SVD, or a converged Lanczos certificate
    note: str = ""


@dataclass
class BoundReport:
    """The per-layer rows and the summary of :func:`lcnn_audit.bound.curvature_bound`."""

    layers: list[LayerBound]
    summary: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """The JSON form: ``{"summary": ..., "layers": [row, ...]}``."""
        return {"summary": self.summary, "layers": [asdict(layer) for layer in self.layers]}
