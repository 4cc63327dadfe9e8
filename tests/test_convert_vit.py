"""``convert`` on a ViT: what is swapped, what is recorded as not convertible, and a converted
file that reloads with no user code (issue #18)."""

import json

import torch
import torchvision
from safetensors.torch import save_file
from typer.testing import CliRunner

from lcnn_audit.cli import app
from lcnn_audit.convert import NO_COUNTERPART, convert_model
from lcnn_audit.layers import CenteredSoftplus, spectral_parametrization
from lcnn_audit.loading import load_model

VIT = {"image_size": 16, "patch_size": 8, "num_layers": 1, "num_heads": 2, "hidden_dim": 16, "mlp_dim": 32,
       "num_classes": 10}


def tiny_vit():
    torch.manual_seed(0)
    return torchvision.models.VisionTransformer(**VIT).eval()


def test_vit_conversion_report():
    vit = tiny_vit()
    conv, rep = convert_model(vit, input_shape=(3, 16, 16))
    swapped = {s["name"]: s for s in rep.swapped}
    mlp = "encoder.layers.encoder_layer_0.mlp"
    assert swapped[f"{mlp}.1"]["from"] == "GELU" and isinstance(conv.get_submodule(f"{mlp}.1"), CenteredSoftplus)
    assert {f"{mlp}.0", f"{mlp}.3", "encoder.layers.encoder_layer_0.self_attention.out_proj", "conv_proj"} <= set(
        swapped)
    skipped = {s["name"]: s for s in rep.skipped}
    # torchvision zero-initialises the head: σ = 0, so it is skipped rather than divided by zero
    assert "σ = 0" in skipped["heads.head"]["reason"] and spectral_parametrization(conv.heads.head) is None
    for name in ("encoder.layers.encoder_layer_0.ln_1", "encoder.layers.encoder_layer_0.ln_2", "encoder.ln"):
        assert skipped[name]["reason"] == NO_COUNTERPART[torch.nn.LayerNorm]
    assert "not globally Lipschitz" in skipped["encoder.layers.encoder_layer_0.self_attention"]["reason"]
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.isfinite(conv(x)).all()


def test_vit_convert_reloads_without_user_code_and_audits(tmp_path):
    vit = tiny_vit()
    torch.nn.init.normal_(vit.heads.head.weight)  # as after training: a non-zero head
    save_file(vit.state_dict(), tmp_path / "vit.safetensors")
    torch.save({"x": torch.rand(2, 3, 16, 16), "y": torch.tensor([0, 1])}, tmp_path / "d.pt")
    runner = CliRunner()
    out = tmp_path / "c.safetensors"
    res = runner.invoke(app, ["convert", str(tmp_path / "vit.safetensors"), "--arch",
                              "torchvision.models:VisionTransformer", "--arch-kwargs", json.dumps(VIT),
                              "--data", str(tmp_path / "d.pt"), "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert "LayerNorm" in res.output and "not converted" in res.output
    model = load_model(out)  # the recipe names torchvision's class: no --arch, no user file
    assert model.recipe["arch"] == "torchvision.models:VisionTransformer"
    assert spectral_parametrization(model.net.heads.head) is not None
    js = tmp_path / "r.json"
    res = runner.invoke(app, ["curvature", str(out), "--data", str(tmp_path / "d.pt"), "--max-iter", "5",
                              "--json", str(js)])
    assert res.exit_code == 0, res.output
    summary = json.loads(js.read_text())["summary"]
    assert any("math kernel" in n for n in summary["notices"]) and summary["method"] == "lanczos"


class AuxNet(torch.nn.Module):
    """Like GoogLeNet/Inception: an auxiliary head used only in train mode, functional ReLUs."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.fc = torch.nn.Linear(4 * 64, 10)
        self.aux = torch.nn.Linear(4 * 64, 10)

    def forward(self, x):
        h = torch.nn.functional.relu(self.conv(x))
        out = self.fc(h.flatten(1))
        if self.training:
            return out + self.aux(torch.nn.functional.relu(h - 1).flatten(1))
        return out


def test_converted_model_with_train_only_branch_reloads(tmp_path):
    """The fx trace at conversion (eval) and at rebuild (a fresh model is in train mode) used to
    see different activations: GoogLeNet and Inception-v3 files did not reload."""
    from lcnn_audit.loading import save_model

    net = AuxNet().eval()
    conv, rep = convert_model(net, input_shape=(3, 8, 8))
    assert rep.trace_training is False and rep.recipe["trace_training"] is False
    path = save_model(conv, tmp_path / "c.safetensors", {"arch": "tests.test_convert_vit:AuxNet", "arch_kwargs": {},
                                                         "normalize": None, "convert": rep.recipe})
    loaded = load_model(path, arch="tests.test_convert_vit:AuxNet")  # a user class: named explicitly
    x = torch.rand(2, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(loaded(x), conv.eval()(x))
