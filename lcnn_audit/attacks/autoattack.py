"""Adapter for AutoAttack (Croce & Hein, ICML 2020), the reference ensemble of parameter-free attacks.

PyPI has no ``autoattack`` distribution; ``pyautoattack`` carries the reference attack code
(APGD-CE, APGD-T, FAB-T, Square, ...) with a keyword-only API. The adapter imports
``autoattack`` first when that package is installed (e.g. from GitHub), else
``pyautoattack``, and supports both APIs.

What the adapter adds around ``run_standard_evaluation``:

* **Check warnings become flags.** AutoAttack's checks only log (``auto-attack`` logger in
  pyautoattack, a printing ``Logger`` in the original). The adapter swaps in a capturing
  logger, so nothing is printed, and maps each warning to a flag name: ``randomized``,
  ``softmax_output``, ``square_stronger``, ``zero_gradients``, ``dynamic_model``,
  ``too_few_classes`` (anything else: ``other``).
* **The dynamic-model counter is reset.** ``checks.check_dynamic`` counts calls to
  ``grad``/``backward`` in a module-global dict that is never reset, so after one dynamic
  model every later model would be flagged too. The adapter zeroes it before each run,
  and restores any ``sys.settrace`` tracer (coverage, debuggers) that the check removes.
* **Per-sample attribution.** Each sub-attack's ``perturb`` is wrapped to record which
  sub-attack broke each sample (``broken_by``), so the audit can tell when the black-box
  Square attack succeeds where every white-box attack failed.
* **No global side effects.** The sub-attacks call ``torch.manual_seed``; the run happens
  inside :func:`torch.random.fork_rng`, so the caller's RNG state is untouched.

The reference code draws its random numbers per batch from ``seed``; the adapter derives
that seed from ``seed`` and the batch's smallest dataset index, so a run is reproducible for
a given batch size (unlike PGD's, its draws do depend on batch composition).
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import io
import logging
import sys
import warnings
from dataclasses import dataclass, field

import torch

from ..errors import UsageError
from .base import check_eps, check_norm, default_index
from .names import SUB_ATTACKS, VERSIONS

AA_NORMS = {"linf": "Linf", "l2": "L2", "l1": "L1"}
BLACK_BOX = ("square",)
#: (substring of AutoAttack's warning, flag name), first match wins.
CHECK_PATTERNS = (
    ("randomized defense", "randomized"),
    ("probability distribution", "softmax_output"),
    ("Square Attack has decreased", "square_stronger"),
    ("zero gradient", "zero_gradients"),
    ("dynamic defense", "dynamic_model"),
    ("not possible to use", "too_few_classes"),
    ("target classes", "too_few_classes"),
)
CHECK_FLAGS = tuple(dict.fromkeys(name for _, name in CHECK_PATTERNS)) + ("other",)
LOGGER_NAME = "auto-attack"


def load_autoattack():
    """The AutoAttack package: ``autoattack`` when installed, else ``pyautoattack``."""
    for name in ("autoattack", "pyautoattack"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        if hasattr(module, "AutoAttack"):
            return module
    raise UsageError("--attack autoattack needs the AutoAttack code: pip install pyautoattack")


def flag_of(message: str) -> str:
    """The flag name for one of AutoAttack's check warnings."""
    for pattern, name in CHECK_PATTERNS:
        if pattern in message:
            return name
    return "other"


class _CaptureLogger:
    """Stands in for AutoAttack's loggers (logging-style and the original's ``log(str)``)."""

    _LEVELS = {logging.DEBUG: "debug", logging.INFO: "info", logging.WARNING: "warning", logging.ERROR: "error",
               logging.CRITICAL: "error"}

    def __init__(self):
        self.records: list[tuple[str, str]] = []

    def add(self, level: str, msg, *args) -> None:
        text = str(msg)
        if args:
            with contextlib.suppress(TypeError, ValueError):
                text = text % args
        self.records.append((level, text))

    def debug(self, msg, *args, **_):
        self.add("debug", msg, *args)

    def info(self, msg, *args, **_):
        self.add("info", msg, *args)

    def warning(self, msg, *args, **_):
        self.add("warning", msg, *args)

    warn = warning

    def error(self, msg, *args, **_):
        self.add("error", msg, *args)

    critical = exception = error

    def log(self, *args, **_):
        if len(args) >= 2 and isinstance(args[0], int):  # logging.Logger.log(level, msg, *args)
            self.add(self._LEVELS.get(args[0], "info"), args[1], *args[2:])
        elif args:  # the original package's Logger.log(text); its checks prefix "Warning: "
            text = str(args[0])
            self.add("warning" if text.startswith("Warning") else "info", text)

    @property
    def warnings(self) -> list[str]:
        return [msg for level, msg in self.records if level in ("warning", "error")]


class _Handler(logging.Handler):
    def __init__(self, sink: _CaptureLogger):
        super().__init__(logging.DEBUG)
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        self.sink.add(_CaptureLogger._LEVELS.get(record.levelno, "info"), record.getMessage())


@contextlib.contextmanager
def _captured_logging(sink: _CaptureLogger):
    """Route the ``auto-attack`` logger into ``sink`` only, for the duration."""
    logger = logging.getLogger(LOGGER_NAME)
    handler = _Handler(sink)
    old = (logger.level, logger.propagate)
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old[0])
        logger.propagate = old[1]


class _Tracker:
    """Follows ``run_standard_evaluation``'s robust mask to attribute each success to a sub-attack."""

    def __init__(self, model, x: torch.Tensor, y: torch.Tensor):
        self.model, self.x, self.y = model, x, y
        with torch.no_grad():
            self.robust = model(x).argmax(dim=1) == y
        self.broken_by = [""] * x.shape[0]
        self.counts: dict[str, int] = {}
        self.ok = True

    def wrap(self, obj, name_of) -> None:
        if obj is None or not hasattr(obj, "perturb"):
            return
        original = obj.perturb

        def perturb(xs, ys, *args, **kwargs):
            adv = original(xs, ys, *args, **kwargs)
            self.record(name_of(obj), xs, ys, adv)
            return adv

        obj.perturb = perturb

    def record(self, name: str, xs, ys, adv) -> None:
        idx = self.robust.nonzero().squeeze(1)
        if not self.ok or idx.numel() != xs.shape[0] or not torch.equal(self.x[idx], xs.to(self.x.device)):
            self.ok = False  # e.g. a randomized model: stop attributing rather than guess
            return
        with torch.no_grad():
            fooled = (self.model(adv).argmax(dim=1) != ys).to(idx.device)
        for i in idx[fooled].tolist():
            self.broken_by[i] = name
        self.robust[idx[fooled]] = False
        self.counts[name] = self.counts.get(name, 0) + int(fooled.sum())


@dataclass
class AutoAttackOutput:
    """What :meth:`AutoAttack.run` returns: x_adv, AutoAttack's predictions, the sub-attack per sample, flags."""

    x_adv: torch.Tensor
    y_adv: torch.Tensor  # AutoAttack's own predictions on x_adv (the audit re-checks them)
    broken_by: list[str]  # sub-attack that broke each sample; "" if none; "unknown" if not attributable
    flags: dict[str, bool] = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    package: str = ""


class AutoAttack:
    """``AutoAttack(norm="linf", eps, version="standard", seed=0, attacks=None, n_iter=None, n_queries=None)``.

    ``attack(model, x, y, index=None) -> x_adv``; :meth:`run` also returns AutoAttack's flags,
    messages and per-sample attribution. ``version`` is ``standard``, ``plus``, ``rand`` or
    ``custom`` (then ``attacks`` lists sub-attacks from :data:`SUB_ATTACKS`). ``n_iter``
    (APGD/FAB iterations) and ``n_queries`` (Square) shrink the reference budget for quick
    runs; results with them set are not standard AutoAttack numbers.
    """

    name = "autoattack"
    norms = tuple(AA_NORMS)
    minimal_norm = False
    white_box = False  # Square is a black-box attack
    #: the reference code draws per batch (from the seed and the batch's first index), so a
    #: sample's result depends on the batch it is in
    batch_independent = False

    @classmethod
    def from_options(cls, options, norm: str, eps: float | None = None, steps: int | None = None) -> AutoAttack:
        """AutoAttack as ``AttackOptions`` configures it (its budgets are its own: ``steps`` is unused)."""
        return cls(norm, eps, version=options.version, seed=options.seed, attacks=options.aa_attacks,
                   n_iter=options.aa_n_iter, n_queries=options.aa_n_queries)

    def __init__(self, norm: str = "linf", eps: float | None = None, version: str = "standard", seed: int = 0,  # noqa: PLR0917 - public constructor, positional like its peers
                 attacks: list[str] | tuple[str, ...] | None = None, n_iter: int | None = None,
                 n_queries: int | None = None):
        check_norm("AutoAttack", norm, self.norms)
        problems = []
        if version not in VERSIONS:
            problems.append(f"unknown version {version!r}; use one of {', '.join(VERSIONS)}")
        if version == "custom" and not attacks:
            problems.append(f"version 'custom' needs attacks (from {', '.join(SUB_ATTACKS)})")
        if version != "custom" and attacks:
            problems.append("attacks can only be chosen with version 'custom'")
        unknown = [a for a in (attacks or ()) if a not in SUB_ATTACKS]
        if unknown:
            problems.append(f"unknown sub-attack(s) {unknown}; use {', '.join(SUB_ATTACKS)}")
        if n_iter is not None and int(n_iter) < 1:
            problems.append(f"n_iter must be >= 1, got {n_iter}")
        if n_queries is not None and int(n_queries) < 1:
            problems.append(f"n_queries must be >= 1, got {n_queries}")
        if problems:
            raise UsageError("AutoAttack: " + "; ".join(problems))
        self.norm, self.eps, self.version, self.seed = norm, check_eps("AutoAttack", eps), version, int(seed)
        self.attacks = tuple(attacks) if attacks else None
        self.n_iter = int(n_iter) if n_iter is not None else None
        self.n_queries = int(n_queries) if n_queries is not None else None

    def __repr__(self) -> str:
        extra = f", attacks={list(self.attacks)}" if self.attacks else ""
        return f"AutoAttack(norm={self.norm!r}, eps={self.eps:g}, version={self.version!r}, seed={self.seed}{extra})"

    def __call__(self, model, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        """``run(...).x_adv``."""
        return self.run(model, x, y, index).x_adv

    def batch_seed(self, index: torch.Tensor) -> int:
        """A seed for this batch, from ``seed`` and its first dataset index (batch composition fixes it)."""
        first = int(index.min()) if index.numel() else 0
        return (self.seed * 1_000_003 + first) % (2**31 - 1)

    def run(self, model, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor | None = None) -> AutoAttackOutput:
        """Run AutoAttack on the batch; its warnings become ``flags``."""
        x = x.detach()
        y = y.to(x.device)
        index = default_index(x, index)
        if x.shape[0] == 0:
            return AutoAttackOutput(x.clone(), y.clone(), [])
        pkg = load_autoattack()
        checks = _checks_module(pkg)
        _reset_dynamic_counter(checks)
        sink = _CaptureLogger()
        tracker = _Tracker(model, x, y)
        devices = [x.device.index if x.device.index is not None else torch.cuda.current_device()] \
            if x.device.type == "cuda" else []
        old_trace = sys.gettrace()
        try:
            with _captured_logging(sink), warnings.catch_warnings(record=True) as caught, \
                    contextlib.redirect_stdout(io.StringIO()) as out, torch.random.fork_rng(devices=devices):
                warnings.simplefilter("always")
                aa = self._build(pkg, model, x.device, self.batch_seed(index))
                for obj in (aa, getattr(aa, "apgd", None), getattr(aa, "apgd_targeted", None)):
                    if obj is not None and hasattr(obj, "logger"):
                        obj.logger = sink
                self._shrink(aa)
                tracker.wrap(getattr(aa, "apgd", None), lambda o: "apgd-ce" if o.loss == "ce" else "apgd-dlr")
                tracker.wrap(getattr(aa, "apgd_targeted", None), lambda o: "apgd-t")
                tracker.wrap(getattr(aa, "fab", None), lambda o: "fab-t" if getattr(o, "targeted", False) else "fab")
                tracker.wrap(getattr(aa, "square", None), lambda o: "square")
                x_adv, y_adv = self._evaluate(aa, x, y)
        finally:
            sys.settrace(old_trace)
            _reset_dynamic_counter(checks)
        messages = list(sink.warnings)
        for w in caught:  # the checks warn with the bare Warning class; re-issue anything else
            if w.category is Warning or flag_of(str(w.message)) != "other":
                messages.append(str(w.message))
            else:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        messages += [line for line in out.getvalue().splitlines() if line.lower().startswith("warning")]
        messages = list(dict.fromkeys(m.strip() for m in messages if m.strip()))
        flags = {name: False for name in CHECK_FLAGS}
        for m in messages:
            flags[flag_of(m)] = True
        broken_by = tracker.broken_by if tracker.ok else ["unknown"] * x.shape[0]
        return AutoAttackOutput(x_adv=x_adv.detach().to(x.device), y_adv=y_adv.detach().to(x.device),
                                broken_by=broken_by, flags=flags, messages=messages, counts=dict(tracker.counts),
                                package=f"{pkg.__name__} {getattr(pkg, '__version__', '')}".strip())

    def _build(self, pkg, model, device, seed):
        params = inspect.signature(pkg.AutoAttack).parameters
        kw = dict(norm=AA_NORMS[self.norm], eps=self.eps, seed=seed, version=self.version, device=device)
        if "attacks" in params:  # pyautoattack's keyword-only API
            if self.attacks:
                kw["attacks"] = list(self.attacks)
        else:  # the original autoattack package
            kw["verbose"] = False
            if self.attacks:
                kw["attacks_to_run"] = list(self.attacks)
        return pkg.AutoAttack(model, **kw)

    def _shrink(self, aa) -> None:
        if self.n_iter is not None:
            for obj in (getattr(aa, "apgd", None), getattr(aa, "apgd_targeted", None)):
                if obj is None:
                    continue
                obj.n_iter = obj.n_iter_orig = self.n_iter
                obj.n_iter_2 = max(int(0.22 * self.n_iter), 1)
                obj.n_iter_min = max(int(0.06 * self.n_iter), 1)
                obj.size_decr = max(int(0.03 * self.n_iter), 1)
            if getattr(aa, "fab", None) is not None:
                aa.fab.n_iter = self.n_iter
        if self.n_queries is not None and getattr(aa, "square", None) is not None:
            aa.square.n_queries = self.n_queries

    @staticmethod
    def _evaluate(aa, x, y):
        params = inspect.signature(aa.run_standard_evaluation).parameters
        bs = max(1, x.shape[0])
        if "batch_size" in params:
            out = aa.run_standard_evaluation(x, y, batch_size=bs)
        else:
            out = aa.run_standard_evaluation(x, y, bs=bs, return_labels=True)
        return out


def _checks_module(pkg):
    try:
        return importlib.import_module(pkg.__name__ + ".checks")
    except ImportError:
        return None


def _reset_dynamic_counter(checks) -> None:
    funcs = getattr(checks, "funcs", None)
    if isinstance(funcs, dict):
        for key in funcs:
            funcs[key] = 0
