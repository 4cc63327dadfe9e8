"""``robustness_benchmark``: clean and robust accuracy in one call, as RobustBench's ``benchmark()``.

It runs :func:`~lcnn_audit.attacks.attack_audit` at one eps and returns two numbers; for the
intervals, per-attack numbers, gradient-masking flags and per-sample results call
``attack_audit`` itself (or pass ``return_result=True``). AutoAttack (standard) is the
default, as in RobustBench; ``attacks=("pgd",)`` gives a fast PGD estimate.
"""

from __future__ import annotations

from torch import nn

from .attacks import AttackOptions, attack_audit
from .attacks.options import split_names
from .coerce import as_image_data
from .errors import UsageError
from .results import AuditResult

THREAT_MODELS = {"linf": "linf", "l2": "l2", "l1": "l1"}


def robustness_benchmark(
    model: nn.Module,
    data,
    threat_model: str = "Linf",
    eps: float = 8 / 255,
    *,
    attacks: tuple[str, ...] | str = ("autoattack",),
    batch_size: int = 128,
    seed: int = 0,
    return_result: bool = False,
    **attack_options,
) -> tuple[float, float] | tuple[float, float, AuditResult]:
    """``(clean_accuracy, robust_accuracy)`` of ``model`` on ``data`` under ``threat_model``
    (``"Linf"``, ``"L2"`` or ``"L1"``) at radius ``eps``, both fractions in [0, 1].

    ``model`` takes inputs in [0, 1] and returns logits; ``data`` is anything
    :func:`~lcnn_audit.coerce.as_image_data` accepts (ImageData, ``(x, y)``, a TensorDataset
    or a DataLoader). Robust accuracy is the per-sample worst case over ``attacks`` (and the
    gradient-masking checks), divided by all samples. ``attack_options`` go to
    :class:`~lcnn_audit.attacks.AttackOptions` (``steps``, ``restarts``, ``version``...).
    With ``return_result`` the full :class:`~lcnn_audit.results.AuditResult` comes third.
    """
    norm = THREAT_MODELS.get(str(threat_model).lower())
    if norm is None:
        raise UsageError(f"threat_model {threat_model!r} is not supported; use Linf, L2 or L1 (RobustBench's "
                         "'corruptions' is not an attack threat model)")
    if not (isinstance(eps, (int, float)) and eps > 0):
        raise UsageError(f"eps must be a positive number, got {eps!r}")
    attacks = split_names(attacks) if isinstance(attacks, str) else attacks
    opts = AttackOptions(attacks=attacks, norms=(norm,), eps=(float(eps),), seed=seed, **attack_options)
    result = attack_audit(model, as_image_data(data), opts, batch_size=batch_size)
    s = result.summary
    robust = next(e["robust_accuracy"] for e in s["results"] if e["attack"] == "worst_case" and e["norm"] == norm)
    out = (float(s["clean_accuracy"]), float(robust))
    return (*out, result) if return_result else out
