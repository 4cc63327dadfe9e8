"""The CLI: every loading and data form, and one-line errors with exit code 2 for bad input."""

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from lcnn_audit.cli import app
from tests.model.test_loading import ARCH, _Evil, user_net

runner = CliRunner()
FAST = ["--method", "lanczos", "--max-iter", "5", "--fro-probes", "0", "--jacobian", "off"]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def assert_one_line_error(res, match: str, code: int = 2):
    assert res.exit_code == code, res.output
    assert "Traceback" not in res.output and res.exception is None or isinstance(res.exception, SystemExit)
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    text = " ".join(lines)
    assert "error:" in text and match in text, res.output


@pytest.fixture
def small(tmp_path):
    _, net = user_net()
    x, y = torch.rand(6, 1, 8, 8), torch.randint(0, 10, (6,))
    torch.save({"x": x, "y": y}, tmp_path / "data.pt")
    return net, tmp_path


def test_help_lists_commands():
    res = invoke("--help")
    assert res.exit_code == 0
    for cmd in ("curvature", "demo", "info"):
        assert cmd in res.output


@pytest.mark.parametrize("form", ["safetensors", "pth-nested", "torchscript", "export", "pickle-trusted"])
def test_each_loading_form(small, form):
    net, tmp = small
    net.eval()
    extra = ["--arch", ARCH]
    if form == "safetensors":
        path = tmp / "w.safetensors"
        save_file(net.state_dict(), path)
    elif form == "pth-nested":
        path = tmp / "w.pth"
        torch.save({"model_state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}}, path)
    elif form == "torchscript":
        path = tmp / "ts.pt"
        torch.jit.save(torch.jit.script(net), path)
        extra = ["--trust-checkpoint"]  # TorchScript code can read and write files
    elif form == "export":
        path = tmp / "m.pt2"
        batch = torch.export.Dim("batch", min=1, max=1024)
        torch.export.save(torch.export.export(net, (torch.rand(2, 1, 8, 8),), dynamic_shapes=({0: batch},)), path)
        extra = ["--trust-checkpoint"]  # torch.export.load unpickles with weights_only=False
    else:
        import sys

        mod = sys.modules.setdefault("um", __import__("tests.model.test_loading", fromlist=["x"]).user_net()[0])
        path = tmp / "whole.pt"
        torch.save(mod.make_net(), path)
        extra = ["--trust-checkpoint"]
    res = invoke("curvature", path, *extra, "--data", tmp / "data.pt", "--json", tmp / "out.json", *FAST)
    assert res.exit_code == 0, res.output
    out = json.loads((tmp / "out.json").read_text())
    assert set(out) >= {"command", "lcnn_audit_version", "config", "summary", "per_sample", "timing", "environment"}
    assert out["per_sample"]["index"] == list(range(6)) and len(out["per_sample"]["label"]) == 6
    assert out["environment"]["torch"] == torch.__version__ and "torchvision" in out["environment"]


@pytest.mark.parametrize("form", ["demo", "npz", "imagefolder", "fashion-mnist"])
def test_each_data_form(tmp_path, form):
    from tests.test_data import write_idx

    args = ["--data", "demo"]
    if form == "npz":
        x = (np.random.rand(5, 1, 28, 28)).astype(np.float32)
        np.savez(tmp_path / "d.npz", x=x, y=np.arange(5))
        args = ["--data", tmp_path / "d.npz"]
    elif form == "imagefolder":
        from PIL import Image

        for c in range(2):
            (tmp_path / "f" / f"c{c}").mkdir(parents=True)
            for i in range(2):
                Image.fromarray(np.random.randint(0, 256, (28, 28), dtype=np.uint8)).save(
                    tmp_path / "f" / f"c{c}" / f"{i}.png")
        args = ["--data", tmp_path / "f", "--single-split"]
    elif form == "fashion-mnist":
        write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", np.random.randint(0, 256, (4, 28, 28)))
        write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.arange(4))
        args = ["--data", "fashion-mnist", "--data-root", tmp_path]
    res = invoke("curvature", "demo", *args, "--n", "4", "--csv", tmp_path / "o.csv", *FAST)
    assert res.exit_code == 0, res.output
    rows = (tmp_path / "o.csv").read_text().splitlines()
    assert rows[0].startswith("index,label") and len(rows) == 5


def test_bad_inputs_exit_2_one_line(tmp_path, small):
    net, tmp = small
    (tmp / "junk.pt").write_bytes(b"garbage")
    bad_keys = {k: v for k, v in net.state_dict().items() if k != "fc.bias"}
    torch.save(bad_keys, tmp / "bad.pt")
    torch.save({"x": torch.rand(3, 8, 8), "y": torch.zeros(3)}, tmp / "shape.pt")
    torch.save({"x": torch.rand(3, 1, 8, 8) * 3, "y": torch.zeros(3, dtype=torch.long)}, tmp / "range.pt")
    torch.save({"x": torch.rand(3, 1, 8, 8), "y": torch.tensor([1, 2, 99])}, tmp / "labels.pt")
    buf = io.BytesIO()
    torch.save({"payload": _Evil(str(tmp / "pwned"))}, buf)
    (tmp / "evil.pt").write_bytes(buf.getvalue())
    save_file(net.state_dict(), tmp / "w.safetensors")
    cases = [
        (["curvature", tmp / "missing.pt", "--arch", ARCH, "--data", tmp / "data.pt"], "not found"),
        (["curvature", tmp / "junk.pt", "--arch", ARCH, "--data", tmp / "data.pt"], "corrupt or truncated"),
        (["curvature", tmp / "bad.pt", "--arch", ARCH, "--data", tmp / "data.pt"], "missing key"),
        (["curvature", tmp / "w.safetensors", "--arch", "resnet1800", "--data", tmp / "data.pt"],
         "unknown architecture"),
        (["curvature", "demo", "--data", "cifar1000"], "unknown dataset"),
        (["curvature", tmp / "w.safetensors", "--arch", ARCH, "--data", tmp / "shape.pt"], "(N, C, H, W)"),
        (["curvature", tmp / "w.safetensors", "--arch", ARCH, "--data", tmp / "range.pt"], "[0, 1]"),
        (["curvature", tmp / "w.safetensors", "--arch", ARCH, "--data", tmp / "labels.pt"], "labels out of range"),
        (["curvature", "demo", "--n", "100000"], "larger than"),
        (["curvature", tmp / "evil.pt", "--arch", ARCH, "--data", tmp / "data.pt"], "--trust-checkpoint"),
        (["curvature", "demo", "--method", "magic"], "unknown --method"),
        (["curvature", "demo", "--resume"], "--resume needs --json"),
        (["curvature"], "no checkpoint given"),
        (["curvature", "demo", "--device", "cuda:7"], "--device"),
    ]
    for args, match in cases:
        assert_one_line_error(invoke(*args), match)
    assert not (tmp / "pwned").exists()


def test_demo_command_writes_results(tmp_path):
    res = invoke("demo", "--out", tmp_path / "demo", "--n", "32")
    assert res.exit_code == 0, res.output
    out = json.loads((tmp_path / "demo" / "curvature.json").read_text())
    assert out["summary"]["method"] == "gauss-newton" and out["summary"]["n"] == 32
    assert str(tmp_path / "demo") in res.output.replace("\n", "")


def test_json_is_written_atomically(tmp_path, monkeypatch):
    """A failure while writing leaves no partial file, and an existing file untouched."""
    from lcnn_audit import io as lio

    (tmp_path / "r.json").write_text("previous")
    monkeypatch.setattr(lio.Path, "write_text", lambda *a, **k: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(lio.OutputError, match="disk full; the previous file is unchanged"):
        lio.write_text(tmp_path / "r.json", "new")
    assert (tmp_path / "r.json").read_text() == "previous"
    assert [p.name for p in Path(tmp_path).iterdir()] == ["r.json"]


def test_info_command():
    res = invoke("info", "demo", "--data", "demo")
    assert res.exit_code == 0 and "10 classes" in res.output and "1000 samples" in res.output


def test_torchvision_and_module_factory_arch_forms(tmp_path):
    import torchvision

    from lcnn_audit.models import MLP

    net = torchvision.models.get_model("resnet18", num_classes=3)
    torch.save({"state_dict": net.state_dict()}, tmp_path / "r.pth")
    torch.save({"x": torch.rand(2, 3, 32, 32), "y": torch.tensor([0, 2])}, tmp_path / "rgb.pt")
    res = invoke("curvature", tmp_path / "r.pth", "--arch", "resnet18", "--arch-kwargs", "num_classes=3",
                 "--data", tmp_path / "rgb.pt", "--normalize", "cifar10", *FAST)
    assert res.exit_code == 0, res.output
    save_file(MLP(hidden=8, depth=1).state_dict(), tmp_path / "m.safetensors")
    res = invoke("curvature", tmp_path / "m.safetensors", "--arch", "lcnn_audit.models:MLP", "--arch-kwargs",
                 '{"hidden": 8, "depth": 1}', "--data", "demo", "--n", "3", *FAST)
    assert res.exit_code == 0, res.output
