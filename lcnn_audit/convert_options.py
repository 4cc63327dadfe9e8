"""The options of :func:`lcnn_audit.convert.convert_model` (``lcnn-audit convert``), importable
without torch so that the CLI reads its defaults from :class:`ConvertOptions` itself.

``ConvertOptions`` is a frozen options class (:mod:`lcnn_audit.options`); its defaults are
the LCNN layers' (:mod:`lcnn_audit.layer_defaults`): β = 5 (the reference code's start),
spectral norms to a relative residual of 1e-6 in at most 500 products.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from .layer_defaults import DEFAULT_BETA, DEFAULT_MAX_ITER, DEFAULT_TOL
from .options import OptionsError, Problem, flag_label

#: the activation kinds the conversion replaces, in order: the keys of
#: :data:`lcnn_audit.nn_kinds.SWAPPABLE_ACTIVATIONS` (a test keeps the two equal)
ACTIVATION_KINDS = ("relu", "relu6", "leaky_relu", "gelu", "silu", "elu", "softplus")


def convert_flag(name: str) -> str:
    """A :class:`ConvertOptions` field as its ``lcnn-audit convert`` flag (``beta_init`` ->
    ``--beta-init``; ``activation_kinds`` -> ``--kinds``, ``n_power_iterations`` ->
    ``--power-iterations``)."""
    return CONVERT_FLAGS.get(name) or flag_label(name)


CONVERT_FLAGS = {"activation_kinds": "--kinds", "n_power_iterations": "--power-iterations", "fold_into_bn": "--fold-bn",
                 "use_fx": "--fx"}


@dataclass(frozen=True)
class ConvertOptions:
    """Which replacements :func:`convert_model` makes, and how (CLI flags of the same names)."""

    activations: bool = True
    activation_kinds: tuple[str, ...] = ACTIVATION_KINDS
    beta_init: float = DEFAULT_BETA
    batchnorm: bool = True
    gamma_init: float | None = None  # None: max(‖BN‖₂, 2) per layer, so the function is unchanged
    conv: bool = True
    linear: bool = True
    fold_into_bn: bool = True
    n_power_iterations: int = 1  # power steps per training forward pass
    tol: float = DEFAULT_TOL  # convergence of the spectral norms at conversion
    max_iter: int = DEFAULT_MAX_ITER
    use_fx: bool = True

    def problems(self) -> list[Problem]:
        """Every invalid option, one :class:`~lcnn_audit.options.Problem` per field."""
        problems = []
        unknown = [k for k in self.activation_kinds if k not in ACTIVATION_KINDS]
        if unknown:
            problems.append(Problem("activation_kinds", f"has unknown activation kind(s) {unknown}; use "
                                                        f"{', '.join(ACTIVATION_KINDS)}"))
        if not (self.beta_init > 0 and self.beta_init < float("inf")):
            problems.append(Problem("beta_init", f"must be a positive number, got {self.beta_init}"))
        if self.gamma_init is not None and not (1 < self.gamma_init < float("inf")):
            problems.append(Problem("gamma_init", f"must be a number > 1 (γ = 1 + exp(raw)), got {self.gamma_init}"))
        if self.n_power_iterations < 0:
            problems.append(Problem("n_power_iterations", f"must be >= 0, got {self.n_power_iterations}"))
        if not (0 < self.tol < 1):
            problems.append(Problem("tol", f"must lie in (0, 1), got {self.tol}"))
        if self.max_iter < 1:
            problems.append(Problem("max_iter", f"must be >= 1, got {self.max_iter}"))
        if not (self.activations or self.batchnorm or self.conv or self.linear):
            problems.append(Problem(None, "every replacement is switched off; nothing to convert"))
        return problems

    def validate(self) -> None:
        """Raise one :class:`~lcnn_audit.options.OptionsError` listing every invalid option.
        Its message spells the fields as the CLI flags of ``lcnn-audit convert``, as it always
        did (``--beta-init must be ...``; ``err.render()`` gives Python names)."""
        problems = self.problems()
        if problems:
            raise OptionsError(problems, label=convert_flag)

    def to_dict(self) -> dict:
        """The JSON form (a converted model's recipe records it)."""
        d = asdict(self)
        d["activation_kinds"] = list(self.activation_kinds)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ConvertOptions:
        """The options recorded by :meth:`to_dict` (unknown keys are ignored)."""
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in known}
        if "activation_kinds" in kw:
            kw["activation_kinds"] = tuple(kw["activation_kinds"])
        return cls(**kw)
