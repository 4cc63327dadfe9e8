"""``lcnn_audit.model``: the one ``model_device`` / ``preserve_training_flags`` every module uses
(issue 13: the device was found 8 ways, the training flags saved and restored 3 ways), and the
re-exports that keep the names of the old ``loading`` / ``recipe`` / ``models`` / ``timm_arch``
modules working."""

from __future__ import annotations

import contextlib
import importlib

import pytest
import torch
from safetensors import safe_open
from torch import nn

import lcnn_audit
from lcnn_audit.coerce import as_image_data
from lcnn_audit.convert import _probe, convert_model, predict
from lcnn_audit.errors import ModelError
from lcnn_audit.geometry.state import measurement_state
from lcnn_audit.model import model_device, model_dtype, preserve_training_flags
from lcnn_audit.model.checkpoint import RECIPE_KEY, parse_recipe, write_checkpoint
from lcnn_audit.model.load import load_model, save_model
from lcnn_audit.model.wrapper import AuditModel, Normalize

META = torch.device("meta")


class _IntFirst(nn.Module):
    """A non-float parameter (on CPU) registered before the float weights (on ``device``)."""

    def __init__(self, device=META):
        super().__init__()
        self.steps = nn.Parameter(torch.zeros(2, dtype=torch.long), requires_grad=False)
        self.lin = nn.Linear(2, 2, device=device, dtype=torch.float64)


class _IntBuffersOnly(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("count", torch.zeros(3, dtype=torch.long, device=META))


# --------------------------------------------------------------------------- model_device / model_dtype


def test_device_of_a_buffer_only_model_is_its_buffers():
    """``Normalize`` has buffers and no parameters: its device is theirs (``cli/info`` used the
    first parameter, so it said CPU for such a model wherever it lived)."""
    m = Normalize([0.5], [0.25]).to(META)
    assert list(m.parameters()) == []
    assert model_device(m) == META and model_dtype(m) == torch.float32
    assert model_device(m.to(torch.float64)) == META and model_dtype(m.to(torch.float64)) == torch.float64


def test_device_and_dtype_skip_a_non_float_first_parameter():
    """The first *floating* tensor decides (geometry/attacks used the first tensor of any dtype)."""
    m = _IntFirst()
    assert next(m.parameters()).device == torch.device("cpu")  # what the old copies returned
    assert model_device(m) == META and model_dtype(m) == torch.float64


def test_parameters_come_before_buffers():
    """A float buffer registered first (a non-affine batch norm's statistics, in float64 on CPU)
    does not decide while a float parameter exists (convert's copy read parameters first too)."""
    m = nn.Sequential(nn.BatchNorm1d(2, affine=False).double(), nn.Linear(2, 2, device=META))
    assert next(m.buffers()).dtype == torch.float64 and next(m.parameters()).device == META
    assert model_device(m) == META and model_dtype(m) == torch.float32


def test_models_without_float_tensors():
    assert model_device(nn.ReLU()) == torch.device("cpu") and model_dtype(nn.ReLU()) == torch.float32
    m = _IntBuffersOnly()
    assert model_device(m) == META and model_dtype(m) == torch.float32


def test_convert_builds_its_example_on_the_float_weights_device_and_dtype():
    """``convert_model`` took device and dtype from the first float tensor; ``model_dtype`` keeps
    that: a float64 model converts with a float64 example batch (no dtype mismatch)."""
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)).double()
    net.register_buffer("step", torch.zeros((), dtype=torch.long))  # a non-float tensor never decides
    out, report = convert_model(net, input_shape=(1, 2, 2))
    assert report.counts() == {"activation": 1, "linear": 2}
    assert model_dtype(out) == torch.float64 and out(torch.rand(1, 1, 2, 2, dtype=torch.float64)).dtype == torch.float64


# --------------------------------------------------------------------------- preserve_training_flags


def _mixed() -> nn.Module:
    m = AuditModel(nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Linear(3, 2)))
    m.train()
    m.net[2].eval()  # one submodule deliberately in eval mode
    return m


def _flags(m: nn.Module) -> dict[str, bool]:
    return {name: mod.training for name, mod in m.named_modules()}


@pytest.mark.parametrize("body", ["train", "eval", "raise"])
def test_preserve_training_flags_restores_every_submodule(body):
    m = _mixed()
    before = _flags(m)
    expect = pytest.raises(RuntimeError) if body == "raise" else contextlib.nullcontext()
    with expect, preserve_training_flags(m) as same:
        assert same is m
        m.train() if body == "train" else m.eval()
        assert len(set(_flags(m).values())) == 1
        if body == "raise":
            raise RuntimeError("inside")
    assert _flags(m) == before


def test_predict_keeps_mixed_training_flags():
    """``convert.predict`` restored only the top flag (``model.train(training)``), which set every
    submodule to it: a batch norm kept in eval mode in a training model came back in train mode."""
    m = _mixed()
    before = _flags(m)
    data = as_image_data((torch.rand(5, 1, 2, 2), torch.tensor([0, 1, 0, 1, 0])))
    out = predict(m, data, batch_size=2)
    assert out["index"] == [0, 1, 2, 3, 4] and len(out["pred"]) == 5
    assert _flags(m) == before


def test_probe_restores_flags_and_removes_hooks_when_the_model_fails():
    class Bad(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 2)

        def forward(self, x):
            return self.lin(x)  # (N, 1, 2, 2) into Linear(4, 2): a shape error

    m = Bad()
    m.train()
    with pytest.raises(ModelError, match="the model failed on an input of shape"):
        _probe(m, m, torch.rand(1, 1, 2, 2), (), count_functional=False)
    assert m.training and m.lin.training
    assert not m.lin._forward_pre_hooks


def test_measurement_state_restores_mixed_flags():
    m = _mixed()
    before = _flags(m)
    with measurement_state(m) as prep:
        assert not any(_flags(prep.model).values())
    assert _flags(m) == before


# --------------------------------------------------------------------------- old names keep working


OLD_NAMES = {
    "lcnn_audit.loading": [
        "RECIPE_KEY", "STATE_KEYS", "STRIP_PREFIXES", "DEMO_CHECKPOINT", "Normalize", "AuditModel", "unwrap",
        "parse_kwargs", "build_arch", "RawCheckpoint", "read_checkpoint", "extract_state_dict", "_strip",
        "fit_state_dict", "parse_normalize", "resolve_device", "load_model", "build_from_recipe", "set_eval",
        "check_model_data", "require_finite", "save_model"],
    "lcnn_audit.recipe": [
        "parse_recipe", "validate_recipe", "validate_normalize", "validate_convert", "reload_hint",
        "check_recipe_arch", "HINT_ARCH", "HINT_NORM", "HINT_CONVERT"],
    "lcnn_audit.models": ["ACTIVATIONS", "POOLS", "SmallCNN", "MLP", "BUILTIN_ARCHS"],
    "lcnn_audit.timm_arch": ["PREFIX", "HF_PREFIX", "is_timm", "resolve_timm"],
}


@pytest.mark.parametrize("module", sorted(OLD_NAMES))
def test_old_modules_re_export_the_same_objects(module):
    """Every name the pre-issue-13 module defined is still there, and is the very object of its
    new home in ``lcnn_audit.model`` (so ``isinstance`` checks and pickles agree)."""
    old = importlib.import_module(module)
    homes = [importlib.import_module(f"lcnn_audit.model.{m}")
             for m in ("wrapper", "builtin", "timm_arch", "arch", "checkpoint", "recipe", "load")]
    for name in OLD_NAMES[module]:
        value = getattr(old, name)
        where = [h for h in homes if name in vars(h)]
        assert where and all(vars(h)[name] is value for h in where), name
        if callable(value) and not isinstance(value, dict):
            assert value.__module__.startswith("lcnn_audit.model."), (name, value.__module__)


def test_package_root_exports_point_at_the_canonical_homes():
    assert lcnn_audit._EXPORTS["load_model"] == "model.load" and lcnn_audit._EXPORTS["save_model"] == "model.load"
    assert lcnn_audit.load_model is load_model and lcnn_audit.save_model is save_model


def test_builtin_arch_by_its_old_module_path(tmp_path):
    """``--arch lcnn_audit.models:MLP`` (a ``package.module:factory`` spec in user scripts and
    saved recipes) still imports, now through the re-export."""
    from lcnn_audit.model.builtin import MLP

    net = MLP(in_features=4, hidden=3, depth=1, num_classes=2)
    save_model(net, tmp_path / "m.safetensors", arch="lcnn_audit.models:MLP",
               arch_kwargs={"in_features": 4, "hidden": 3, "depth": 1, "num_classes": 2})
    m = load_model(tmp_path / "m.safetensors", arch="lcnn_audit.models:MLP",
                   arch_kwargs={"in_features": 4, "hidden": 3, "depth": 1, "num_classes": 2})
    x = torch.rand(3, 1, 2, 2)
    torch.testing.assert_close(m(x), net.eval()(x))


# --------------------------------------------------------------------------- writing checkpoints


def test_write_checkpoint_is_save_model_with_a_recipe(tmp_path):
    """``convert`` writes through ``write_checkpoint`` (below ``model.load`` in the layers); with a
    recipe given, ``save_model`` is exactly that: same tensors, same metadata."""
    m = load_model("demo")
    recipe = dict(m.recipe)
    a = save_model(m, tmp_path / "a.safetensors", recipe)
    b = write_checkpoint(m, tmp_path / "b.safetensors", recipe)
    with safe_open(str(a), "pt") as fa, safe_open(str(b), "pt") as fb:
        assert fa.metadata() == fb.metadata() and "kind" not in parse_recipe(fa.metadata()[RECIPE_KEY], "a")
        assert sorted(fa.keys()) == sorted(fb.keys())
        for k in fa.keys():
            assert torch.equal(fa.get_tensor(k), fb.get_tensor(k))
    x = torch.rand(2, 1, 28, 28)  # the demo model takes 28x28 grey images
    torch.testing.assert_close(load_model(b)(x), m(x))
