"""The torchvision zoo through the CLI (scripts/model_zoo.py): every family has a representative
with an expected outcome per command, one small model runs every command here, and the slow
test runs one model per family (issue #18)."""

import importlib.util
import sys
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[1] / "scripts" / "model_zoo.py"
_spec = importlib.util.spec_from_file_location("model_zoo", _PATH)
zoo = sys.modules.setdefault("model_zoo", importlib.util.module_from_spec(_spec))
_spec.loader.exec_module(zoo)


def test_family_of():
    cases = {"resnet18": "resnet", "vgg11_bn": "vgg", "wide_resnet50_2": "wide_resnet", "regnet_y_400mf": "regnet",
             "mobilenet_v3_small": "mobilenet_v3", "mobilenet_v2": "mobilenet_v2", "swin_v2_t": "swin_v2",
             "efficientnet_b0": "efficientnet", "efficientnet_v2_s": "efficientnet_v2", "vit_b_16": "vit",
             "squeezenet1_1": "squeezenet", "mnasnet0_5": "mnasnet", "shufflenet_v2_x0_5": "shufflenet_v2",
             "inception_v3": "inception_v3", "resnext50_32x4d": "resnext", "maxvit_t": "maxvit"}
    assert {k: zoo.family_of(k) for k in cases} == cases


def test_every_family_has_a_representative():
    """Fails when torchvision gains a family (or renames a representative) until the table has it."""
    fams = zoo.families()
    assert sorted(set(fams) - set(zoo.REPRESENTATIVES)) == [], "add the new family to REPRESENTATIVES"
    for fam, rep in zoo.REPRESENTATIVES.items():
        assert fam in fams, f"{fam} is no longer a torchvision family"
        assert rep.name in fams[fam], f"{rep.name} is not a {fam} model"
        assert set(rep.expected) <= set(zoo.COMMANDS)


def _check(fam, tmp_path):
    res = zoo.run_family(fam, tmp_path, quick=True)
    bad = {c: res[c]["outcome"] for c in zoo.COMMANDS
           if not zoo.matches(res[c]["outcome"], zoo.REPRESENTATIVES[fam].expected.get(c, "pass"))}
    assert not bad, f"{fam}: {bad}"


def test_zoo_one_small_model(tmp_path):
    _check("mobilenet_v3", tmp_path)  # hardswish/hardsigmoid, SE, ReLU; every command


@pytest.mark.slow
@pytest.mark.parametrize("fam", sorted(f for f, r in zoo.REPRESENTATIVES.items() if not r.heavy))
def test_zoo_family(fam, tmp_path):
    """One model per family at its smallest input, quick settings (~4 min on 2 shared cores). The
    ``heavy`` families (≥ 50 s each: MaxViT at 224×224, ViT-B, Swin, Swin V2, VGG11-BN, Wide
    ResNet) run in ``python scripts/model_zoo.py`` (docs/models.md); small ViTs run through the
    CLI in tests/test_convert_vit.py and tests/geometry/test_differentiable.py."""
    _check(fam, tmp_path)


def test_safetensors_without_module_versions_load_into_mnasnet(tmp_path):
    """safetensors keep no ``_metadata``; MNASNet's loader raised "version should be set to 1 or 2"."""
    import torch
    import torchvision
    from safetensors.torch import save_file

    from lcnn_audit.loading import load_model

    net = torchvision.models.mnasnet0_5(num_classes=10).eval()
    save_file(net.state_dict(), tmp_path / "m.safetensors")
    model = load_model(tmp_path / "m.safetensors", arch="mnasnet0_5", arch_kwargs={"num_classes": 10})
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), net(x))
