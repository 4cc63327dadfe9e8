"""``AttackOptions``: what ``lcnn-audit attack`` runs, validated up front (every problem at once)."""

from __future__ import annotations

import difflib
import math
from dataclasses import asdict, dataclass, field

from ..errors import UsageError
from .autoattack import SUB_ATTACKS, VERSIONS, AutoAttack
from .base import LOSSES, NORMS
from .cw import CarliniWagnerL2
from .deepfool import DeepFool
from .fgsm import FGSM
from .pgd import PGD, STEP_RULES

#: name -> attack class (the registry; its errors list the valid names).
ATTACKS: dict[str, type] = {"pgd": PGD, "fgsm": FGSM, "deepfool": DeepFool, "cw": CarliniWagnerL2,
                            "autoattack": AutoAttack}
#: Attacks that follow the model's gradient (Square inside AutoAttack is the black-box one).
WHITE_BOX = ("pgd", "fgsm", "deepfool", "cw")
#: Minimal-norm attacks: run once, then every eps of the sweep is read off their norms.
MINIMAL_NORM = ("deepfool", "cw")
#: Default eps sweeps: LCNN paper Table 2 (L2), the usual 1..8/255 (Linf), AutoAttack's L1 range.
DEFAULT_EPS = {"l2": (0.05, 0.1, 0.15, 0.2), "linf": (1 / 255, 2 / 255, 4 / 255, 8 / 255), "l1": (3.0, 6.0, 12.0)}
WORST = "worst_case"
#: The adaptive counter's row: PGD with the margin loss, EOT and BPDA (see :mod:`.counters`).
ADAPTIVE = "pgd_adaptive"
#: Key of an ``eps`` dict entry that applies to every norm without its own sweep.
ANY_NORM = "*"


def eps_key(eps: float) -> str:
    """The eps as it appears in field names and summary keys: ``f"{eps:g}"`` (0.1 -> "0.1")."""
    return f"{eps:g}"


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


@dataclass
class AttackOptions:
    """Options of :func:`lcnn_audit.attacks.attack_audit` (field names follow the CLI flags).

    ``eps`` is one sweep for every norm, a ``{norm: sweep}`` dict, or None for
    :data:`DEFAULT_EPS`. ``masking_checks`` runs the extra gradient-masking checks (PGD at
    ``steps_factor``× the steps at the middle eps, and PGD at the box diameter).
    """

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
    notices: list[str] = field(default_factory=list, compare=False, repr=False)

    def __post_init__(self):
        self.attacks = tuple(a.strip().lower() for a in (self.attacks.split(",") if isinstance(self.attacks, str)
                                                         else self.attacks) if a.strip())
        self.norms = tuple(n.strip().lower() for n in (self.norms.split(",") if isinstance(self.norms, str)
                                                       else self.norms) if n.strip())
        if isinstance(self.eps, (int, float)):
            self.eps = (float(self.eps),)
        elif isinstance(self.eps, dict):
            self.eps = {str(k).lower(): tuple(float(e) for e in ((v,) if isinstance(v, (int, float)) else v))
                        for k, v in self.eps.items()}
        elif self.eps is not None:
            self.eps = tuple(float(e) for e in self.eps)
        if self.aa_attacks is not None:
            self.aa_attacks = tuple(self.aa_attacks)
        if isinstance(self.bpda, str):
            self.bpda = tuple(p.strip() for p in self.bpda.split(",") if p.strip())
        self.bpda = tuple(self.bpda or ())

    @property
    def counters(self) -> bool:
        """Whether the adaptive counter may run (always with --eot/--bpda, else on saturated inputs)."""
        return self.eot > 1 or bool(self.bpda) or self.auto_margin

    # ------------------------------------------------------------------ plan

    def eps_for(self, norm: str) -> list[float]:
        if isinstance(self.eps, dict):
            vals = self.eps.get(norm, self.eps.get(ANY_NORM, DEFAULT_EPS[norm]))
        elif self.eps is not None:
            vals = self.eps
        else:
            vals = DEFAULT_EPS[norm]
        return sorted(set(vals))

    def plan(self) -> list[tuple[str, str]]:
        """The (attack, norm) pairs that run, norm-major, in the order given."""
        return [(a, n) for n in self.norms for a in self.attacks if a in ATTACKS and n in ATTACKS[a].norms]

    def validate(self) -> AttackOptions:
        """Raise one :class:`UsageError` listing every problem; record notices for skipped pairs."""
        from ..validation import finite_problems

        problems: list[str] = finite_problems((k, getattr(self, k)) for k in (
            "step_size", "overshoot", "cw_lr", "cw_confidence", "cw_initial_const"))
        if not self.attacks:
            problems.append("--attack is empty")
        for a in self.attacks:
            if a not in ATTACKS:
                hint = difflib.get_close_matches(a, list(ATTACKS), n=1)
                problems.append(f"unknown attack {a!r}" + (f" (did you mean {hint[0]}?)" if hint else "")
                                + f"; use one of {', '.join(ATTACKS)}")
        if len(set(self.attacks)) != len(self.attacks):
            problems.append(f"--attack lists an attack twice: {', '.join(self.attacks)}")
        if not self.norms:
            problems.append("--norm is empty")
        for n in self.norms:
            if n not in NORMS:
                problems.append(f"unknown norm {n!r}; use one of {', '.join(NORMS)}")
        if len(set(self.norms)) != len(self.norms):
            problems.append(f"--norm lists a norm twice: {', '.join(self.norms)}")
        known_a = [a for a in self.attacks if a in ATTACKS]
        known_n = [n for n in self.norms if n in NORMS]
        self.notices = []
        for a in known_a:
            ok = [n for n in known_n if n in ATTACKS[a].norms]
            if known_n and not ok:
                problems.append(f"{a} supports the norms {', '.join(ATTACKS[a].norms)}, none of --norm "
                                f"{','.join(known_n)}")
            elif len(ok) < len(known_n):
                skipped = [n for n in known_n if n not in ok]
                self.notices.append(f"{a} supports only {', '.join(ATTACKS[a].norms)}; it does not run for "
                                    f"{', '.join(skipped)}")
        for n in known_n:
            if known_a and not any(n in ATTACKS[a].norms for a in known_a):
                problems.append(f"no selected attack supports the {n} norm (autoattack covers linf, l2 and l1)")
            vals = self.eps_for(n)
            bad = [e for e in vals if not (math.isfinite(e) and e > 0)]
            if bad:
                problems.append(f"eps for {n} must be positive and finite, got {bad}")
            if n == "linf" and any(e > 1 for e in vals if math.isfinite(e)):
                problems.append(f"linf eps above 1 exceed the [0,1] input range: {[e for e in vals if e > 1]}")
            keys = [eps_key(e) for e in vals]
            if len(set(keys)) != len(keys):
                problems.append(f"eps values for {n} are too close to tell apart in field names: {keys}")
        if isinstance(self.eps, dict):
            extra = [k for k in self.eps if k not in known_n and k != ANY_NORM]
            if extra:
                problems.append(f"--eps given for norm(s) {extra} that are not in --norm {','.join(self.norms)}")
        for name, v, lo in (("steps", self.steps, 1), ("restarts", self.restarts, 1), ("df_steps", self.df_steps, 1),
                            ("candidates", self.candidates, 2), ("cw_steps", self.cw_steps, 1),
                            ("cw_search_steps", self.cw_search_steps, 1), ("steps_factor", self.steps_factor, 2),
                            ("eot", self.eot, 1), ("check_every", self.check_every, 1),
                            ("square_queries", self.square_queries, 1)):
            if int(v) < lo:
                problems.append(f"{name.replace('_', '-')} must be >= {lo}, got {v}")
        if self.step_size is not None and not self.step_size > 0:
            problems.append(f"step-size must be positive, got {self.step_size}")
        if self.step_rule is not None and self.step_rule not in STEP_RULES:
            problems.append(f"unknown step rule {self.step_rule!r}; use one of {', '.join(STEP_RULES)}")
        if self.step_rule == "apgd" and self.step_size is not None:
            problems.append("--step-size sets a fixed step; it does not combine with --step-rule apgd")
        if self.loss not in LOSSES:
            problems.append(f"unknown loss {self.loss!r}; use one of {', '.join(LOSSES)}")
        if self.version not in VERSIONS:
            problems.append(f"unknown AutoAttack version {self.version!r}; use one of {', '.join(VERSIONS)}")
        if self.version == "custom" and not self.aa_attacks:
            problems.append(f"--version custom needs --aa-attacks (from {', '.join(SUB_ATTACKS)})")
        if self.aa_attacks and self.version != "custom":
            problems.append("--aa-attacks needs --version custom")
        unknown = [a for a in (self.aa_attacks or ()) if a not in SUB_ATTACKS]
        if unknown:
            problems.append(f"unknown AutoAttack sub-attack(s) {unknown}; use {', '.join(SUB_ATTACKS)}")
        for name, v in (("aa-n-iter", self.aa_n_iter), ("aa-n-queries", self.aa_n_queries)):
            if v is not None and int(v) < 1:
                problems.append(f"{name} must be >= 1, got {v}")
        if not self.overshoot >= 0:
            problems.append(f"overshoot must be >= 0, got {self.overshoot}")
        if not self.cw_lr > 0 or not self.cw_initial_const > 0 or not self.cw_confidence >= 0:
            problems.append("cw-lr and cw-initial-const must be positive and cw-confidence >= 0")
        if problems:
            raise UsageError(f"{len(problems)} problem(s) with the attack options: " + "; ".join(problems)
                             if len(problems) > 1 else problems[0])
        return self

    # ------------------------------------------------------------------ building

    def build(self, attack: str, norm: str, eps: float | None = None, steps: int | None = None):
        """The attack object for one (attack, norm, eps)."""
        if attack == "pgd":
            return PGD(norm, eps, steps=steps or self.steps, step_size=self.step_size, restarts=self.restarts,
                       random_start=self.random_start, seed=self.seed, loss=self.loss, step_rule=self.step_rule)
        if attack == "fgsm":
            return FGSM(norm, eps, loss=self.loss)
        if attack == "deepfool":
            return DeepFool(steps=self.df_steps, overshoot=self.overshoot, candidates=self.candidates)
        if attack == "cw":
            return CarliniWagnerL2(steps=self.cw_steps, search_steps=self.cw_search_steps, lr=self.cw_lr,
                                   confidence=self.cw_confidence, initial_const=self.cw_initial_const)
        if attack == "autoattack":
            return AutoAttack(norm, eps, version=self.version, seed=self.seed, attacks=self.aa_attacks,
                              n_iter=self.aa_n_iter, n_queries=self.aa_n_queries)
        if attack == ADAPTIVE:
            return PGD(norm, eps, steps=steps or self.steps, step_size=self.step_size, restarts=self.restarts,
                       random_start=self.random_start, seed=self.seed, loss="margin", eot=self.eot,
                       step_rule=self.step_rule)
        raise UsageError(f"unknown attack {attack!r}; use one of {', '.join(ATTACKS)}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("notices", None)
        d["eps"] = {n: self.eps_for(n) for n in self.norms if n in NORMS}
        d["attacks"], d["norms"] = list(self.attacks), list(self.norms)
        if self.aa_attacks is not None:
            d["aa_attacks"] = list(self.aa_attacks)
        d["bpda"] = list(self.bpda)
        return d
