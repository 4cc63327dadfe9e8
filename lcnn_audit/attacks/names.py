"""The names the attack options choose from, importable without torch.

Threat models, losses, PGD step rules and AutoAttack's versions and sub-attacks are defined
here once; :mod:`.base`, :mod:`.pgd` and :mod:`.autoattack` (which need torch) import them,
and :class:`~lcnn_audit.attacks.options.AttackOptions` validates against them, so that the
CLI reads the attack defaults while ``lcnn-audit --help`` imports no torch.
"""

#: threat models: L∞, L2, L1 balls around the clean input in [0, 1] pixels
NORMS = ("linf", "l2", "l1")
#: PGD/FGSM objectives: cross-entropy, or the C&W margin
LOSSES = ("ce", "margin")
#: PGD step-size rules: a fixed step, or APGD's adaptive step and momentum (Croce & Hein 2020)
STEP_RULES = ("fixed", "apgd")
#: AutoAttack versions (``custom`` runs the sub-attacks given)
VERSIONS = ("standard", "plus", "rand", "custom")
#: AutoAttack's sub-attacks
SUB_ATTACKS = ("apgd-ce", "apgd-dlr", "fab", "square", "apgd-t", "fab-t")
#: The adaptive counter's row: PGD with the margin loss, EOT and BPDA (see :mod:`.counters`).
ADAPTIVE = "pgd_adaptive"
