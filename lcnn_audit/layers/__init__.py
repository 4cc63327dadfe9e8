"""LCNN layers (Srinivas et al., NeurIPS 2022): centered softplus (§3.3), γ-Lipschitz batch
norm (§3.4.2) and spectral normalisation of linear and convolution layers (§3.4.1)."""

from .centered_softplus import DEFAULT_BETA, CenteredSoftplus, centered_softplus
from .lipschitz_batchnorm import LipschitzBatchNorm1d, LipschitzBatchNorm2d, bn_spectral_norm
from .spectral import (
    ConvSpectralNorm,
    SingularResult,
    conv_operator_norm,
    matrix_norm,
    spectral_norm_conv,
    spectral_norm_linear,
    spectral_parametrization,
    top_singular,
)

__all__ = [
    "DEFAULT_BETA", "CenteredSoftplus", "ConvSpectralNorm", "LipschitzBatchNorm1d", "LipschitzBatchNorm2d",
    "SingularResult", "bn_spectral_norm", "centered_softplus", "conv_operator_norm", "matrix_norm",
    "spectral_norm_conv", "spectral_norm_linear", "spectral_parametrization", "top_singular",
]
