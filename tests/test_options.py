"""The one options style: Problem, OptionsError and the field spellings (lcnn_audit/options.py)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from torch import nn

from lcnn_audit.errors import UsageError
from lcnn_audit.model import model_device, model_dtype, preserve_training_flags
from lcnn_audit.options import OptionsError, Problem, finite_problems, flag_label, key_label, one_of, validate


@dataclass(frozen=True)
class _Opts:
    max_iter: int = 1
    tol: float = 0.5

    def problems(self):
        out = finite_problems(self)
        if self.max_iter < 1:
            out.append(Problem("max_iter", f"must be >= 1, got {self.max_iter}"))
        if not 0 < self.tol < 1:
            out.append(Problem("tol", f"must lie in (0, 1) when {{max_iter}} is {self.max_iter}, got {self.tol}"))
        return out

    def validate(self):
        validate(self)


def test_all_problems_in_one_error_spelled_by_the_front_end():
    with pytest.raises(UsageError) as info:
        _Opts(max_iter=0, tol=2.0).validate()
    err = info.value
    assert isinstance(err, OptionsError)
    assert [p.field for p in err.problems] == ["max_iter", "tol"]
    assert str(err) == "max_iter must be >= 1, got 0; tol must lie in (0, 1) when max_iter is 0, got 2.0"
    assert err.render(flag_label) == ("--max-iter must be >= 1, got 0; "
                                      "--tol must lie in (0, 1) when --max-iter is 0, got 2.0")
    assert err.render(lambda f: f"audits.curvature.{f}").startswith("audits.curvature.max_iter must")


def test_valid_options_raise_nothing_and_nan_is_a_problem():
    _Opts().validate()
    assert [p.field for p in _Opts(tol=float("nan")).problems()] == ["tol", "tol"]
    assert Problem(None, "whole object").render() == "whole object"
    assert key_label("fd_h") == "fd_h" and flag_label("fd_h") == "--fd-h"
    assert one_of("method", "x", ("a", "b")) == [Problem("method", "is 'x'; use one of a, b")]
    assert one_of("method", "a", ("a", "b")) == []


def test_model_helpers():
    m = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2)).double()
    assert model_device(m) == torch.device("cpu") and model_dtype(m) == torch.float64
    assert model_device(nn.ReLU()) == torch.device("cpu") and model_dtype(nn.ReLU()) == torch.float32
    m[1].eval()
    with pytest.raises(RuntimeError), preserve_training_flags(m):
        m.train()
        raise RuntimeError
    assert m[0].training and not m[1].training


def _option_classes():
    from lcnn_audit.audits.registry import AUDITS
    from lcnn_audit.convert import ConvertOptions
    from lcnn_audit.penalties import PenaltyConfig
    from lcnn_audit.training import TrainConfig

    return [spec.options_class for spec in AUDITS.values()] + [ConvertOptions, TrainConfig, PenaltyConfig]


@pytest.mark.parametrize("cls", _option_classes(), ids=lambda c: c.__name__)
def test_every_options_class_follows_the_one_style(cls):
    """Frozen dataclass; ``problems()`` -> [] at the defaults; NaN in every float field -> one
    OptionsError naming each of those fields (all problems at once, not the first)."""
    import dataclasses
    import typing

    assert dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen, cls
    default = cls()
    assert default.problems() == [] and all(isinstance(p, Problem) for p in default.problems())
    default.validate()
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(default, dataclasses.fields(cls)[0].name, None)
    hints = typing.get_type_hints(cls)
    floats = [f.name for f in dataclasses.fields(cls) if f.init and hints[f.name] in (float, float | None)]
    if not floats:
        return
    bad = dataclasses.replace(default, **{name: float("nan") for name in floats})
    problems = bad.problems()
    assert {p.field.rpartition(".")[2] for p in problems if p.field} >= set(floats), problems
    with pytest.raises(OptionsError) as info:
        bad.validate()
    assert len(info.value.problems) == len(problems) >= len(floats)
