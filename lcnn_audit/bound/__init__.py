"""Data-free curvature bounds (LCNN Theorem 1) and the LCNN penalty (eq. 5).

For a model built from layers fᵢ with Lipschitz constants Lᵢ = supₓ‖∇fᵢ‖₂, curvatures
Cᵢ = supₓ C_{fᵢ} (β for centered softplus, eq. 3; 0 for affine maps) and second-derivative
bounds κᵢ = supₓ|fᵢ''| (β/4 for centered softplus), :func:`curvature_bound` reports, for
the model as built and its real input size:

* per layer: Cᵢ, κᵢ, Lᵢ (the exact operator spectral norm of conv/linear layers, by Lanczos
  to a residual certificate; closed forms for batch norm and activations) and the running
  products;
* ``theorem1`` = Σᵢ Cᵢ·Πⱼ≤ᵢ Lⱼ, the right-hand side of Theorem 1 (Srinivas et al., NeurIPS
  2022, eq. 2, in the width-free form of the arXiv version; ``theorem1_width_weighted``
  multiplies each term by the layer width nᵢ as the NeurIPS statement and the arXiv
  appendix A do);
* ``penalty`` R_f = λβ·Σβᵢ + λγ·Σ log γⱼ (eq. 5; λβ = 1e-4, λγ = 1e-5 as in the arXiv
  appendix);
* rigorous data-free bounds that hold at every input: the Lipschitz constant L of the
  logits, ``hessian_logits`` H ≥ supₓ‖∇²ₓ g(x)‖ (g the logits, as a vector-valued bilinear
  map, so also for each single logit) and ``hessian_loss`` = ½L² + √2·H ≥ supₓ‖∇²ₓ ℓ(x)‖
  for the cross-entropy ℓ (its Hessian is JᵀAJ + Σₖ(pₖ − yₖ)∇²gₖ with ‖A‖ ≤ ½, ‖p − y‖ ≤ √2).

How the bounds compose. Every node of the torch.fx graph carries (L, H, T): after an affine
map A, (‖A‖L, ‖A‖H, T); after an elementwise activation with slope ≤ a, |s''| ≤ κ and
curvature ≤ C, (aL, aH + κL², T + C·aL) — the chain rule, with ‖s''⊙Ju⊙Jv‖ ≤ κ‖Ju‖‖Jv‖;
after an addition (residual connection), (L₁ + L₂, H₁ + H₂, T₁ + T₂); after a
concatenation, the quadrature sums √(L₁² + L₂²), √(H₁² + H₂²) and T₁ + T₂. For a chain
this is exactly H = Σᵢ κᵢ(Πⱼ<ᵢ Lⱼ)²Πⱼ>ᵢ Lⱼ and the Theorem 1 sum; on a graph, L and H
upper-bound every path (triangle inequality). ReLU and max-pooling have no second
derivative at their kinks: the Hessian bounds then hold almost everywhere (wherever the
Hessian exists), which is also what an autograd measurement sees.

What is and is not a bound. L, ``hessian_logits`` and ``hessian_loss`` are upper bounds on
the measured gradient and Hessian norms (``lcnn-audit curvature``'s ``grad_norm`` and
``hessian_norm``), up to the operator-norm certificates. The Theorem 1 sum is *not* an upper
bound on the normalised curvature C_f = ‖∇²f‖/(‖∇f‖ + ε) in general: no data-free bound can
be, since ∇f can vanish where ∇²f does not (f(x) = s₀(x) + s₀(−x) has ∇f(0) = 0,
∇²f(0) = β/2), and for the loss the softmax adds curvature that Theorem 1 does not count
(a linear model has a Theorem 1 sum of 0 and positive loss curvature). It is reported as the
paper's per-layer curvature budget, the quantity the LCNN penalty controls; C_f(x) ≤
``hessian_*``/(‖∇f(x)‖ + ε) is the valid pointwise statement.

Where it lives: :mod:`.rules` (one handler per kind of operation, in tables keyed by module
type, function and tensor method, each returning a :class:`~.rules.LayerRule`), :mod:`.norms`
(max-pool overlaps, generic operator norms), :mod:`.graph` (torch.fx tracing and the
composition above), :mod:`.audit` (:func:`curvature_bound`, :func:`bound_audit`, the penalty),
:mod:`.options` (:class:`BoundOptions` and the defaults), :mod:`.result` (the report rows).
"""


from .._lazy import lazy_attributes

#: public name -> the submodule that defines it, imported on first use (PEP 562): :mod:`.options`
#: needs no torch, so that the CLI reads the bound's defaults before torch is imported
_EXPORTS = {
    "bound_audit": "audit", "curvature_bound": "audit", "BOUND_MAX_ITER": "options", "BOUND_TOL": "options",
    "LAMBDA_BETA": "options", "LAMBDA_GAMMA": "options", "BoundOptions": "options", "BoundReport": "result",
    "LayerBound": "result", "GELU_CONSTANTS": "rules", "RELU_CONSTANTS": "rules", "SIGMOID_CONSTANTS": "rules",
    "SILU_CONSTANTS": "rules", "TANH_CONSTANTS": "rules", "LayerRule": "rules",
}
#: the old private names (tests use them) -> (submodule, name there)
_ALIASES = {"_adaptive_overlap": ("norms", "adaptive_overlap"), "_maxpool_overlap": ("norms", "maxpool_overlap"),
            # the bound's former names of BOUND_TOL / BOUND_MAX_ITER (see .options for why they differ
            # from lcnn_audit.layers.spectral.DEFAULT_TOL)
            "DEFAULT_TOL": ("options", "BOUND_TOL"), "DEFAULT_MAX_ITER": ("options", "BOUND_MAX_ITER")}


__getattr__, __dir__ = lazy_attributes(__name__, globals(), _EXPORTS, _ALIASES)


__all__ = [
    "BOUND_MAX_ITER", "BOUND_TOL", "DEFAULT_MAX_ITER", "DEFAULT_TOL", "GELU_CONSTANTS", "LAMBDA_BETA", "LAMBDA_GAMMA",
    "RELU_CONSTANTS", "SIGMOID_CONSTANTS", "SILU_CONSTANTS", "TANH_CONSTANTS", "BoundOptions", "BoundReport",
    "LayerBound", "LayerRule", "bound_audit", "curvature_bound",
]
