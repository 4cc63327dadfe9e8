"""The LCNN layers' default settings, importable without torch (the CLI shows them in its help).

:mod:`lcnn_audit.layers.centered_softplus` and :mod:`lcnn_audit.layers.spectral` import them
from here (outside ``layers/``, whose package imports torch), and
:class:`lcnn_audit.convert_options.ConvertOptions` takes its defaults from them.
"""

#: The reference implementation (github.com/kylematoba/lcnn, models/psoftplus.py) starts at β = 5.
DEFAULT_BETA = 5.0
#: Relative residual at which a spectral norm counts as converged (layers/spectral.py); the
#: data-free bound certifies its operator norms more tightly (lcnn_audit.bound.options.BOUND_TOL).
DEFAULT_TOL = 1e-6
#: Most operator products per spectral norm.
DEFAULT_MAX_ITER = 500
