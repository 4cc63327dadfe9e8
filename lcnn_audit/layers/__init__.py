"""LCNN layers (Srinivas et al., NeurIPS 2022): centered softplus (§3.3), γ-Lipschitz batch
norm (§3.4.2) and spectral normalisation of linear and convolution layers (§3.4.1)."""

#: public name -> the submodule that defines it, imported on first use (PEP 562): :mod:`.defaults`
#: needs no torch, so that the CLI reads the conversion defaults before torch is imported
_EXPORTS = {name: module for module, names in {
    "defaults": ("DEFAULT_BETA",),
    "centered_softplus": ("CenteredSoftplus", "centered_softplus"),
    "lipschitz_batchnorm": ("LipschitzBatchNorm1d", "LipschitzBatchNorm2d", "bn_spectral_norm"),
    "spectral": ("ConvSpectralNorm", "SingularResult", "conv_operator_norm", "matrix_norm", "spectral_norm_conv",
                 "spectral_norm_linear", "spectral_parametrization", "top_singular"),
}.items() for name in names}


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


__all__ = [
    "DEFAULT_BETA", "CenteredSoftplus", "ConvSpectralNorm", "LipschitzBatchNorm1d", "LipschitzBatchNorm2d",
    "SingularResult", "bn_spectral_norm", "centered_softplus", "conv_operator_norm", "matrix_norm",
    "spectral_norm_conv", "spectral_norm_linear", "spectral_parametrization", "top_singular",
]
