"""Every checkpoint form loads; every bad checkpoint gives a one-line error."""

import io
import pickle
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from lcnn_audit import load_model
from lcnn_audit.errors import ArchitectureError, CheckpointError, ModelError, UsageError
from lcnn_audit.loading import check_model_data, parse_kwargs, parse_normalize, save_model

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
ARCH = f"{FIXTURES / 'user_model.py'}:make_net"


def user_net(**kw):
    import importlib.util

    spec = importlib.util.spec_from_file_location("um", FIXTURES / "user_model.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod, mod.make_net(**kw)


X = torch.rand(3, 1, 8, 8)


def same_outputs(model, ref):
    with torch.no_grad():
        return torch.allclose(model(X), ref(X), atol=1e-6)


def test_safetensors_with_arch_file(tmp_path):
    _, net = user_net()
    save_file(net.state_dict(), tmp_path / "w.safetensors")
    model = load_model(tmp_path / "w.safetensors", arch=ARCH)
    assert not model.training and same_outputs(model, net.eval())


def test_pt_nested_and_prefixed_state_dicts(tmp_path):
    _, net = user_net()
    sd = net.state_dict()
    for key in ("state_dict", "model", "net", "model_state_dict", "state_dict_ema"):
        wrapped = {key: {f"module._orig_mod.{k}": v for k, v in sd.items()}, "epoch": 3, "optimizer": {"lr": 0.1}}
        torch.save(wrapped, tmp_path / f"{key}.pth")
        assert same_outputs(load_model(tmp_path / f"{key}.pth", arch=ARCH), net.eval()), key


def test_lightning_style_common_prefix(tmp_path):
    _, net = user_net()
    torch.save({"state_dict": {f"model.{k}": v for k, v in net.state_dict().items()}}, tmp_path / "l.ckpt")
    assert same_outputs(load_model(tmp_path / "l.ckpt", arch=ARCH), net.eval())


def test_torchvision_arch_with_kwargs(tmp_path):
    import torchvision

    net = torchvision.models.get_model("resnet18", num_classes=7)
    torch.save(net.state_dict(), tmp_path / "r.pt")
    model = load_model(tmp_path / "r.pt", arch="resnet18", arch_kwargs="num_classes=7")
    with torch.no_grad():
        assert model(torch.rand(1, 3, 32, 32)).shape == (1, 7)


def test_package_module_factory(tmp_path):
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
    from lcnn_audit.models import MLP

    mlp = MLP(hidden=8, depth=1)
    save_file(mlp.state_dict(), tmp_path / "m.safetensors")
    model = load_model(tmp_path / "m.safetensors", arch="lcnn_audit.models:MLP", arch_kwargs={"hidden": 8, "depth": 1})
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    assert net is not None


def test_torchscript_and_export_need_no_arch(tmp_path):
    _, net = user_net()
    net.eval()
    torch.jit.save(torch.jit.trace(net, X), tmp_path / "ts.pt")
    with pytest.raises(CheckpointError, match="--trust-checkpoint"):  # TorchScript code can write files
        load_model(tmp_path / "ts.pt")
    assert same_outputs(load_model(tmp_path / "ts.pt", trust_checkpoint=True), net)
    prog = torch.export.export(net, (X,))
    torch.export.save(prog, tmp_path / "m.pt2")
    with pytest.raises(CheckpointError, match="--trust-checkpoint"):  # torch.export.load unpickles
        load_model(tmp_path / "m.pt2")
    model = load_model(tmp_path / "m.pt2", trust_checkpoint=True)
    assert same_outputs(model, net)
    with pytest.raises(UsageError, match="drop --arch"):
        load_model(tmp_path / "ts.pt", arch=ARCH, trust_checkpoint=True)


def test_whole_module_pickle_needs_trust(tmp_path):
    import sys

    mod, net = user_net()
    sys.modules[mod.__name__] = mod
    torch.save(net, tmp_path / "whole.pt")
    with pytest.raises(CheckpointError, match="--trust-checkpoint"):
        load_model(tmp_path / "whole.pt")
    model = load_model(tmp_path / "whole.pt", trust_checkpoint=True)
    assert same_outputs(model, net.eval())


class _Evil:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_malicious_pickle_refused_and_creates_no_file(tmp_path):
    target = tmp_path / "pwned.txt"
    buf = io.BytesIO()
    torch.save({"state_dict": {"w": torch.zeros(1)}, "payload": _Evil(str(target))}, buf)
    (tmp_path / "evil.pt").write_bytes(buf.getvalue())
    with pytest.raises(CheckpointError, match="--trust-checkpoint"):
        load_model(tmp_path / "evil.pt", arch=ARCH)
    assert not target.exists()
    # a raw (non-zip) pickle too
    (tmp_path / "evil2.pkl").write_bytes(pickle.dumps(_Evil(str(target))))
    with pytest.raises(CheckpointError):
        load_model(tmp_path / "evil2.pkl", arch=ARCH)
    assert not target.exists()


def test_missing_corrupt_truncated(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_model(tmp_path / "nope.pt", arch=ARCH)
    (tmp_path / "junk.pt").write_bytes(b"this is not a checkpoint at all")
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_model(tmp_path / "junk.pt", arch=ARCH)
    _, net = user_net()
    torch.save(net.state_dict(), tmp_path / "full.pt")
    data = (tmp_path / "full.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_model(tmp_path / "cut.pt", arch=ARCH)
    save_file(net.state_dict(), tmp_path / "w.safetensors")
    raw = (tmp_path / "w.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(raw[:-100])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_model(tmp_path / "cut.safetensors", arch=ARCH)
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        load_model(tmp_path / "empty.pt", arch=ARCH)


def test_key_and_shape_mismatch_report(tmp_path):
    _, net = user_net(num_classes=5)
    sd = net.state_dict()
    sd["extra.weight"] = torch.zeros(2)
    del sd["conv.bias"]
    torch.save(sd, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError) as err:
        load_model(tmp_path / "bad.pt", arch=ARCH)
    msg = str(err.value)
    assert "1 missing key(s): conv.bias" in msg and "1 unexpected key(s): extra.weight" in msg
    assert "fc.weight (5, 256) vs model (10, 256)" in msg and "\n" not in msg


def test_unknown_architecture_suggests():
    with pytest.raises(ArchitectureError, match="resnet18"):
        load_model("demo", arch="resnet81")
    with pytest.raises(ArchitectureError, match="not found"):
        load_model("demo", arch="missing.py:f")
    with pytest.raises(ArchitectureError, match="has no attribute"):
        load_model("demo", arch="lcnn_audit.models:NoSuchNet")


def test_weights_without_arch_are_refused(tmp_path):
    _, net = user_net()
    save_file(net.state_dict(), tmp_path / "w.safetensors")
    with pytest.raises(CheckpointError, match="--arch"):
        load_model(tmp_path / "w.safetensors")


def test_recipe_roundtrip_and_normalisation(tmp_path):
    _, net = user_net()
    save_model(net, tmp_path / "r.safetensors", {"arch": ARCH, "arch_kwargs": {}, "normalize": [[0.5], [0.25]]})
    with pytest.raises(CheckpointError, match="pass --arch"):  # a recipe naming a file factory is not imported
        load_model(tmp_path / "r.safetensors")
    model = load_model(tmp_path / "r.safetensors", arch=ARCH)  # --arch vouches for it; normalisation kept
    with torch.no_grad():
        assert torch.allclose(model(X), net.eval()((X - 0.5) / 0.25), atol=1e-6)
    plain = load_model(tmp_path / "r.safetensors", arch=ARCH, normalize="none")
    assert same_outputs(plain, net)
    assert parse_normalize("cifar10")[0] == [0.4914, 0.4822, 0.4465]
    assert parse_normalize("0.1,0.2,0.3,0.4") == [[0.1, 0.2], [0.3, 0.4]]
    with pytest.raises(UsageError):
        parse_normalize("1,2,3")
    with pytest.raises(UsageError):
        parse_normalize("dataset")


def test_output_key_for_tuple_and_dict_models(tmp_path):
    mod, _ = user_net()
    for cls, key in (("TupleNet", "0"), ("DictNet", "logits")):
        net = getattr(mod, cls)()
        save_file(net.state_dict(), tmp_path / f"{cls}.safetensors")
        arch = f"{FIXTURES / 'user_model.py'}:{cls}"
        bare = load_model(tmp_path / f"{cls}.safetensors", arch=arch)
        with pytest.raises(ModelError, match="--output-key"):
            check_model_data(bare, X)
        keyed = load_model(tmp_path / f"{cls}.safetensors", arch=arch, output_key=key)
        assert check_model_data(keyed, X) == 10


def test_labels_out_of_range_and_kwargs_parsing():
    model = load_model("demo")
    from lcnn_audit.errors import DataError

    with pytest.raises(DataError, match="labels out of range"):
        check_model_data(model, torch.rand(2, 1, 28, 28), torch.tensor([3, 12]))
    assert parse_kwargs("num_classes=100,act=relu,sizes=[1,2],flag=true") == {
        "num_classes": 100, "act": "relu", "sizes": [1, 2], "flag": True}
    with pytest.raises(UsageError):
        parse_kwargs("oops")


def test_demo_model_is_eval_and_accurate():
    from lcnn_audit import load_data

    model = load_model("demo")
    assert not model.training
    x, y = load_data("demo", n=200).tensors()
    with torch.no_grad():
        acc = (model(x).argmax(1) == y).float().mean()
    assert acc > 0.85


def test_zip_detection_does_not_misfire(tmp_path):
    with zipfile.ZipFile(tmp_path / "a.zip", "w") as z:
        z.writestr("hello.txt", "hi")
    with pytest.raises(CheckpointError):
        load_model(tmp_path / "a.zip", arch=ARCH)


def test_prefix_stripping_keeps_a_submodule_called_module():
    from lcnn_audit.loading import _strip

    assert _strip("module._orig_mod.conv.weight") == "conv.weight"
    assert _strip("backbone._orig_mod.fc.bias") == "backbone.fc.bias"
    assert _strip("encoder.module.weight") == "encoder.module.weight"  # a user submodule named "module"
