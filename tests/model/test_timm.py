"""``--arch timm:NAME``: offline timm architectures (skipped cleanly without timm)."""

import sys

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

import lcnn_audit as la
from lcnn_audit.cli import app
from lcnn_audit.errors import ArchitectureError
from lcnn_audit.loading import build_arch
from lcnn_audit.timm_arch import is_timm, resolve_timm

runner = CliRunner()


def test_timm_missing_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)
    with pytest.raises(ArchitectureError, match="needs the optional timm package: pip install timm"):
        build_arch("timm:resnet18")
    assert is_timm("timm:resnet18") and is_timm("hf-hub:timm/resnet18.a1_in1k") and not is_timm("resnet18")


def test_timm_architecture_builds_offline_and_round_trips(tmp_path):
    timm = pytest.importorskip("timm")
    kw = {"num_classes": 10, "in_chans": 1}
    net = build_arch("timm:resnet18", kw).eval()
    assert isinstance(net, timm.models.ResNet) and net.fc.out_features == 10 and net.conv1.in_channels == 1
    path = la.save_model(net, tmp_path / "r.safetensors", arch="timm:resnet18", arch_kwargs=kw)
    back = la.load_model(path)
    x = torch.rand(2, 1, 32, 32)
    assert torch.allclose(back(x), net(x), atol=1e-5)
    assert back.recipe["arch"] == "timm:resnet18"


def test_timm_cli_info_and_unknown_name(tmp_path):
    pytest.importorskip("timm")
    net = build_arch("timm:resnet18", {"num_classes": 10, "in_chans": 1}).eval()
    save_file(net.state_dict(), tmp_path / "w.safetensors")
    res = runner.invoke(app, ["info", str(tmp_path / "w.safetensors"), "--arch", "timm:resnet18",
                              "--arch-kwargs", "num_classes=10,in_chans=1", "--data", "demo"])
    assert res.exit_code == 0, res.output
    assert "arch timm:resnet18" in res.output and "10 classes" in res.output
    bad = runner.invoke(app, ["info", str(tmp_path / "w.safetensors"), "--arch", "timm:resnet19"])
    assert bad.exit_code == 2 and "unknown timm architecture 'resnet19'; did you mean" in bad.output
    with pytest.raises(ArchitectureError, match="needs a model name"):
        resolve_timm("timm:")
