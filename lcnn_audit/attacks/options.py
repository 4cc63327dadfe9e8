"""``AttackOptions``: what ``lcnn-audit attack`` runs, validated up front (every problem at once).

``AttackOptions`` is a frozen dataclass in the style of :mod:`lcnn_audit.options`: sequences
are tuples, :meth:`AttackOptions.problems` lists what is wrong, :meth:`AttackOptions.validate`
raises one :class:`~lcnn_audit.options.OptionsError`. Comma-separated text (the CLI's
``--attack pgd,fgsm``) is parsed by :meth:`AttackOptions.from_cli` / :func:`split_names`,
never by the dataclass. Attacks are built from the registry (:mod:`.registry`).
"""

from __future__ import annotations

import difflib
import math
from dataclasses import asdict, dataclass

from ..errors import UsageError
from ..options import Problem, finite_problems, validate
from .fields import eps_key
from .names import ADAPTIVE, LOSSES, NORMS, STEP_RULES, SUB_ATTACKS, VERSIONS

# ATTACKS, MINIMAL_NORM and WHITE_BOX come from .registry on first use (module __getattr__)
__all__ = ["ADAPTIVE", "ANY_NORM", "ATTACKS", "DEFAULT_EPS", "MINIMAL_NORM", "WHITE_BOX", "WORST",  # noqa: F822
           "AttackOptions", "eps_key", "parse_eps", "parse_eps_value", "split_names"]

#: Default eps sweeps: LCNN paper Table 2 (L2), the usual 1..8/255 (Linf), AutoAttack's L1 range.
DEFAULT_EPS = {"l2": (0.05, 0.1, 0.15, 0.2), "linf": (1 / 255, 2 / 255, 4 / 255, 8 / 255), "l1": (3.0, 6.0, 12.0)}
WORST = "worst_case"
#: Key of an ``eps`` dict entry that applies to every norm without its own sweep.
ANY_NORM = "*"
#: Float fields that must be finite (eps has its own, more specific check).
_FINITE = ("step_size", "overshoot", "cw_lr", "cw_confidence", "cw_initial_const")
#: Fields that hold a sequence of names.
_NAMES = ("attacks", "norms", "aa_attacks", "bpda")
#: (field, least value) of the integer fields.
_AT_LEAST = (("steps", 1), ("restarts", 1), ("df_steps", 1), ("candidates", 2), ("cw_steps", 1),
             ("cw_search_steps", 1), ("steps_factor", 2), ("eot", 1), ("check_every", 1), ("square_queries", 1))


def split_names(text: str | None, lower: bool = True) -> tuple[str, ...]:
    """Comma-separated names (``"pgd, FGSM"`` -> ``("pgd", "fgsm")``); ``lower=False`` keeps case
    (module names for ``--bpda``)."""
    parts = (p.strip() for p in (text or "").split(","))
    return tuple(p.lower() if lower else p for p in parts if p)


def parse_eps_value(text: str) -> float:
    """A number or a fraction such as ``8/255``."""
    text = text.strip()
    try:
        if "/" in text:
            num, den = text.split("/", 1)
            return float(num) / float(den)
        return float(text)
    except (ValueError, ZeroDivisionError):
        raise UsageError(f"--eps value {text!r} is not a number or a fraction like 8/255") from None


def parse_eps(specs: list[str] | tuple[str, ...] | None) -> dict[str, tuple[float, ...]] | tuple[float, ...] | None:
    """``--eps`` values: ``0.05,0.1`` (every norm) or ``NORM=0.05,0.1`` (one norm); repeatable.

    Returns a sweep for every norm, or a ``{norm: sweep}`` dict (``"*"``: the other norms)."""
    if not specs:
        return None
    common: tuple[float, ...] | None = None
    per: dict[str, tuple[float, ...]] = {}
    for spec in specs:
        norm, sep, values = spec.partition("=")
        if not sep:
            norm, values = "", spec
        vals = tuple(parse_eps_value(v) for v in values.split(",") if v.strip())
        if not vals:
            raise UsageError(f"--eps {spec!r} lists no values")
        if norm:
            norm = norm.strip().lower()
            if norm not in NORMS:
                raise UsageError(f"--eps {spec!r}: unknown norm {norm!r}; use one of {', '.join(NORMS)}")
            per[norm] = vals
        else:
            common = vals
    if per:
        if common is not None:
            per[ANY_NORM] = common
        return per
    return common


def _attacks() -> dict:
    """The attack registry (:data:`.registry.ATTACKS`), imported on first use: the attack
    classes need torch, and these options are read (for the CLI's defaults) without it."""
    from .registry import ATTACKS

    return ATTACKS


def __getattr__(name: str):
    if name in ("ATTACKS", "MINIMAL_NORM", "WHITE_BOX"):  # re-exported from .registry, on first use
        from . import registry

        return getattr(registry, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _floats(v) -> tuple[float, ...]:
    return (float(v),) if isinstance(v, (int, float)) else tuple(float(e) for e in v)


@dataclass(frozen=True)
class AttackOptions:
    """Options of :func:`lcnn_audit.attacks.attack_audit` (field names follow the CLI flags).

    ``eps`` is one sweep for every norm, a ``{norm: sweep}`` dict, or None for
    :data:`DEFAULT_EPS`. ``masking_checks`` runs the extra gradient-masking checks (PGD at
    ``steps_factor``× the steps at the middle eps, and PGD at the box diameter).
    """

    # attacks are registry names (registry.ATTACKS). Lists become tuples and names are
    # lower-cased on construction; a comma-separated string is not split (see from_cli).
    attacks: tuple[str, ...] = ("pgd",)
    norms: tuple[str, ...] = ("l2",)
    eps: dict[str, tuple[float, ...]] | tuple[float, ...] | None = None
    steps: int = 10
    step_size: float | None = None
    step_rule: str | None = None
    restarts: int = 1
    random_start: bool = True
    loss: str = "ce"
    version: str = "standard"
    aa_attacks: tuple[str, ...] | None = None
    aa_n_iter: int | None = None
    aa_n_queries: int | None = None
    df_steps: int = 50
    overshoot: float = 0.02
    candidates: int = 10
    cw_steps: int = 100
    cw_search_steps: int = 5
    cw_lr: float = 0.01
    cw_confidence: float = 0.0
    cw_initial_const: float = 0.1
    masking_checks: bool = True
    steps_factor: int = 4
    eot: int = 1
    bpda: tuple[str, ...] = ()
    auto_margin: bool = True
    check_every: int = 8
    square_queries: int = 300
    seed: int = 0

    def __post_init__(self):
        def put(name, value):
            object.__setattr__(self, name, value)

        for name in ("attacks", "norms"):
            v = getattr(self, name)
            if not isinstance(v, str):  # a string stays as it is: problems() refuses it
                put(name, tuple(str(a).strip().lower() for a in v if str(a).strip()))
        if isinstance(self.eps, dict):
            put("eps", {str(k).lower(): _floats(v) for k, v in self.eps.items()})
        elif self.eps is not None:
            put("eps", _floats(self.eps))
        if self.aa_attacks is not None and not isinstance(self.aa_attacks, str):
            put("aa_attacks", tuple(self.aa_attacks))
        if not isinstance(self.bpda, str):
            put("bpda", tuple(self.bpda or ()))

    @classmethod
    def from_cli(cls, attack: str | None = "pgd", norm: str | None = "l2", eps: list[str] | None = None, *,
                 aa_attacks: str | None = None, bpda: str | None = None, step_rule: str | None = None,
                 **options) -> AttackOptions:
        """The options from the CLI's text: comma-separated ``attack``, ``norm``, ``aa_attacks``
        and ``bpda`` (module names, case kept), ``--eps`` specs (:func:`parse_eps`); every other
        keyword is a field as it is. Not validated."""
        return cls(attacks=split_names(attack), norms=split_names(norm), eps=parse_eps(eps),
                   aa_attacks=split_names(aa_attacks) or None, bpda=split_names(bpda, lower=False),
                   step_rule=step_rule.strip().lower() if step_rule else None, **options)

    @property
    def counters(self) -> bool:
        """Whether the adaptive counter may run (always with --eot/--bpda, else on saturated inputs)."""
        return self.eot > 1 or bool(self.bpda) or self.auto_margin

    @property
    def notices(self) -> list[str]:
        """One line per attack that skips some of ``norms`` (it does not support them)."""
        known_n = [n for n in self.norms if n in NORMS]
        out = []
        for a in self._known_attacks():
            norms = _attacks()[a].norms
            ok = [n for n in known_n if n in norms]
            if ok and len(ok) < len(known_n):
                skipped = [n for n in known_n if n not in ok]
                out.append(f"{a} supports only {', '.join(norms)}; it does not run for {', '.join(skipped)}")
        return out

    def _known_attacks(self) -> list[str]:
        return [a for a in self.attacks if a in _attacks()] if isinstance(self.attacks, tuple) else []

    # ------------------------------------------------------------------ plan

    def eps_for(self, norm: str) -> list[float]:
        """The eps sweep of ``norm``, ascending, without repeats."""
        if isinstance(self.eps, dict):
            vals = self.eps.get(norm, self.eps.get(ANY_NORM, DEFAULT_EPS[norm]))
        elif self.eps is not None:
            vals = self.eps
        else:
            vals = DEFAULT_EPS[norm]
        return sorted(set(vals))

    def plan(self) -> list[tuple[str, str]]:
        """The (attack, norm) pairs that run, norm-major, in the order given."""
        return [(a, n) for n in self.norms for a in self.attacks if a in _attacks() and n in _attacks()[a].norms]

    # ------------------------------------------------------------------ validation

    def problems(self) -> list[Problem]:
        """Every problem with these options (an empty list when they are fine)."""
        strings = [Problem(f, f"must be a sequence of names, got the string {getattr(self, f)!r}; split "
                              "comma-separated text with lcnn_audit.attacks.options.split_names")
                   for f in _NAMES if isinstance(getattr(self, f), str)]
        if strings:
            return strings
        return ([p for p in finite_problems(self) if p.field in _FINITE] + self._attack_problems()
                + self._norm_problems() + self._eps_problems() + self._setting_problems())

    def _attack_problems(self) -> list[Problem]:
        out = [] if self.attacks else [Problem("attacks", "is empty")]
        for a in self.attacks:
            if a not in _attacks():
                hint = difflib.get_close_matches(a, list(_attacks()), n=1)
                out.append(Problem(None, f"unknown attack {a!r}" + (f" (did you mean {hint[0]}?)" if hint else "")
                                   + f"; use one of {', '.join(_attacks())}"))
        if len(set(self.attacks)) != len(self.attacks):
            out.append(Problem("attacks", f"lists an attack twice: {', '.join(self.attacks)}"))
        return out

    def _norm_problems(self) -> list[Problem]:
        out = [] if self.norms else [Problem("norms", "is empty")]
        out += [Problem(None, f"unknown norm {n!r}; use one of {', '.join(NORMS)}") for n in self.norms
                if n not in NORMS]
        if len(set(self.norms)) != len(self.norms):
            out.append(Problem("norms", f"lists a norm twice: {', '.join(self.norms)}"))
        known_a, known_n = self._known_attacks(), [n for n in self.norms if n in NORMS]
        for a in known_a:
            if known_n and not any(n in _attacks()[a].norms for n in known_n):
                out.append(Problem(None, f"{a} supports the norms {', '.join(_attacks()[a].norms)}, none of those in "
                                         f"{{norms}} ({','.join(known_n)})"))
        for n in known_n:
            if known_a and not any(n in _attacks()[a].norms for a in known_a):
                out.append(Problem(None, f"no selected attack supports the {n} norm (autoattack covers linf, l2 "
                                         "and l1)"))
        return out

    def _eps_problems(self) -> list[Problem]:
        out = []
        for n in [n for n in self.norms if n in NORMS]:
            vals = self.eps_for(n)
            bad = [e for e in vals if not (math.isfinite(e) and e > 0)]
            if bad:
                out.append(Problem("eps", f"for {n} must be positive and finite, got {bad}"))
            if n == "linf" and any(e > 1 for e in vals if math.isfinite(e)):
                out.append(Problem(None, f"linf {{eps}} above 1 exceed the [0,1] input range: "
                                         f"{[e for e in vals if e > 1]}"))
            keys = [eps_key(e) for e in vals]
            if len(set(keys)) != len(keys):
                out.append(Problem(None, f"{{eps}} values for {n} are too close to tell apart in field names: {keys}"))
        if isinstance(self.eps, dict):
            extra = [k for k in self.eps if k not in self.norms or k not in NORMS]
            extra = [k for k in extra if k != ANY_NORM]
            if extra:
                out.append(Problem("eps", f"given for norm(s) {extra} that are not in {{norms}} "
                                          f"{','.join(self.norms)}"))
        return out

    def _setting_problems(self) -> list[Problem]:
        out = [Problem(name, f"must be >= {lo}, got {getattr(self, name)}") for name, lo in _AT_LEAST
               if int(getattr(self, name)) < lo]
        if self.step_size is not None and not self.step_size > 0:
            out.append(Problem("step_size", f"must be positive, got {self.step_size}"))
        if self.step_rule is not None and self.step_rule not in STEP_RULES:
            out.append(Problem(None, f"unknown step rule {self.step_rule!r}; use one of {', '.join(STEP_RULES)}"))
        if self.step_rule == "apgd" and self.step_size is not None:
            out.append(Problem(None, "{step_size} sets a fixed step; it does not combine with {step_rule} apgd"))
        if self.loss not in LOSSES:
            out.append(Problem(None, f"unknown loss {self.loss!r}; use one of {', '.join(LOSSES)}"))
        out += self._autoattack_problems()
        if not self.overshoot >= 0:
            out.append(Problem("overshoot", f"must be >= 0, got {self.overshoot}"))
        if not self.cw_lr > 0 or not self.cw_initial_const > 0 or not self.cw_confidence >= 0:
            out.append(Problem(None, "{cw_lr} and {cw_initial_const} must be positive and {cw_confidence} >= 0"))
        return out

    def _autoattack_problems(self) -> list[Problem]:
        out = []
        if self.version not in VERSIONS:
            out.append(Problem(None, f"unknown AutoAttack version {self.version!r}; use one of {', '.join(VERSIONS)}"))
        if self.version == "custom" and not self.aa_attacks:
            out.append(Problem(None, f"{{version}} custom needs {{aa_attacks}} (from {', '.join(SUB_ATTACKS)})"))
        if self.aa_attacks and self.version != "custom":
            out.append(Problem(None, "{aa_attacks} needs {version} custom"))
        unknown = [a for a in (self.aa_attacks or ()) if a not in SUB_ATTACKS]
        if unknown:
            out.append(Problem(None, f"unknown AutoAttack sub-attack(s) {unknown}; use {', '.join(SUB_ATTACKS)}"))
        for name in ("aa_n_iter", "aa_n_queries"):
            v = getattr(self, name)
            if v is not None and int(v) < 1:
                out.append(Problem(name, f"must be >= 1, got {v}"))
        return out

    def validate(self) -> AttackOptions:
        """Raise one :class:`~lcnn_audit.options.OptionsError` listing every problem; returns
        ``self`` so that ``AttackOptions(...).validate()`` can be assigned."""
        validate(self)
        return self

    # ------------------------------------------------------------------ building

    def build(self, attack: str, norm: str, eps: float | None = None, steps: int | None = None):
        """The attack object for one (attack, norm, eps), from the registry (:func:`.registry.build_attack`)."""
        from .registry import build_attack  # the attack classes need torch; these options do not

        return build_attack(attack, self, norm, eps, steps)

    def to_dict(self) -> dict:
        """The JSON form (``config.options`` of a result): lists, and every norm's eps sweep."""
        d = asdict(self)
        d["eps"] = {n: self.eps_for(n) for n in self.norms if n in NORMS}
        d["attacks"], d["norms"] = list(self.attacks), list(self.norms)
        if self.aa_attacks is not None:
            d["aa_attacks"] = list(self.aa_attacks)
        d["bpda"] = list(self.bpda)
        return d
