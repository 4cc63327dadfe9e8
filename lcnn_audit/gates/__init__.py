"""Robustness gates: a YAML policy -> audits -> checks -> a verdict (``lcnn-audit gate``).

A policy names the model, the data, the audits to run with their options, and the checks::

    name: demo-cnn
    model: {checkpoint: demo}
    data: {name: demo, n: 64, seed: 0}
    audits:
      curvature: {}
      attack: {attacks: [pgd], norms: [l2], eps: [0.1, 0.5], steps: 5}
    checks:
      - metric: curvature.curvature.mean
        max: 40
      - metric: attack.pgd.l2.0.1.robust_accuracy
        min: 0.5
        statistical: true          # fail only when the whole 95 % interval is below 0.5
      - metric: attack.flags.gradient_masking
        equals: false
      - metric: curvature.curvature.mean
        max: baseline              # regression: at most 10 % above the baseline's value
        relative_to: baseline.json
        tolerance: 10%

* :mod:`.policy` - :func:`load_policy` validates the whole policy up front and raises one
  :class:`~lcnn_audit.errors.ConfigError` listing every problem with its YAML path and line;
* :mod:`.run` - :func:`run_audits` runs the audits through the audit registry
  (:data:`lcnn_audit.audits.registry.AUDITS`: the policy's audit names, options and runners), or
  :func:`load_results` reads existing result files; :func:`gate` does all of it;
* :mod:`.verdict` - :func:`evaluate` checks every metric and returns a :class:`Verdict`
  (pass / fail / error / skip per check), which :mod:`lcnn_audit.report` renders;
* :mod:`.metrics` - metric paths (``attack.pgd.l2.0.1.robust_accuracy``; see its docstring
  for keys with dots, numbers and rows).
"""

from .metrics import AUDITS, COMMANDS, VERDICT_KIND, metric_value, resolve_metric
from .policy import BoundOptions, Check, DataSpec, DiscrepancyOptions, ModelSpec, Policy, load_policy, policy_from_dict
from .run import RUNNERS, check_coverage, gate, load_results, run_audits
from .verdict import CheckResult, Verdict, evaluate, evaluate_check

__all__ = ["AUDITS", "COMMANDS", "RUNNERS", "VERDICT_KIND", "BoundOptions", "Check", "CheckResult", "DataSpec",
           "DiscrepancyOptions", "ModelSpec", "Policy", "Verdict", "check_coverage", "evaluate", "evaluate_check",
           "gate", "load_policy", "load_results", "metric_value", "policy_from_dict", "resolve_metric", "run_audits"]
