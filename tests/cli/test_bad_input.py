"""Bad inputs give one ``error:`` line and exit code 2 (or a documented flag), never a traceback
and never a silent wrong number."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from lcnn_audit import load_data, load_model
from lcnn_audit.cli import app
from lcnn_audit.errors import ArchitectureError, CheckpointError, DataError, UsageError
from lcnn_audit.loading import RECIPE_KEY
from lcnn_audit.models import MLP

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def one_line_error(res, match: str, code: int = 2) -> str:
    assert res.exit_code == code, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    assert "Traceback" not in res.output
    text = " ".join(res.output.split())
    assert "error:" in text and match in text, res.output
    return text


# --------------------------------------------------------------------------- embedded recipes

GOOD = {"arch": "mlp", "arch_kwargs": {"hidden": 8, "depth": 1}}
CONVERT = {"version": 1, "options": {"activations": False}, "activations": [], "batchnorm": [], "conv": {},
           "linear": []}


def recipe_checkpoint(tmp_path: Path, recipe=None, raw: str | None = None) -> Path:
    torch.manual_seed(0)
    sd = {k: v.contiguous() for k, v in MLP(hidden=8, depth=1).state_dict().items()}
    path = tmp_path / "r.safetensors"
    save_file(sd, path, metadata={RECIPE_KEY: raw if raw is not None else json.dumps(recipe)})
    return path


BAD_RECIPES = {
    "list": ([GOOD], "is a JSON list, not an object"),
    "int-arch": ({"arch": 3}, "'arch' must be a non-empty string"),
    "empty-arch": ({"arch": ""}, "'arch' must be a non-empty string"),
    "list-kwargs": ({"arch": "mlp", "arch_kwargs": [8, 1]}, "'arch_kwargs' must be an object"),
    "normalize-flat": ({**GOOD, "normalize": [0.5, 0.25]}, "'normalize' must be a pair of non-empty lists"),
    "normalize-lengths": ({**GOOD, "normalize": [[0.5, 0.5], [0.25]]}, "2 means but 1 stds"),
    "normalize-text": ({**GOOD, "normalize": [[0.5], ["x"]]}, "must be finite numbers"),
    "std-zero": ({**GOOD, "normalize": [[0.5], [0.0]]}, "standard deviations must be positive"),
    "std-negative": ({**GOOD, "normalize": [[0.5], [-1]]}, "standard deviations must be positive"),
    "normalize-name": ({**GOOD, "normalize": "imagenet-ish"}, "'normalize' 'imagenet-ish'"),
    "convert-list": ({**GOOD, "convert": [1]}, "'convert' must be an object"),
    "convert-version": ({**GOOD, "convert": {**CONVERT, "version": "x"}}, "recipe version 'x'"),
    "convert-names": ({**GOOD, "convert": {**CONVERT, "linear": "1"}}, "'convert.linear' must be a list"),
    "convert-shapes": ({**GOOD, "convert": {**CONVERT, "conv": {"1": "28x28"}}}, "'convert.conv' must map"),
    "convert-options": ({**GOOD, "convert": {**CONVERT, "options": [1]}}, "'convert.options' must be an object"),
    "convert-beta": ({**GOOD, "convert": {**CONVERT, "options": {"beta_init": "big"}}},
                     "'convert.options.beta_init' must be a positive finite number"),
    "convert-flag": ({**GOOD, "convert": {**CONVERT, "options": {"use_fx": "yes"}}},
                     "'convert.options.use_fx' must be true or false"),
    "convert-kinds": ({**GOOD, "convert": {**CONVERT, "options": {"activation_kinds": "relu"}}},
                      "'convert.options.activation_kinds' must be a list"),
    "convert-misfit-bn": ({**GOOD, "convert": {**CONVERT, "batchnorm": ["1"]}},
                          "recorded batch norm '1' is a Linear"),
    "convert-misfit-missing": ({**GOOD, "convert": {**CONVERT, "linear": ["nope"]}}, "at module 'nope'"),
    "convert-misfit-conv": ({**GOOD, "convert": {**CONVERT, "conv": {"1": [784]}}},
                            "is not a convolution of that input"),
}


@pytest.mark.parametrize("case", list(BAD_RECIPES))
def test_malformed_recipe_is_one_clear_error(tmp_path, case):
    recipe, match = BAD_RECIPES[case]
    path = recipe_checkpoint(tmp_path, recipe)
    with pytest.raises(CheckpointError, match=match.replace("(", r"\(")) as err:
        load_model(path)
    assert "\n" not in str(err.value)
    if "misfit" not in case:
        assert "changed since conversion" not in str(err.value)
    res = invoke("info", path, "--data", "demo", "--n", "2")
    one_line_error(res, match)


def test_non_json_recipe_metadata(tmp_path):
    path = recipe_checkpoint(tmp_path, raw="{not json")
    one_line_error(invoke("info", path, "--data", "demo", "--n", "2"), "corrupt lcnn_audit.recipe metadata")
    deep = recipe_checkpoint(tmp_path, raw="[" * 100_000 + "]" * 100_000)
    with pytest.raises(CheckpointError, match="not JSON"):
        load_model(deep)


def test_options_override_the_broken_recipe_fields_they_replace(tmp_path):
    """The errors say "pass --arch / --normalize to override it": that works."""
    x = torch.rand(1, 1, 28, 28)
    path = recipe_checkpoint(tmp_path, {"arch": 3, "arch_kwargs": [1], "normalize": [[0.5], [0.25]]})
    with pytest.raises(CheckpointError, match="pass --arch"):
        load_model(path)
    assert load_model(path, arch="mlp", arch_kwargs={"hidden": 8, "depth": 1})(x).shape == (1, 10)
    path = recipe_checkpoint(tmp_path, {**GOOD, "normalize": [[0.5], [0.0]]})
    with pytest.raises(CheckpointError, match="pass --normalize"):
        load_model(path)
    assert load_model(path, normalize="none")(x).shape == (1, 10)
    path = recipe_checkpoint(tmp_path, {**GOOD, "convert": [1]})
    with pytest.raises(CheckpointError, match="re-convert"):
        load_model(path, arch="mlp", arch_kwargs={"hidden": 8, "depth": 1})  # a conversion cannot be overridden


# --------------------------------------------------------------------------- factories and state keys


def test_factory_raising_anything_becomes_architecture_error(tmp_path):
    (tmp_path / "f.py").write_text("def bad_key(**kw):\n    return {}['missing']\n"
                                   "def bad_runtime():\n    raise RuntimeError('CUDA kaboom\\nsecond line')\n"
                                   "def bad_import():\n    import no_such_module_xyz\n")
    for name, kind in (("bad_key", "KeyError"), ("bad_runtime", "RuntimeError"), ("bad_import", "ModuleNotFoundError")):
        with pytest.raises(ArchitectureError, match=f"factory of --arch .*{name} raised {kind}") as err:
            load_model("demo", arch=f"{tmp_path / 'f.py'}:{name}")
        assert "\n" not in str(err.value) and err.value.__cause__ is not None  # chained, not swallowed
    res = invoke("info", "demo", "--arch", f"{tmp_path / 'f.py'}:bad_runtime", "--data", "demo", "--n", "2")
    one_line_error(res, "raised RuntimeError: CUDA kaboom")
    # a recipe's built-in factory with hostile kwargs: a KeyError inside MLP
    path = recipe_checkpoint(tmp_path, {"arch": "mlp", "arch_kwargs": {"act": "nope"}})
    one_line_error(invoke("info", path, "--data", "demo", "--n", "2"), "factory of --arch mlp raised KeyError")


def test_module_import_raising_non_import_error(tmp_path, monkeypatch):
    (tmp_path / "broken_pkg_xyz.py").write_text("raise ValueError('bad module')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ArchitectureError, match="importing module 'broken_pkg_xyz'.*ValueError: bad module"):
        load_model("demo", arch="broken_pkg_xyz:f")


def test_state_key_selecting_a_tensor(tmp_path):
    torch.save({"w": torch.zeros(2), "state_dict": MLP(hidden=8, depth=1).state_dict()}, tmp_path / "c.pt")
    res = invoke("info", tmp_path / "c.pt", "--arch", "mlp", "--arch-kwargs", "hidden=8,depth=1", "--state-key", "w",
                 "--data", "demo", "--n", "2")
    one_line_error(res, "--state-key 'w' selects a Tensor")


# --------------------------------------------------------------------------- data files and seeds


def test_empty_and_zero_byte_data_files(tmp_path):
    torch.save({"x": torch.zeros(0, 1, 28, 28), "y": torch.zeros(0, dtype=torch.long)}, tmp_path / "e.pt")
    np.savez(tmp_path / "e.npz", x=np.zeros((0, 1, 28, 28), np.float32), y=np.zeros(0, np.int64))
    (tmp_path / "z.pt").write_bytes(b"")
    (tmp_path / "z.npz").write_bytes(b"")
    for name, match in (("e.pt", "holds no samples"), ("e.npz", "holds no samples"), ("z.pt", "is empty (0 bytes)"),
                        ("z.npz", "is empty (0 bytes)")):
        with pytest.raises(DataError, match=match.replace("(", r"\(").replace(")", r"\)")):
            load_data(str(tmp_path / name))
        one_line_error(invoke("curvature", "demo", "--data", tmp_path / name), match)


@pytest.mark.parametrize("seed", [10**30, -(10**30), 2**63])
def test_enormous_seed(seed):
    res = invoke("curvature", "demo", "--n", "3", "--seed", seed, "--max-iter", "3")
    one_line_error(res, "--seed must be an integer between")
    with pytest.raises(UsageError, match="--seed"):
        load_data("demo", n=3, seed=seed)
    assert len(load_data("demo", n=3, seed=2**63 - 1)) == 3


# --------------------------------------------------------------------------- non-finite models


NAN_MODELS = '''
import torch
from torch import nn


class Half(nn.Module):
    """NaN logits for images darker than 0.5 on average."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        return self.fc(x.flatten(1)) * torch.sqrt(x.flatten(1).mean(1, keepdim=True) - 0.5)


class _NaNCurvature(torch.autograd.Function):
    """Identity whose gradient is finite but whose second derivative is NaN."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        return _NaNBackward.apply(g)


class _NaNBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, g):
        return g.clone()

    @staticmethod
    def backward(ctx, gg):
        return gg * float("nan")


class NaNHessian(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        return self.fc(torch.tanh(_NaNCurvature.apply(x.flatten(1))))


def half():
    return Half()


def nan_hessian():
    return NaNHessian()
'''


@pytest.fixture
def nan_setup(tmp_path):
    (tmp_path / "nan_models.py").write_text(NAN_MODELS)
    torch.manual_seed(0)
    save_file({"fc.weight": torch.randn(10, 64) * 0.1, "fc.bias": torch.zeros(10)}, tmp_path / "fc.safetensors")
    x = torch.cat([torch.full((3, 1, 8, 8), 0.9), torch.full((3, 1, 8, 8), 0.1)])  # samples 3-5 give NaN in Half
    torch.save({"x": x, "y": torch.arange(6) % 10}, tmp_path / "d.pt")
    return tmp_path


def test_nan_logits_are_an_error_not_accuracy_zero(tmp_path):
    """Before: attack printed clean accuracy 0, robust accuracy 0 and "gradient-masking checks
    passed"; curvature died in eigh with LinAlgError."""
    sd = {k: v.contiguous() for k, v in MLP(hidden=8, depth=1).state_dict().items()}
    sd["3.weight"] = sd["3.weight"] * float("nan")
    path = tmp_path / "nan.safetensors"
    save_file(sd, path, metadata={RECIPE_KEY: json.dumps(GOOD)})
    for cmd in (["attack", path, "--n", "4", "--attack", "pgd", "--steps", "2"],
                ["curvature", path, "--n", "4", "--max-iter", "3", "--method", "lanczos"],
                ["grad-robustness", path, "--n", "2", "--draws", "1"], ["info", path, "--n", "2"]):
        text = one_line_error(invoke(*cmd), "logits are NaN or infinite")
        assert "clean accuracy" not in text and "checks passed" not in text
    one_line_error(invoke("bound", path, "--input-shape", "1,28,28"), "weights hold NaN or infinite values (3.weight)")


def test_nan_logits_for_some_samples_name_them(nan_setup):
    t = nan_setup
    arch = f"{t / 'nan_models.py'}:half"
    for cmd in (["attack", "--attack", "pgd", "--steps", "2", "--batch-size", "3"],
                ["curvature", "--max-iter", "3", "--method", "lanczos", "--batch-size", "3"]):
        res = invoke(cmd[0], t / "fc.safetensors", "--arch", arch, "--data", t / "d.pt", *cmd[1:])
        one_line_error(res, "logits are NaN or infinite for 3 of 3 sample(s) (sample index 3, 4, 5)")


def test_nan_hessian_is_a_clear_error_not_linalg_error(nan_setup):
    t = nan_setup
    arch = f"{t / 'nan_models.py'}:nan_hessian"
    for method in ("lanczos", "power"):
        res = invoke("curvature", t / "fc.safetensors", "--arch", arch, "--data", t / "d.pt", "--method", method,
                     "--max-iter", "3", "--iters", "3")
        one_line_error(res, "Hessian-vector products are NaN or infinite for 6 sample(s)")


# --------------------------------------------------------------------------- batch coupling


def _bn_net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.Softplus(5),
                               torch.nn.Flatten(), torch.nn.Linear(4 * 64, 10))


@pytest.fixture
def train_mode_export(tmp_path):
    import warnings

    net = _bn_net().train()
    batch = torch.export.Dim("batch", min=1, max=1024)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prog = torch.export.export(net, (torch.rand(4, 1, 8, 8),), dynamic_shapes=({0: batch},))
    torch.export.save(prog, tmp_path / "train.pt2")
    torch.save({"x": torch.rand(8, 1, 8, 8), "y": torch.randint(0, 10, (8,))}, tmp_path / "d.pt")
    return tmp_path


@pytest.mark.slow
def test_train_mode_export_is_refused_for_per_sample_audits(train_mode_export):
    """Before: curvature's numbers changed with --batch-size (9.5x seen) with no notice."""
    t = train_mode_export
    common = [t / "train.pt2", "--trust-checkpoint", "--data", t / "d.pt"]
    for cmd in (["curvature", *common, "--max-iter", "3"], ["attack", *common, "--attack", "pgd", "--steps", "1"],
                ["grad-robustness", *common, "--draws", "1", "--radii", "0.1"],
                ["discrepancy", *common, "--train-data", t / "d.pt"]):
        one_line_error(invoke(*cmd), "the model couples the samples of a batch")
    res = invoke("info", *common)
    assert res.exit_code == 0 and "couples the samples" in " ".join(res.output.split()), res.output


class _Stubborn(torch.nn.Module):
    """A model that refuses eval mode (as torch.export modules do), with a real BatchNorm inside."""

    def __init__(self):
        super().__init__()
        self.body = _bn_net()

    def train(self, mode: bool = True):
        if not mode:
            raise NotImplementedError("this model cannot leave train mode")
        return super().train(mode)

    def forward(self, x):
        return self.body(x)


def test_model_refusing_eval_gets_no_false_notice_and_is_refused():
    from lcnn_audit.errors import ModelError
    from lcnn_audit.geometry import CurvatureOptions, curvature_audit
    from lcnn_audit.loading import AuditModel

    model = AuditModel(_Stubborn().train())
    data = load_data("demo", n=2)
    data.x = torch.rand(20, 1, 8, 8)  # 8x8 inputs for the small net
    data.y = torch.randint(0, 10, (20,))
    data.indices = torch.arange(4)
    with pytest.raises(ModelError, match="couples the samples") as err:
        curvature_audit(model, data, CurvatureOptions(max_iter=3, fro_probes=0, jacobian="off"), batch_size=2)
    assert "Typical cause: BatchNorm in train mode" in str(err.value)
    from lcnn_audit.geometry.state import measurement_state

    with measurement_state(model) as prep:
        assert not any("switched" in n for n in prep.notices), prep.notices  # before: "switched ... eval mode"
        assert model.net.body[1].training  # untouched: it refused


def test_plain_train_mode_batchnorm_is_switched_and_said():
    from lcnn_audit.geometry import CurvatureOptions, curvature_audit
    from lcnn_audit.loading import AuditModel

    model = AuditModel(_bn_net()).train()
    data = load_data("demo", n=2)
    data.x, data.y, data.indices = torch.rand(20, 1, 8, 8), torch.randint(0, 10, (20,)), torch.arange(4)
    res = curvature_audit(model, data, CurvatureOptions(max_iter=3, fro_probes=0, jacobian="off"), batch_size=2)
    assert any("switched them to eval mode" in n for n in res.summary["notices"])
    assert model.training  # restored afterwards


def test_random_model_gets_a_notice_not_a_coupling_error():
    from lcnn_audit.geometry import CurvatureOptions, curvature_audit
    from lcnn_audit.independence import check_batch_independence
    from lcnn_audit.loading import AuditModel

    class Noisy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(64, 10)

        def forward(self, x):
            return self.fc(torch.tanh(x.flatten(1) + 0.1 * torch.randn_like(x.flatten(1))))

    model = AuditModel(Noisy())
    assert "random" in check_batch_independence(model, torch.rand(2, 1, 8, 8))
    data = load_data("demo", n=2)
    data.x, data.y, data.indices = torch.rand(20, 1, 8, 8), torch.randint(0, 10, (20,)), torch.arange(4)
    res = curvature_audit(model, data, CurvatureOptions(max_iter=3, fro_probes=0, jacobian="off"), batch_size=2)
    assert any("it is random" in n for n in res.summary["notices"])


def test_independence_check_is_exact_for_eval_models_and_single_samples():
    from lcnn_audit.independence import check_batch_independence

    net = _bn_net().eval()
    assert check_batch_independence(net, torch.rand(1, 1, 8, 8)) is None  # one sample: a second is made
    assert check_batch_independence(net, torch.rand(5, 1, 8, 8)) is None
    from lcnn_audit.errors import ModelError

    with pytest.raises(ModelError, match="couples"):
        check_batch_independence(net.train(), torch.rand(1, 1, 8, 8))


def test_corrupt_export_program_prints_no_logged_traceback(tmp_path, capfd):
    """torch.export.load logs a whole traceback (logger torch.export) before it raises."""
    (tmp_path / "junk.pt2").write_bytes(b"not a zip archive at all")
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_model(tmp_path / "junk.pt2", trust_checkpoint=True)
    captured = capfd.readouterr()
    assert "Traceback" not in captured.err + captured.out
    import logging

    assert not logging.getLogger("torch.export").disabled  # restored


# --------------------------------------------------------------------------- ImageFolder


def _images(root: Path, sizes=((8, 8),) * 4, mode="L"):
    from PIL import Image

    for i, size in enumerate(sizes):
        d = root / f"c{i % 2}"
        d.mkdir(parents=True, exist_ok=True)
        Image.new(mode, size, color=40 * i).save(d / f"{i}.png")


def test_flat_image_folder_needs_single_split_and_split_folders_are_used(tmp_path):
    _images(tmp_path / "flat")
    one_line_error(invoke("curvature", "demo", "--data", tmp_path / "flat"), "pass --single-split")
    d = load_data(str(tmp_path / "flat"), single_split=True)
    assert len(d) == 4 and d.source == str(tmp_path / "flat")
    _images(tmp_path / "split" / "train", sizes=((8, 8),) * 6)
    _images(tmp_path / "split" / "val")
    tr, te = load_data(str(tmp_path / "split"), "train"), load_data(str(tmp_path / "split"), "test")
    assert (len(tr), len(te)) == (6, 4)
    assert tr.source.endswith("train") and te.source.endswith("val")  # the result says which folder each read
    with pytest.raises(DataError, match="subfolders .they would become classes"):
        load_data(str(tmp_path / "split"), single_split=True)
    _images(tmp_path / "only_train" / "train")
    with pytest.raises(DataError, match="has train/ but no test/ or val/"):
        load_data(str(tmp_path / "only_train"), "test")


def test_discrepancy_and_finetune_refuse_one_source_for_both_splits(tmp_path):
    """Before: a flat folder (or one tensor file) served as both splits: discrepancy reported
    0/0/0 and finetune measured test accuracy on its training images."""
    torch.save({"x": torch.rand(4, 1, 28, 28), "y": torch.arange(4)}, tmp_path / "d.pt")
    _images(tmp_path / "flat", sizes=((28, 28),) * 4)
    for data in (["--data", tmp_path / "d.pt"], ["--data", tmp_path / "flat", "--single-split"]):
        one_line_error(invoke("discrepancy", "demo", *data), "has no separate train and test splits")
        one_line_error(invoke("finetune", "demo", *data, "--epochs", "0", "-o", tmp_path / "o.safetensors"),
                       "test accuracy would be measured on the training images")
    assert not (tmp_path / "o.safetensors").exists()
    res = invoke("discrepancy", "demo", "--n", "2", "--train-data", tmp_path / "d.pt")
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    assert "train split:" in text and "test split: bundled Fashion-MNIST sample (2 samples)" in text, text


def test_image_folder_unreadable_or_mixed_images_are_found_up_front(tmp_path):
    _images(tmp_path / "bad" / "test")
    (tmp_path / "bad" / "test" / "c1" / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError, match="cannot read image .*broken.png"):
        load_data(str(tmp_path / "bad"))
    _images(tmp_path / "mixed" / "test", sizes=((8, 8), (8, 8), (9, 8), (8, 8)))
    with pytest.raises(DataError, match=r"differ in size: .*0.png is 8x8 with 1 channel\(s\), .*2.png is 9x8"):
        load_data(str(tmp_path / "mixed"))
    res = invoke("curvature", "demo", "--data", tmp_path / "mixed")
    one_line_error(res, "differ in size")
    assert len(load_data(str(tmp_path / "mixed"), image_size=(8, 8))) == 4  # resizing makes them fit
    _images(tmp_path / "modes" / "test", sizes=((8, 8),) * 2)
    _images(tmp_path / "modes2", sizes=((8, 8),) * 3, mode="RGB")
    (tmp_path / "modes2" / "c0" / "0.png").rename(tmp_path / "modes" / "test" / "c0" / "rgb.png")
    with pytest.raises(DataError, match="with 3"):
        load_data(str(tmp_path / "modes"))


def test_image_truncated_after_its_header_names_the_file(tmp_path):
    from PIL import Image

    _images(tmp_path / "t" / "test", sizes=((64, 64),) * 2)
    big = tmp_path / "t" / "test" / "c0" / "big.png"
    Image.effect_noise((64, 64), 50).save(big)
    big.write_bytes(big.read_bytes()[:200])  # the header is intact, the pixel data is cut
    data = load_data(str(tmp_path / "t"))
    with pytest.raises(DataError, match="cannot decode image .*big.png"):
        data.tensors()


def test_gate_policy_flat_folder_needs_single_split_and_a_train_path(tmp_path):
    _images(tmp_path / "flat", sizes=((28, 28),) * 4)
    base = ("model: {checkpoint: demo, device: cpu}\ndata: {path: flat%s}\naudits:\n"
            "  curvature: {max_iter: 3, fro_probes: 0, jacobian: 'off'}\n%s"
            "checks:\n  - {name: c, metric: curvature.curvature.mean, max: 1000}\n")
    pol = tmp_path / "p.yaml"
    pol.write_text(base % ("", ""))
    one_line_error(invoke("gate", pol), "single_split: true in a gate policy")
    pol.write_text(base % (", single_split: true", "  discrepancy: {curvature: {max_iter: 3, fro_probes: 0}}\n"))
    one_line_error(invoke("gate", pol), "set audits.discrepancy.train_path")
    pol.write_text(base % (", single_split: true", ""))
    res = invoke("gate", pol)
    assert res.exit_code == 0, res.output


def test_gradients_non_finite_only_off_the_data_are_errors_too(tmp_path):
    """NaN only away from the clean inputs: at CURE's finite-difference step, or under noise."""
    (tmp_path / "m.py").write_text(
        "import torch\nfrom torch import nn\n"
        "class M(nn.Module):\n"
        "    def __init__(self):\n        super().__init__()\n        self.fc = nn.Linear(64, 10)\n"
        "    def forward(self, x):\n"
        "        z = x.flatten(1)\n"
        "        far = (z - 0.5).abs().amax(1, keepdim=True) > 0.45\n"
        "        nan = torch.full_like(z[:, :10], float('nan'))\n"
        "        return self.fc(torch.tanh(z)) + torch.where(far, nan, 0 * z[:, :10])\n"
        "def make():\n    return M()\n")
    torch.manual_seed(0)
    save_file({"fc.weight": torch.randn(10, 64) * 0.1, "fc.bias": torch.zeros(10)}, tmp_path / "w.safetensors")
    torch.save({"x": torch.full((2, 1, 8, 8), 0.5), "y": torch.zeros(2, dtype=torch.long)}, tmp_path / "d.pt")
    common = [tmp_path / "w.safetensors", "--arch", f"{tmp_path / 'm.py'}:make", "--data", tmp_path / "d.pt"]
    one_line_error(invoke("curvature", *common, "--fd-h", "5", "--max-iter", "3"),
                   "at the finite-difference step h=5.0 are NaN or infinite")
    one_line_error(invoke("grad-robustness", *common, "--radii", "0.01,10", "--draws", "1"),
                   "under the noise are NaN or infinite")
