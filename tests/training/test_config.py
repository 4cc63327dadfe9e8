"""Training options in the one options style: every problem at once, each naming its field;
the learning-rate rule in one place."""

import math

import pytest
import torch

from lcnn_audit.errors import ConfigError
from lcnn_audit.options import OptionsError, flag_label
from lcnn_audit.penalties import PenaltyConfig
from lcnn_audit.training import (
    FINETUNE_LR,
    SCRATCH_LR,
    AdversarialTraining,
    TrainConfig,
    TrainConfigError,
    effective_lr,
    make_optimizer,
)


def test_problems_lists_every_problem_with_its_field():
    cfg = TrainConfig(epochs=-1, batch_size=1, optimizer="lbfgs", lr=0.0, momentum=1.0, weight_decay=-1,
                      schedule="step", milestones=(0,), lr_decay=2, augment="mixup", curvature_n=-1, eval_n=0,
                      eval_batch_size=0, penalties=PenaltyConfig(gradreg=-1, cure_h=math.inf, jacobian_probes=-1),
                      adversarial=AdversarialTraining("l1", 0, 0, -1.0))
    fields = [p.field for p in cfg.problems()]
    assert fields == ["epochs", "batch_size", "optimizer", "lr", "momentum", "weight_decay", "schedule", "milestones",
                      "lr_decay", "augment", "curvature_n", "eval_n", "eval_batch_size", "penalties.gradreg",
                      "penalties.cure_h", "penalties.jacobian_probes", "adversarial.norm", "adversarial.eps",
                      "adversarial.steps", "adversarial.step_size"]
    with pytest.raises(TrainConfigError) as err:
        cfg.validate()
    assert isinstance(err.value, OptionsError) and isinstance(err.value, ConfigError)
    assert len(err.value.problems) == 20 and str(err.value).startswith("training config: 20 problem(s): ")
    text = str(err.value)
    assert "lr must be > 0, got 0.0" in text and "adversarial.eps must be > 0" in text and "--" not in text
    assert "--lr must be > 0" in err.value.render(flag_label)
    assert TrainConfig().problems() == [] and AdversarialTraining().problems() == []


def test_non_finite_values_are_problems_of_their_field():
    probs = TrainConfig(lr=math.nan, momentum=math.inf, adversarial=AdversarialTraining(eps=math.nan)).problems()
    assert {p.field for p in probs if "finite" in p} == {"lr", "momentum", "adversarial.eps"}


def test_penalty_problems_are_problem_objects():
    probs = PenaltyConfig(lambda_beta=-1, gradreg=math.nan, cure_h=-1, cure_h_warmup=math.inf,
                          cross_lipschitz_probes=-3).problems()
    assert [p.field for p in probs] == ["lambda_beta", "gradreg", "cure_h", "cure_h_warmup", "cross_lipschitz_probes"]
    assert probs[0].render() == "lambda_beta (a penalty weight) must be a finite number >= 0, got -1"
    with pytest.raises(OptionsError, match="cure_h must be a finite number >= 0, got -1"):
        PenaltyConfig(cure_h=-1).validate()


def test_lr_rule_lives_in_one_function():
    """``lr=None``: 0.1 from scratch, 0.01 fine-tuning; an explicit rate always wins. Before,
    ``TrainConfig().lr`` was 0.1 whatever was trained (the CLI alone knew the 0.01 rule)."""
    assert TrainConfig().lr is None
    assert effective_lr(TrainConfig()) == FINETUNE_LR == 0.01
    assert effective_lr(TrainConfig(), from_scratch=True) == SCRATCH_LR == 0.1
    assert effective_lr(TrainConfig(lr=0.3), from_scratch=True) == 0.3
    assert TrainConfig().with_lr(True).lr == 0.1 and TrainConfig(lr=0.2).with_lr(False).lr == 0.2
    opt = make_optimizer(torch.nn.Linear(2, 2), TrainConfig())
    assert [g["lr"] for g in opt.param_groups] == [0.01]
