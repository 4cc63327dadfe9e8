"""Training and fine-tuning with curvature penalties, checkpoints and exact resume.

``train(model, train_data, test_data, config, ...)`` trains an :class:`AuditModel` in place
and returns an :class:`AuditResult` (command ``finetune``); see :mod:`.loop`.

* :mod:`.config`: :class:`TrainConfig`, :class:`AdversarialTraining`, the learning-rate rule;
* :mod:`.steps`: one optimisation step (:func:`train_step`), augmentation, optimizer, schedule;
* :mod:`.checkpoint`: the resume state (atomic, pickle-free);
* :mod:`.loop`: :func:`train`, :func:`evaluate`, :func:`subset`;
* :mod:`.init`: :func:`init_model` (from scratch) and :func:`output_recipe`.
"""


from .._lazy import lazy_attributes

#: public name -> the module that defines it, imported on first use (PEP 562): :mod:`.config`
#: needs no torch, so that the CLI reads the training defaults before torch is imported
_EXPORTS = {name: module for module, names in {
    "config": ("ATTACK_NORMS", "AUGMENTATIONS", "DEFAULT_MILESTONES", "FINETUNE_LR", "OPTIMIZERS", "SCHEDULES",
               "SCRATCH_LR", "AdversarialTraining", "PenaltyConfig", "TrainConfig", "TrainConfigError",
               "effective_lr"),
    "checkpoint": ("CHECKPOINT_NAME", "FORMAT", "FORMAT_VERSION", "LOG_NAME", "read_train_checkpoint"),
    "init": ("init_model", "output_recipe"),
    "loop": ("StepInfo", "evaluate", "subset", "train"),
    "steps": ("TrainingDivergedError", "augment", "make_optimizer", "make_scheduler", "no_decay_parameters",
              "resolve_augment", "train_step"),
    "..reproducibility": ("StopFlag",),
}.items() for name in names}


__getattr__, __dir__ = lazy_attributes(__name__, globals(), _EXPORTS)


__all__ = [
    "ATTACK_NORMS", "AUGMENTATIONS", "CHECKPOINT_NAME", "DEFAULT_MILESTONES", "FINETUNE_LR", "FORMAT",
    "FORMAT_VERSION", "LOG_NAME", "OPTIMIZERS", "SCHEDULES", "SCRATCH_LR", "AdversarialTraining", "PenaltyConfig",
    "StepInfo", "StopFlag", "TrainConfig", "TrainConfigError", "TrainingDivergedError", "augment", "effective_lr",
    "evaluate", "init_model", "make_optimizer", "make_scheduler", "no_decay_parameters", "output_recipe",
    "read_train_checkpoint", "resolve_augment", "subset", "train", "train_step",
]
