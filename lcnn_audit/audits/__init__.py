"""The audits: one module per command-level function, each a thin ``run`` over the kernels.

* :mod:`.curvature` - per-sample gradient norm, Hessian spectral norm and curvature (LCNN §3.1);
* :mod:`.grad_robustness` - gradient robustness curves (LCNN Fig. 2), also for several models;
* :mod:`.discrepancy` - train-test discrepancy (LCNN Table 3);
* :mod:`.attack` - robust accuracy under attacks, with gradient-masking flags;
* :mod:`.bound` - the data-free curvature bound (LCNN Theorem 1);
* :mod:`.convert`, :mod:`.finetune` - the ``convert`` and ``finetune`` commands as library
  calls (LCNN layers retrofitted; fine-tuning with the learning-rate rule and ``--lcnn`` weights);
* :mod:`.registry` - :data:`~.registry.AUDITS`, one :class:`~.registry.AuditSpec` per audit,
  which the gate, the demo, the report and the CLI iterate.

Each ``run(model, data, options, *, batch_size, progress, config, ...)`` returns an
:class:`~lcnn_audit.results.AuditResult`. This package's ``__init__`` imports nothing: the
registry names its modules as ``"module:attr"`` strings, resolved on first use, so that reading
it (``lcnn-audit --help``, the policy validator) imports no torch.
"""
