"""One taxonomy of ``torch.nn`` module kinds, by how a module acts on its input.

Every classification of leaf modules in the package reads these tuples: the exact
Gauss-Newton path (:func:`lcnn_audit.geometry.gauss_newton.is_piecewise_linear`, GUIDE §3:
H = JᵀAJ exactly when the network is piecewise linear in its input), the max-pool and ReLU
notices (``has_maxpool``, ``has_relu``), the data-free bound's layer rules
(:mod:`lcnn_audit.bound`, Theorem 1), the conversion report's "non-linear modules kept"
(:mod:`lcnn_audit.convert`) and the activation swap (:mod:`lcnn_audit.surgery`). Kinds act
as in eval mode (dropout is the identity, batch norm is affine). Subclasses count as their
base kind (``isinstance``), except where a consumer says otherwise.

Deliberate differences between consumers (tested in ``tests/test_nn_kinds.py``):

- The bound needs per-kind constants (a, κ, C of Theorem 1), so it has rules only for the
  activations whose constants it knows: :data:`RELU_FAMILY`, Softplus, GELU (exact form),
  SiLU, Sigmoid, Tanh and ELU. ``Hardsigmoid`` and ``Mish`` get no rule (the bound refuses
  the model and names the layer); so do the :data:`OTHER_NONLINEAR` kinds, and
  ``Upsample`` in a mode outside :data:`BOUND_UPSAMPLE_MODES`.
- ``has_relu`` (the notice "ReLU has no second derivative; try --smooth-relu") covers
  :data:`RELU_FAMILY` only, not ``Hardsigmoid``: ``--smooth-relu`` has no surrogate for it.
- ``ELU`` is smooth only for ``alpha == 1``; the bound says so in its note.
- The activation swap (:data:`SWAPPABLE_ACTIVATIONS`) matches the exact type, not
  subclasses, since a subclass may change what ``forward`` computes.
- ``nn.Bilinear`` is not piecewise linear in the input (``x₁ᵀ A x₂`` with both factors
  functions of the one input is quadratic), so it is listed with :data:`OTHER_NONLINEAR`.
"""

from __future__ import annotations

from torch import nn

#: convolutions (their operator norm is the spectral norm of the convolution, layers/spectral.py)
CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
CONV_TRANSPOSES = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
LINEARS = (nn.Linear,)
#: eval-mode batch norm: a per-channel affine map
BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
AVG_POOLS = (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d,
             nn.AdaptiveAvgPool3d)
PADS = (nn.ZeroPad1d, nn.ZeroPad2d, nn.ZeroPad3d, nn.ConstantPad1d, nn.ConstantPad2d, nn.ConstantPad3d)
#: linear in the input in every mode; the bound handles only :data:`BOUND_UPSAMPLE_MODES`
UPSAMPLES = (nn.Upsample,)
BOUND_UPSAMPLE_MODES = ("nearest", "linear", "bilinear", "trilinear", "bicubic")
#: linear maps the bound sizes by a generic (autograd-adjoint) operator norm
OTHER_LINEAR = (*AVG_POOLS, *CONV_TRANSPOSES, *PADS, *UPSAMPLES)
#: norm-preserving in eval mode (reshapes, identity, dropout)
ISOMETRIES = (nn.Flatten, nn.Unflatten, nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d,
              nn.AlphaDropout)
#: every kind that is linear (affine) in its input in eval mode
LINEAR_KINDS = (*CONVS, *LINEARS, *BATCH_NORMS, *OTHER_LINEAR, *ISOMETRIES)

FIXED_MAX_POOLS = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)
ADAPTIVE_MAX_POOLS = (nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d)
MAX_POOLS = (*FIXED_MAX_POOLS, *ADAPTIVE_MAX_POOLS)
#: kinks with zero second derivative elsewhere: autograd's input Hessian sees only the softmax part
RELU_FAMILY = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.Hardtanh, nn.PReLU)
PIECEWISE_LINEAR_ACTIVATIONS = (*RELU_FAMILY, nn.Hardsigmoid)
#: under these the network stays piecewise linear in its input (the exact Gauss-Newton path)
PIECEWISE_LINEAR = (*LINEAR_KINDS, *PIECEWISE_LINEAR_ACTIVATIONS, *MAX_POOLS)

SMOOTH_ACTIVATIONS = (nn.Softplus, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.ELU, nn.Mish)
#: non-linear, and neither piecewise linear nor a smooth pointwise activation the package knows
OTHER_NONLINEAR = (nn.Hardswish, nn.Softmax, nn.LayerNorm, nn.GroupNorm, nn.MultiheadAttention, nn.Bilinear)
NONLINEAR = (*PIECEWISE_LINEAR_ACTIVATIONS, *MAX_POOLS, *SMOOTH_ACTIVATIONS, *OTHER_NONLINEAR)

#: activations ``replace_activations`` swaps (``--activations`` names), matched by exact type
SWAPPABLE_ACTIVATIONS: dict[str, tuple[type[nn.Module], ...]] = {
    "relu": (nn.ReLU,),
    "relu6": (nn.ReLU6,),
    "leaky_relu": (nn.LeakyReLU,),
    "gelu": (nn.GELU,),
    "silu": (nn.SiLU,),
    "elu": (nn.ELU,),
    "softplus": (nn.Softplus,),
}

#: every kind above, for tests and documentation
ALL_KINDS = (*LINEAR_KINDS, *NONLINEAR)


def swappable_types() -> tuple[type[nn.Module], ...]:
    """Every type in :data:`SWAPPABLE_ACTIVATIONS`."""
    return tuple(t for types in SWAPPABLE_ACTIVATIONS.values() for t in types)
