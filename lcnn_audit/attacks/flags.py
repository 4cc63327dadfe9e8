"""Gradient-masking flags, computed from the per-sample fields of an attack audit.

A flag is True (raised), False (checked, fine) or None (not checked in this run). Each
raised flag comes with a one-line message. ``gradient_masking`` is True when any flag
that signals masking or an unreliable evaluation is raised.

===============================  ==========================================================
flag                             raised when
===============================  ==========================================================
``large_eps_not_broken``         PGD at the box diameter (linf 1, l2 √d) leaves more than
                                 ``LARGE_EPS_MAX_SHARE`` of the samples correctly classified
``black_box_stronger``           AutoAttack's Square (black-box) breaks more than
                                 ``BLACK_BOX_MAX_SHARE`` of the samples that every
                                 white-box attack left intact (AutoAttack's 0.2 % criterion,
                                 applied to the whole run instead of per batch)
``zero_gradients``               some inputs have an exactly zero loss gradient (ours, or
                                 AutoAttack's check)
``nondeterministic``             predictions or logits change across repeated forward passes
                                 (ours: 3 passes per batch; or AutoAttack's randomness check)
``more_steps_higher_accuracy``   PGD with ``steps_factor``× the steps at the middle eps gives a
                                 robust accuracy higher by more than ``MORE_STEPS_TOLERANCE``
                                 and ``MORE_STEPS_MIN_SAMPLES`` samples
``autoattack_softmax_output``    AutoAttack: the outputs look like probabilities, not logits
``autoattack_dynamic_model``     AutoAttack: the forward pass calls autograd (dynamic defense)
``autoattack_too_few_classes``   AutoAttack: too few classes for DLR/targeted attacks (not a
                                 masking sign)
``autoattack_other``             any other AutoAttack warning (not a masking sign)
``silent_success`` ...           the Indicators of Attack Failure (:mod:`.indicators`): raised
                                 when their count passes ``indicators.RAISE_SHARE``
===============================  ==========================================================

``black_box_stronger`` is also checked without AutoAttack in the run: the masking checks
run a small Square attack on the check subsample (``check_black_box_*`` fields), and one
sample it breaks that every white-box attack left intact raises the flag.
"""

from __future__ import annotations

from . import fields as F
from .autoattack import BLACK_BOX
from .indicators import INDICATORS, RAISE_SHARE
from .options import AttackOptions
from .registry import ATTACKS

LARGE_EPS_MAX_SHARE = 0.01
BLACK_BOX_MAX_SHARE = 0.002
MORE_STEPS_TOLERANCE = 0.01
MORE_STEPS_MIN_SAMPLES = 3
MASKING = ("large_eps_not_broken", "black_box_stronger", "zero_gradients", "nondeterministic",
           "more_steps_higher_accuracy", "autoattack_softmax_output", "autoattack_dynamic_model") + INDICATORS
FLAG_NAMES = ("gradient_masking",) + MASKING + ("autoattack_too_few_classes", "autoattack_other")


def large_eps(norm: str, numel: int) -> float:
    """The box diameter: every image in [0,1]^d lies within this distance of every other."""
    return {"linf": 1.0, "l2": float(numel) ** 0.5, "l1": float(numel)}[norm]


def _share(vals: list) -> float:
    return sum(bool(v) for v in vals) / len(vals) if vals else 0.0


def _any_check(per_sample: dict, prefix: str, name: str) -> bool:
    return any(name in str(v).split(",") for k, vals in per_sample.items() if k.startswith(prefix) for v in vals)


def compute_flags(per_sample: dict[str, list], options: AttackOptions) -> tuple[dict, list[str]]:
    """``(flags, messages)`` for the finished (or partial) per-sample fields."""
    n = len(per_sample.get("index", []))
    flags: dict[str, bool | None] = dict.fromkeys(FLAG_NAMES)
    messages: list[str] = []
    if n == 0:
        return flags, messages
    plan = options.plan()
    ran_aa = any(a == "autoattack" for a, _ in plan)

    def aa_check(name: str) -> bool | None:
        return _any_check(per_sample, F.AUTOATTACK_CHECKS, name) if ran_aa else None

    _forward_flags(per_sample, n, aa_check, flags, messages)
    if options.masking_checks:
        _large_eps_flag(per_sample, flags, messages)
        _more_steps_flag(per_sample, options, flags, messages)
    _autoattack_black_box_flag(per_sample, options, flags, messages, plan=plan, ran_aa=ran_aa, n=n)
    _autoattack_check_flags(aa_check, flags, messages)
    _square_check_flag(per_sample, options, flags, messages)
    _indicator_flags(per_sample, options, flags, messages)
    flags["gradient_masking"] = any(bool(flags[k]) for k in MASKING)
    return flags, messages


def _forward_flags(per_sample: dict, n: int, aa_check, flags: dict, messages: list[str]) -> None:
    """``zero_gradients`` and ``nondeterministic``: our per-batch checks, or AutoAttack's."""
    zero = sum(bool(v) for v in per_sample.get("zero_grad", []))
    aa_zero = aa_check("zero_gradients")
    flags["zero_gradients"] = zero > 0 or bool(aa_zero)
    if zero:
        messages.append(f"zero_gradients: {zero} of {n} inputs ({zero / n:.1%}) have an exactly zero loss gradient; "
                        "gradient attacks cannot move them (saturated softmax or a non-differentiable step)")
    elif aa_zero:
        messages.append("zero_gradients: AutoAttack found points with zero gradient during its attacks")

    nd = sum(bool(v) for v in per_sample.get("nondeterministic", []))
    aa_rand = aa_check("randomized")
    flags["nondeterministic"] = nd > 0 or bool(aa_rand)
    if nd:
        messages.append(f"nondeterministic: predictions or logits of {nd} of {n} inputs change across repeated "
                        "forward passes (a randomized model needs EOT attacks: --attack autoattack --version rand)")
    elif aa_rand:
        messages.append("nondeterministic: AutoAttack's check says the model looks randomized "
                        "(use --version rand)")


def _large_eps_flag(per_sample: dict, flags: dict, messages: list[str]) -> None:
    """``large_eps_not_broken``: robust at the box diameter."""
    large = F.with_prefix(per_sample, F.LARGE_EPS)
    if not large:
        return
    flags["large_eps_not_broken"] = False
    for k in large:
        share = _share(per_sample[k])
        if share > LARGE_EPS_MAX_SHARE:
            flags["large_eps_not_broken"] = True
            norm = F.parse(k).norm
            messages.append(f"large_eps_not_broken: PGD-{norm} at the box diameter still leaves "
                            f"{share:.1%} of the inputs correctly classified (should be ~0); the "
                            "gradients may be masked")


def _more_steps_flag(per_sample: dict, options: AttackOptions, flags: dict, messages: list[str]) -> None:
    """``more_steps_higher_accuracy``: more PGD steps give a higher robust accuracy."""
    more = F.with_prefix(per_sample, F.MORE_STEPS)
    if not more:
        return
    flags["more_steps_higher_accuracy"] = False
    for k in more:
        norm, eps = F.parse(k).norm, F.parse(k).eps
        base = per_sample.get(F.robust("pgd", norm, eps))
        if base is None:
            continue
        a_more, a_base = _share(per_sample[k]), _share(base)
        extra = sum(bool(v) for v in per_sample[k]) - sum(bool(v) for v in base)
        if a_more - a_base > MORE_STEPS_TOLERANCE and extra >= MORE_STEPS_MIN_SAMPLES:
            flags["more_steps_higher_accuracy"] = True
            messages.append(f"more_steps_higher_accuracy: PGD-{norm} at eps {eps} with "
                            f"{options.steps_factor}x the steps gives robust accuracy {a_more:.1%}, higher "
                            f"than {a_base:.1%} with {options.steps} steps; the loss surface may be "
                            "obfuscated")


def _autoattack_black_box_flag(per_sample: dict, options: AttackOptions, flags: dict, messages: list[str], *,
                               plan, ran_aa: bool, n: int) -> None:
    """``black_box_stronger`` from AutoAttack's Square breaking what every white-box attack left intact."""
    if not (ran_aa and any(b in _sub_attacks(options) for b in BLACK_BOX)):
        if ran_aa:
            flags["black_box_stronger"] = None
        return
    flags["black_box_stronger"] = False
    for norm in options.norms:
        wb = [a for a, nn in plan if nn == norm and ATTACKS[a].white_box]
        for eps in options.eps_for(norm):
            key = F.eps_key(eps)
            by = per_sample.get(F.autoattack_by(norm, key))
            if by is None:
                continue
            intact = [all(per_sample[F.robust(a, norm, key)][i] for a in wb) for i in range(n)]
            count = sum(1 for i in range(n) if by[i] in BLACK_BOX and intact[i])
            if count / n > BLACK_BOX_MAX_SHARE:
                flags["black_box_stronger"] = True
                messages.append(f"black_box_stronger: at {norm} eps {key} the black-box Square attack broke "
                                f"{count} input(s) ({count / n:.1%}) that every white-box attack left intact; "
                                "the gradients may be masked")


def _autoattack_check_flags(aa_check, flags: dict, messages: list[str]) -> None:
    """The ``autoattack_*`` flags from AutoAttack's own checks (None when it did not run)."""
    for name, flag, what in (("softmax_output", "autoattack_softmax_output",
                              "the model's outputs look like probabilities; pass logits"),
                             ("dynamic_model", "autoattack_dynamic_model",
                              "the forward pass calls autograd (a dynamic defense); AutoAttack may be insufficient"),
                             ("too_few_classes", "autoattack_too_few_classes",
                              "too few classes for AutoAttack's DLR/targeted attacks"),
                             ("other", "autoattack_other", "AutoAttack logged another warning")):
        val = aa_check(name)
        flags[flag] = val
        if val:
            messages.append(f"{flag}: {what}")


def _square_check_flag(per_sample: dict, options: AttackOptions, flags: dict, messages: list[str]) -> None:
    """``black_box_stronger`` from the small Square attack of the masking checks."""
    bb = F.with_prefix(per_sample, F.BLACK_BOX)
    if not bb:
        return
    if flags["black_box_stronger"] is None:
        flags["black_box_stronger"] = False
    for k in bb:
        count = sum(bool(v) for v in per_sample[k])
        if count:
            flags["black_box_stronger"] = True
            norm, eps = F.parse(k).norm, F.parse(k).eps
            checked = sum(bool(v) for v in per_sample.get(F.ioaf("checked", norm), []))
            messages.append(f"black_box_stronger: at {norm} eps {eps} a {options.square_queries}-query Square "
                            f"attack broke {count} of the {checked} checked input(s) that every white-box attack "
                            "left intact; the gradients may be masked or shattered (try --bpda NAME)")


def _indicator_flags(per_sample: dict, options: AttackOptions, flags: dict, messages: list[str]) -> None:
    """The Indicators of Attack Failure, raised past ``RAISE_SHARE``."""
    for name, entry in indicator_summary(per_sample, options).items():
        if entry["checked"] == 0:
            continue
        raised = entry["count"] > 0 and entry["share"] > RAISE_SHARE[name]
        flags[name] = raised
        if raised:
            messages.append(f"{name}: {entry['count']} of {entry['checked']} checked input(s) ({entry['share']:.1%}); "
                            f"{_ADVICE[name]}")


_ADVICE = {
    "silent_success": "the attack found adversarial points it could not confirm (a randomized model? try --eot N)",
    "incomplete_optimization": "the loss was still improving at the last step; use more --steps",
    "transfer_failure": "the adaptive attack fooled its BPDA/EOT surrogate but not the model; raise --eot or "
                        "check the --bpda approximation",
    "non_convergence": "restarts from different starts disagree; use more --restarts or --steps",
    "unavailable_gradients": "the loss gradient is zero, missing or not finite (saturation, a non-differentiable "
                             "step or a detached input: the margin-loss counter runs on these; try --bpda NAME)",
    "unreachable_misclassification": "an attack with an unbounded budget cannot flip the label; the gradients "
                                     "do not lead anywhere",
}


def _count_field(name: str, norm: str) -> str:
    return F.large_eps(norm) if name == "unreachable_misclassification" else F.ioaf(name, norm)


def indicator_summary(per_sample: dict[str, list], options: AttackOptions) -> dict:
    """``{indicator: {"count", "checked", "share"}}`` over every norm the run checked (see :mod:`.indicators`).

    ``checked`` is the number of originally correct inputs the indicator looked at (the
    check subsample for ``non_convergence``); an indicator not computed in this run has
    ``checked`` 0 and ``share`` None."""
    correct = [bool(v) for v in per_sample.get("correct", [])]
    out: dict = {}
    for name in INDICATORS:
        count = checked = 0
        if name == "unavailable_gradients":
            vals = per_sample.get(F.ioaf("unavailable_gradients"))
            if vals is not None:
                count, checked = sum(bool(v) for v in vals), sum(correct)
        else:
            for norm in options.norms:
                vals = per_sample.get(_count_field(name, norm))
                if vals is None:
                    continue
                if name == "non_convergence":
                    checked += sum(bool(v) for v in per_sample.get(F.ioaf("checked", norm), []))
                elif name == "transfer_failure":
                    checked += sum(bool(v) for v in per_sample.get(F.ioaf("countered", norm), []))
                else:
                    checked += sum(correct)
                count += sum(bool(v) for v in vals)
        out[name] = {"count": count, "checked": checked, "share": count / checked if checked else None}
    return out


def _sub_attacks(options: AttackOptions) -> tuple[str, ...]:
    if options.aa_attacks:
        return tuple(options.aa_attacks)
    return {"standard": ("apgd-ce", "apgd-t", "fab-t", "square"),
            "plus": ("apgd-ce", "apgd-dlr", "fab", "square", "apgd-t", "fab-t"),
            "rand": ("apgd-ce", "apgd-dlr")}.get(options.version, ())

