"""``convert_model`` / ``lcnn-audit convert``: torchvision and user models convert, the report
is complete, and converted checkpoints round-trip through save and load with identical outputs."""

import json
import math
import textwrap

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from typer.testing import CliRunner

from lcnn_audit.cli import app
from lcnn_audit.convert import ConvertOptions, convert_checkpoint, convert_model, rebuild_converted
from lcnn_audit.errors import CheckpointError, UsageError
from lcnn_audit.layers import CenteredSoftplus, LipschitzBatchNorm1d, LipschitzBatchNorm2d
from lcnn_audit.layers.spectral import ConvSpectralNorm
from lcnn_audit.loading import build_arch, load_model, save_model

runner = CliRunner()

USER_MODEL = '''
import torch
import torch.nn.functional as F
from torch import nn


class Net(nn.Module):
    """Functional activations in forward and one activation module shared by two call sites."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 6, 3, stride=2, padding=1)
        self.act = nn.GELU()
        self.fc = nn.Linear(6 * 4 * 4, num_classes)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.act(self.conv2(x))
        x = torch.relu(x) + self.act(x).relu()
        return self.fc(x.flatten(1))


class Untraceable(Net):
    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        if x.sum() > -1e9:  # data-dependent control flow: torch.fx cannot trace this
            x = self.act(self.conv2(x))
        return self.fc(self.act(x).flatten(1))


def make_net(num_classes=10):
    return Net(num_classes)


def make_untraceable(num_classes=10):
    return Untraceable(num_classes)
'''


@pytest.fixture
def user_arch(tmp_path):
    path = tmp_path / "lcnn_user_model.py"
    path.write_text(textwrap.dedent(USER_MODEL))
    return str(path)


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def assert_one_line_error(res, match: str):
    assert res.exit_code == 2, res.output
    text = " ".join(ln for ln in res.output.splitlines() if ln.strip())
    assert "error:" in text and match in text, res.output
    assert "Traceback" not in res.output


def _randomize_bn(net: nn.Module) -> None:
    """Give every batch norm non-trivial running statistics and affine parameters."""
    g = torch.Generator().manual_seed(3)
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            with torch.no_grad():
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)


def dense_conv_norm(conv: nn.Conv2d, shape) -> float:
    """Spectral norm of the (normalised) conv layer's linear map on ``shape``, from its dense matrix."""
    n = math.prod(shape)
    eye = torch.eye(n, dtype=torch.float64).view(n, *shape)
    with torch.no_grad():
        cols = conv._conv_forward(eye, conv.weight.detach().double(), None)
    return float(torch.linalg.matrix_norm(cols.reshape(n, -1), 2))


def round_trip(model, recipe, tmp_path, x):
    path = tmp_path / "converted.safetensors"
    save_model(model, path, recipe)
    # a recipe naming a user factory is imported only when the user vouches for it with --arch
    loaded = load_model(path, arch=recipe["arch"] if ":" in recipe["arch"] else None)
    model.eval()
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    return loaded


# --------------------------------------------------------------------------- torchvision


def test_resnet18_converts_and_round_trips(tmp_path):
    torch.manual_seed(0)
    net = build_arch("resnet18", {"num_classes": 10}).eval()
    _randomize_bn(net)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        ref = net(x)
    conv, report = convert_model(net, ConvertOptions(), input_shape=(3, 32, 32))
    # every BasicBlock calls its ReLU twice: 1 + 8 × 2 call sites, each with its own β
    assert report.counts() == {"activation": 17, "conv": 20, "batchnorm": 20, "linear": 1}
    assert not report.skipped
    assert any("layer1.0.relu was shared" in n for n in report.notes)
    assert sum(isinstance(m, CenteredSoftplus) for m in conv.modules()) == 17
    assert not any(isinstance(m, (nn.ReLU, nn.BatchNorm2d)) and not isinstance(m, LipschitzBatchNorm2d)
                   for m in conv.modules())
    assert all(e["converged"] for e in report.swapped if e["kind"] in ("conv", "linear"))
    strided = {e["name"]: e for e in report.swapped if e["kind"] == "conv"}
    assert strided["layer4.0.downsample.0"]["input_shape"] == [256, 2, 2]
    # spectral norm 1 against the dense operator (stride-2 3x3 and stride-2 1x1 layers)
    for name in ("layer4.0.conv1", "layer4.0.downsample.0"):
        layer = conv.get_submodule(name)
        assert isinstance(layer, nn.Conv2d)
        assert dense_conv_norm(layer, tuple(strided[name]["input_shape"])) == pytest.approx(1.0, abs=1e-3)
    # σ was folded into the following batch norms: with activations unchanged the function would be
    # preserved; here the ReLU -> centered softplus swap is the only change, so outputs stay close
    conv.eval()
    with torch.no_grad():
        out = conv(x)
    assert bool(torch.isfinite(out).all())
    assert net is not conv and isinstance(net.relu, nn.ReLU)  # the original model is untouched
    recipe = {"arch": "resnet18", "arch_kwargs": {"num_classes": 10}, "normalize": None, "convert": report.recipe}
    loaded = round_trip(conv, recipe, tmp_path, x)
    assert loaded.recipe["convert"]["input_shape"] == [3, 32, 32]
    assert ref.shape == out.shape


@pytest.mark.slow
def test_vgg11_converts_and_round_trips(tmp_path):
    torch.manual_seed(0)
    net = build_arch("vgg11", {"num_classes": 10}).eval()
    x = torch.rand(1, 3, 32, 32)
    conv, report = convert_model(net, ConvertOptions(tol=1e-4), input_shape=(3, 32, 32), inplace=True)
    assert report.counts() == {"activation": 10, "conv": 8, "linear": 3}
    assert any("MaxPool2d ×5" in n for n in report.notes)
    recipe = {"arch": "vgg11", "arch_kwargs": {"num_classes": 10}, "normalize": None, "convert": report.recipe}
    round_trip(conv, recipe, tmp_path, x)


# --------------------------------------------------------------------------- user models


def test_functional_relu_user_model_converts_and_round_trips(user_arch, tmp_path):
    net = build_arch(f"{user_arch}:make_net").eval()
    _randomize_bn(net)
    model = load_model(net)  # an AuditModel without a recipe
    model.recipe.update(arch=f"{user_arch}:make_net", arch_kwargs={})
    converted, report = convert_model(model, ConvertOptions(beta_init=3.0), input_shape=(1, 8, 8))
    names = [e["name"] for e in report.swapped if e["kind"] == "activation"]
    # F.relu, torch.relu, x.relu() and both call sites of the shared GELU
    assert sorted(names) == ["act", "act_1", "fx_relu_0", "fx_relu_1", "fx_relu_2"]
    assert report.graph_rewritten and report.traced
    betas = [float(m.beta.detach()) for m in converted.modules() if isinstance(m, CenteredSoftplus)]
    assert betas == pytest.approx([3.0] * 5)
    assert {e["name"] for e in report.swapped if e["kind"] == "conv"} == {"conv1", "conv2"}
    folded = {e["name"]: e["folded_into"] for e in report.swapped if e["kind"] == "conv"}
    assert folded == {"conv1": "bn1", "conv2": None}
    assert converted.recipe["convert"]["activations"] == names
    x = torch.rand(3, 1, 8, 8)
    recipe = {k: converted.recipe[k] for k in ("arch", "arch_kwargs", "normalize", "convert")}
    round_trip(converted, recipe, tmp_path, x)


def test_untraceable_model_report_says_what_was_not_converted(user_arch):
    net = build_arch(f"{user_arch}:make_untraceable").eval()
    conv, report = convert_model(net, ConvertOptions(), input_shape=(1, 8, 8))
    assert not report.traced and any("not traceable" in n for n in report.notes)
    skipped = {e["type"]: e["reason"] for e in report.skipped}
    assert "functional relu" in skipped and "1 functional relu call" in skipped["functional relu"]
    assert any("act is called at 2 sites" in n for n in report.notes)
    assert any("could not be folded" in n for n in report.notes)
    assert isinstance(conv.act, CenteredSoftplus)  # the module itself is still swapped
    assert isinstance(conv.bn1, LipschitzBatchNorm2d)


def test_folding_keeps_the_eval_function_of_conv_bn_pairs():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 5, 3, padding=1), nn.BatchNorm2d(5, eps=1e-12), nn.ReLU(),
                        nn.Conv2d(5, 5, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(5, eps=1e-12), nn.ReLU(),
                        nn.Flatten(), nn.Linear(5 * 3 * 3, 7), nn.BatchNorm1d(7, eps=1e-12)).eval()
    _randomize_bn(net)
    x = torch.rand(4, 2, 6, 6)
    conv, report = convert_model(net, ConvertOptions(activations=False), input_shape=(2, 6, 6))
    assert {e["name"]: e["folded_into"] for e in report.swapped if e["kind"] in ("conv", "linear")} == {
        "0": "1", "3": "4", "7": "8"}
    assert all(e["sigma"] > 0 for e in report.swapped if e["kind"] in ("conv", "linear"))
    assert isinstance(conv[8], LipschitzBatchNorm1d) and isinstance(conv[2], nn.ReLU)
    with torch.no_grad():
        torch.testing.assert_close(conv(x), net(x), rtol=1e-4, atol=1e-5)
    # without folding, the eval-mode function changes (each layer shrinks by 1/σ)
    unfolded, _ = convert_model(net, ConvertOptions(activations=False, fold_into_bn=False), input_shape=(2, 6, 6))
    with torch.no_grad():
        assert not torch.allclose(unfolded(x), net(x), rtol=1e-2)


def test_options_select_replacements_and_mode_is_kept():
    net = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 2))
    net.train()
    conv, report = convert_model(net, ConvertOptions(batchnorm=False, linear=False, activation_kinds=("gelu",)),
                                 input_shape=(1, 6, 6))
    assert report.counts() == {"conv": 1}
    assert type(conv[1]) is nn.BatchNorm2d and isinstance(conv[2], nn.ReLU)
    assert isinstance(conv[0].parametrizations.weight[0], ConvSpectralNorm)
    assert all(m.training for m in conv.modules())
    mixed = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 2))
    mixed.train()
    mixed[1].eval()  # e.g. frozen batch-norm statistics
    conv, _ = convert_model(mixed, ConvertOptions(), input_shape=(1, 6, 6))
    assert conv.training and not conv[1].training and conv[0].parametrizations.weight[0].training
    assert not conv.get_submodule("1").training and conv[2].training
    assert any("ReLU ×1" in n for n in report.notes)
    with pytest.raises(UsageError) as err:
        ConvertOptions(beta_init=0, gamma_init=0.5, activation_kinds=("tanh",), max_iter=0).validate()
    for word in ("beta-init", "gamma-init", "tanh", "max-iter"):
        assert word in str(err.value)
    with pytest.raises(UsageError, match="already contains LCNN layers"):
        convert_model(conv, ConvertOptions(), input_shape=(1, 6, 6))
    with pytest.raises(UsageError, match="input size"):
        convert_model(net, ConvertOptions())


def test_rebuild_refuses_a_changed_architecture():
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 4 * 4, 2))
    _, report = convert_model(net, ConvertOptions(), input_shape=(1, 6, 6))
    other = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 4 * 4, 2))
    with pytest.raises(CheckpointError, match="differ from those converted"):
        rebuild_converted(other, report.recipe)
    with pytest.raises(CheckpointError, match="recipe version"):
        rebuild_converted(net, {**report.recipe, "version": 99})


def test_convert_checkpoint_reports_accuracy(tmp_path):
    from lcnn_audit.data import load_data

    data = load_data("demo", n=48)
    model = load_model("demo")
    out = tmp_path / "demo_lcnn.safetensors"
    converted, result = convert_checkpoint(model, ConvertOptions(beta_init=20.0), output=out, data=data)
    s = result.summary
    assert result.command == "convert" and s["output"] == str(out)
    acc_before = sum(int(p == y) for p, y in zip(result.per_sample["pred_before"], result.per_sample["label"],
                                                 strict=True)) / 48
    assert s["accuracy_before"] == pytest.approx(acc_before) and 0 <= s["accuracy_after"] <= 1
    assert s["counts"] == {"activation": 4, "conv": 4, "linear": 1, "batchnorm": 4}
    with torch.no_grad():
        x = data.get(torch.arange(5)).x
        assert torch.equal(load_model(out)(x), converted(x))


# --------------------------------------------------------------------------- CLI


def test_cli_convert_then_every_command_loads_it(tmp_path):
    out, js = tmp_path / "c.safetensors", tmp_path / "c.json"
    res = invoke("convert", "demo", "-o", out, "--data", "demo", "--n", "32", "--json", js)
    assert res.exit_code == 0, res.output
    assert "CenteredSoftplus" in res.output and "clean accuracy" in res.output and out.is_file()
    d = json.loads(js.read_text())
    assert d["command"] == "convert" and set(d) >= {"config", "summary", "per_sample", "timing", "environment"}
    assert d["summary"]["counts"]["batchnorm"] == 4 and len(d["per_sample"]["pred_after"]) == 32
    res = invoke("curvature", out, "--data", "demo", "--n", "2", "--method", "lanczos", "--max-iter", "3",
                 "--fro-probes", "0", "--jacobian", "off")
    assert res.exit_code == 0, res.output
    res = invoke("info", out, "--data", "demo", "--n", "2")
    assert res.exit_code == 0 and "small_cnn" in res.output, res.output


def test_cli_convert_input_shape_and_options(tmp_path):
    out = tmp_path / "c.safetensors"
    res = invoke("convert", "demo", "-o", out, "--input-shape", "1,28,28", "--no-batchnorm", "--kinds", "relu",
                 "--beta-init", "2", "--no-fold-bn")
    assert res.exit_code == 0, res.output
    model = load_model(out)
    assert model.recipe["convert"]["options"]["beta_init"] == 2.0
    assert not any(isinstance(m, LipschitzBatchNorm2d) for m in model.modules())


def test_cli_convert_one_line_errors(tmp_path):
    out = tmp_path / "c.safetensors"
    assert_one_line_error(invoke("convert", "demo", "-o", out), "--input-shape")
    assert_one_line_error(invoke("convert", "demo", "-o", out, "--input-shape", "a,b"), "comma-separated integers")
    assert_one_line_error(invoke("convert", "demo", "-o", out, "--input-shape", "1,28,28", "--kinds", "tanh"),
                          "unknown activation kind")
    assert_one_line_error(invoke("convert", "demo", "-o", out, "--input-shape", "3,32,32"), "failed on an input")
    assert_one_line_error(invoke("convert", "demo", "-o", out, "--data", "demo", "--input-shape", "1,8,8"),
                          "differs from the data")
    assert not out.exists()
    assert invoke("convert", "demo", "-o", out, "--input-shape", "1,28,28").exit_code == 0
    assert_one_line_error(invoke("convert", out, "-o", tmp_path / "again.safetensors", "--input-shape", "1,28,28"),
                          "already LCNN-converted")


def test_functional_relu_bound_to_model_forward_is_converted():
    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 3)

        def forward(self, x):
            return F.relu(self.fc(x.flatten(1)))

    conv, report = convert_model(Tiny(), ConvertOptions(), input_shape=(4,))
    assert [e["from"] for e in report.swapped if e["kind"] == "activation"] == ["relu()"]
    x = torch.randn(2, 4)
    expected = CenteredSoftplus()(conv.fc(x))
    torch.testing.assert_close(conv(x), expected)
