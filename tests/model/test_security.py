"""No input file runs code unless the user opts in (docs/security.md).

A safetensors file's embedded recipe is untrusted metadata: a recipe naming ``module:callable``
or ``file.py:factory`` must be refused, before anything is imported, by every command that
loads a model, and also by a gate policy that names the checkpoint.
"""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from lcnn_audit import load_model
from lcnn_audit.cli import app
from lcnn_audit.errors import CheckpointError
from lcnn_audit.loading import RECIPE_KEY
from tests.model.test_loading import ARCH, user_net

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def payloads(marker: Path) -> dict[str, dict]:
    """Recipes whose architecture, if imported and called with its kwargs, creates ``marker``."""
    return {
        "os-system": {"arch": "os:system", "arch_kwargs": {"command": f"touch {marker}"}},
        "subprocess-run": {"arch": "subprocess:run", "arch_kwargs": {"args": ["touch", str(marker)]}},
        "builtins-open": {"arch": "builtins:open", "arch_kwargs": {"file": str(marker), "mode": "w"}},
    }


def evil_checkpoint(tmp_path: Path, recipe: dict, name: str = "evil.safetensors") -> Path:
    path = tmp_path / name
    save_file({"w": torch.zeros(1)}, path, metadata={RECIPE_KEY: json.dumps(recipe)})
    return path


@pytest.fixture
def data_file(tmp_path):
    torch.save({"x": torch.rand(4, 1, 28, 28), "y": torch.randint(0, 10, (4,))}, tmp_path / "d.pt")
    return tmp_path / "d.pt"


def _policy(tmp_path, ck, data):
    pol = tmp_path / "policy.yaml"
    pol.write_text(f"model: {{checkpoint: '{ck}', device: cpu}}\ndata: {{path: '{data}'}}\n"
                   "audits:\n  curvature: {max_iter: 3, fro_probes: 0, jacobian: 'off'}\n"
                   "checks:\n  - {name: c, metric: curvature.curvature.mean, max: 1000}\n")
    return pol


COMMANDS = {
    "info": lambda ck, d, t: ["info", ck, "--data", d],
    "curvature": lambda ck, d, t: ["curvature", ck, "--data", d, "--max-iter", "3"],
    "attack": lambda ck, d, t: ["attack", ck, "--data", d],
    "grad-robustness": lambda ck, d, t: ["grad-robustness", "demo", "--compare", ck, "--data", d],
    "discrepancy": lambda ck, d, t: ["discrepancy", ck, "--data", d, "--train-data", d],
    "convert": lambda ck, d, t: ["convert", ck, "-o", t / "out.safetensors"],
    "bound": lambda ck, d, t: ["bound", ck],
    "finetune": lambda ck, d, t: ["finetune", ck, "--data", d, "--test-data", d, "-o", t / "ft.safetensors"],
    "gate": lambda ck, d, t: ["gate", _policy(t, ck, d)],
}


@pytest.mark.parametrize("payload", ["os-system", "subprocess-run", "builtins-open"])
@pytest.mark.parametrize("command", list(COMMANDS))
def test_recipe_naming_code_runs_nothing_in_any_command(tmp_path, data_file, command, payload):
    marker = tmp_path / "PWNED"
    ck = evil_checkpoint(tmp_path, payloads(marker)[payload])
    res = invoke(*COMMANDS[command](ck, data_file, tmp_path))
    assert not marker.exists(), f"{command} ran the recipe's {payload}"
    assert res.exit_code == 2, res.output
    text = " ".join(res.output.split())
    assert "error:" in text and "--arch" in text and "--trust-checkpoint" in text, res.output
    assert "Traceback" not in res.output
    assert not (tmp_path / "out.safetensors").exists() and not (tmp_path / "ft.safetensors").exists()


def test_recipe_refusal_imports_nothing(tmp_path, monkeypatch):
    """The decision is made from the string: the named module is never imported."""
    import importlib
    import sys

    imported = []
    real = importlib.import_module
    monkeypatch.setattr(importlib, "import_module", lambda name, *a: imported.append(name) or real(name, *a))
    fake = "lcnn_audit_no_such_module_xyz"
    ck = evil_checkpoint(tmp_path, {"arch": f"{fake}:factory"})
    with pytest.raises(CheckpointError, match="was not imported"):
        load_model(ck)
    file_ck = evil_checkpoint(tmp_path, {"arch": f"{tmp_path / 'evil.py'}:factory"}, "f.safetensors")
    (tmp_path / "evil.py").write_text(f"open({str(tmp_path / 'RAN')!r}, 'w')\ndef factory():\n    pass\n")
    with pytest.raises(CheckpointError, match="pass --arch"):
        load_model(file_ck)
    assert fake not in imported and fake not in sys.modules and not (tmp_path / "RAN").exists()


def test_explicit_arch_or_trust_loads_a_user_factory_recipe(tmp_path):
    """--arch on the command line (or --trust-checkpoint) is the user's opt-in; the recipe's
    kwargs and normalisation still apply when --arch repeats the recipe's arch."""
    _, net = user_net(num_classes=5)
    from lcnn_audit.loading import save_model

    save_model(net, tmp_path / "u.safetensors", {"arch": ARCH, "arch_kwargs": {"num_classes": 5},
                                                  "normalize": [[0.5], [0.25]]})
    x = torch.rand(2, 1, 8, 8)
    ref = net.eval()((x - 0.5) / 0.25)
    for kw in ({"arch": ARCH}, {"trust_checkpoint": True}):
        with torch.no_grad():
            assert torch.allclose(load_model(tmp_path / "u.safetensors", **kw)(x), ref, atol=1e-6), kw


def test_builtin_and_torchvision_recipes_load_without_opt_in(tmp_path):
    from lcnn_audit.loading import save_model
    from lcnn_audit.models import MLP

    mlp = MLP(hidden=8, depth=1)
    save_model(mlp, tmp_path / "m.safetensors", {"arch": "mlp", "arch_kwargs": {"hidden": 8, "depth": 1}})
    assert load_model(tmp_path / "m.safetensors")(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    import torchvision

    rn = torchvision.models.get_model("resnet18", num_classes=3)
    save_model(rn, tmp_path / "r.safetensors", {"arch": "resnet18", "arch_kwargs": {"num_classes": 3}})
    assert load_model(tmp_path / "r.safetensors")(torch.rand(1, 3, 32, 32)).shape == (1, 3)


def test_torchscript_needs_trust_because_its_code_can_write_files(tmp_path):
    """TorchScript is not a sandbox: aten::from_file(shared=True) creates and writes files."""
    marker = tmp_path / "made_by_torchscript"

    class Writer(torch.nn.Module):
        def __init__(self, target: str):
            super().__init__()
            self.target = target

        def forward(self, x):
            t = torch.from_file(self.target, True, 4, dtype=torch.uint8)
            t.fill_(88)
            return x.flatten(1)[:, :2] + t.sum()

    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(Writer(str(marker))), tmp_path / "ts.pt")
    res = invoke("info", tmp_path / "ts.pt", "--data", "demo", "--n", "2")
    assert res.exit_code == 2 and "--trust-checkpoint" in res.output and not marker.exists(), res.output
    # the danger is real: with trust, running the model writes the file
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = load_model(tmp_path / "ts.pt", trust_checkpoint=True)
    model(torch.rand(1, 1, 28, 28))
    assert marker.exists()


class _Payload:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_data_files_never_unpickle(tmp_path):
    """.pt data is read with weights_only=True and .npz with allow_pickle=False."""
    import numpy as np

    from lcnn_audit import load_data
    from lcnn_audit.errors import DataError

    marker = tmp_path / "PWNED"
    torch.save({"x": torch.rand(2, 1, 8, 8), "y": torch.zeros(2, dtype=torch.long), "p": _Payload(str(marker))},
               tmp_path / "d.pt")
    np.savez(tmp_path / "d.npz", x=np.zeros((2, 1, 8, 8), np.float32), y=np.array([_Payload(str(marker))] * 2))
    for name in ("d.pt", "d.npz"):
        with pytest.raises(DataError, match="cannot read tensor file"):
            load_data(str(tmp_path / name))
        res = invoke("info", "demo", "--data", tmp_path / name)
        assert res.exit_code == 2 and "error:" in res.output
    assert not marker.exists()


def test_image_decompression_bomb_is_refused(tmp_path):
    from PIL import Image

    from lcnn_audit import load_data
    from lcnn_audit.errors import DataError

    (tmp_path / "imgs" / "test" / "c0").mkdir(parents=True)
    Image.new("L", (8, 8)).save(tmp_path / "imgs" / "test" / "c0" / "ok.png")
    Image.new("1", (20000, 20000)).save(tmp_path / "imgs" / "test" / "c0" / "bomb.png")  # a few kB, 4e8 pixels
    with pytest.raises(DataError, match="bomb.png"):
        load_data(str(tmp_path / "imgs"))


def test_convert_output_of_a_user_factory_says_it_needs_arch(tmp_path):
    """convert/finetune outputs of a user architecture carry its name; reloading needs --arch."""
    _, net = user_net()
    save_file(net.state_dict(), tmp_path / "w.safetensors")
    out = tmp_path / "lcnn.safetensors"
    res = invoke("convert", tmp_path / "w.safetensors", "--arch", ARCH, "--input-shape", "1,8,8", "-o", out)
    assert res.exit_code == 0, res.output
    assert "load it with --arch" in " ".join(res.output.split())
    res = invoke("bound", out)
    assert res.exit_code == 2 and "pass --arch" in " ".join(res.output.split()), res.output
    res = invoke("bound", out, "--arch", ARCH)
    assert res.exit_code == 0, res.output


def _code_policy(tmp_path, model_block: str):
    pol = tmp_path / "code_policy.yaml"
    pol.write_text(f"model: {model_block}\ndata: {{name: demo}}\n"
                   "audits:\n  curvature: {max_iter: 3, fro_probes: 0, jacobian: 'off'}\n"
                   "checks:\n  - {name: c, metric: curvature.curvature.mean, max: 1000}\n")
    return pol


@pytest.mark.parametrize("model_block", [
    "{checkpoint: demo, arch: 'os:system', arch_kwargs: {command: 'touch PWNED'}}",
    "{checkpoint: demo, arch: 'evil.py:build'}",
    "{checkpoint: demo, trust_checkpoint: true}",
])
def test_policy_naming_code_needs_trust_policy(tmp_path, monkeypatch, model_block):
    """A policy file is untrusted input: code in model.arch, or trust_checkpoint, needs --trust-policy."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "evil.py").write_text("import pathlib\npathlib.Path('PWNED').touch()\ndef build():\n    pass\n")
    res = invoke("gate", _code_policy(tmp_path, model_block))
    assert res.exit_code == 2, res.output
    assert "--trust-policy" in res.output
    assert "line 1" in res.output
    assert not (tmp_path / "PWNED").exists()


def test_trust_policy_allows_a_reviewed_factory(tmp_path):
    from lcnn_audit.gates import load_policy

    (tmp_path / "mine.py").write_text("def build():\n    pass\n")
    pol = _code_policy(tmp_path, "{checkpoint: demo, arch: 'mine.py:build'}")
    assert load_policy(pol, trust=True).model.arch == f"{tmp_path / 'mine.py'}:build"


def test_recipe_may_name_a_timm_registry_name_but_not_an_hf_hub_id():
    from lcnn_audit.recipe import check_recipe_arch

    check_recipe_arch("timm:resnet18", "ck", trust_checkpoint=False)  # a registry name: nothing to run
    for arch in ("timm:hf-hub:org/repo", "os:system"):
        with pytest.raises(CheckpointError, match="not imported"):
            check_recipe_arch(arch, "ck", trust_checkpoint=False)


def test_recipe_may_name_a_torchvision_model_class_but_no_other_torchvision_callable():
    from lcnn_audit.recipe import check_recipe_arch

    check_recipe_arch("torchvision.models:VisionTransformer", "ck", trust_checkpoint=False)
    for arch in ("torchvision.models:load_state_dict_from_url", "torchvision.models:get_weight",
                 "torchvision.io:write_file", "torchvision.models.vision_transformer:VisionTransformer"):
        with pytest.raises(CheckpointError, match="not imported"):
            check_recipe_arch(arch, "ck", trust_checkpoint=False)
