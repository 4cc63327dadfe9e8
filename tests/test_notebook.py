"""The Python API as a notebook uses it: plain tensors, TensorDataset, DataLoader; results as
objects (repr, tensors, pandas, reports); notices as warnings; the one-call benchmark; save_model."""

import logging
import re
import sys
import warnings

import pytest
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

import lcnn_audit as la
from lcnn_audit.errors import CheckpointError, DataError, UsageError
from tests.conftest import relu_cnn, softplus_cnn

FAST = la.CurvatureOptions(method="lanczos", max_iter=6, fro_probes=0, jacobian="off")


@pytest.fixture
def xy():
    g = torch.Generator().manual_seed(1)
    return torch.rand(10, 1, 8, 8, generator=g), torch.randint(0, 10, (10,), generator=g)


class _Pairs(Dataset):
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], int(self.y[i])


def _forms(x, y):
    return {"tuple": (x, y), "list": [x, y], "TensorDataset": TensorDataset(x, y),
            "DataLoader": DataLoader(TensorDataset(x, y), batch_size=3), "Dataset": _Pairs(x, y),
            "ImageData": la.as_image_data((x, y))}


def test_as_image_data_accepts_every_form(xy):
    x, y = xy
    for name, form in _forms(x, y).items():
        d = la.as_image_data(form)
        bx, by = d.tensors()
        assert torch.equal(bx, x) and torch.equal(by, y), name
        assert len(d) == 10 and d.input_shape == (1, 8, 8)


def test_uint8_images_are_scaled_and_bad_data_is_a_data_error(xy):
    x, y = xy
    d = la.as_image_data(((x * 255).round().to(torch.uint8), y))
    assert torch.allclose(d.tensors()[0], x, atol=0.5 / 255 + 1e-6)
    with pytest.raises(DataError, match=r"lie in \[0, 1\].*normalisation inside the model"):
        la.as_image_data(((x - 0.5) / 0.25, y))
    with pytest.raises(DataError, match=r"labels must have shape \(10,\)"):
        la.as_image_data((x, y[:3]))
    with pytest.raises(DataError, match="cannot use dict as data"):
        la.as_image_data({"x": x})
    with pytest.raises(DataError, match="NaN"):
        la.as_image_data((x.clone().fill_(float("nan")), y))


def test_curvature_on_every_form_matches(xy):
    x, y = xy
    net = softplus_cnn()
    ref = la.curvature_audit(net, la.as_image_data((x, y)), FAST, batch_size=4)
    for name, form in _forms(x, y).items():
        res = la.curvature_audit(net, form, FAST, batch_size=4)
        assert res.per_sample["curvature"] == ref.per_sample["curvature"], name


def test_grad_robustness_discrepancy_and_attack_take_tensors(xy):
    x, y = xy
    net = softplus_cnn()
    g = la.grad_robustness(net, TensorDataset(x, y), la.GradRobustnessOptions(radii=(0.01,), draws=1,
                                                                              curvature=FAST))
    assert len(g) == 10
    d = la.discrepancy(net, (x[:5], y[:5]), DataLoader(TensorDataset(x[5:], y[5:]), batch_size=2), FAST)
    assert d.summary["n_train"] == 5 and d.summary["n_test"] == 5
    a = la.attack_audit(net, DataLoader(TensorDataset(x, y), batch_size=4),
                        la.AttackOptions(attacks=("fgsm",), eps=[0.1], masking_checks=False))
    assert a.summary["n"] == 10


def test_reprs_are_short(xy):
    x, y = xy
    d = la.as_image_data((x, y))
    res = la.curvature_audit(softplus_cnn(), d, FAST)
    assert len(repr(d)) < 200 and "n=10" in repr(d)
    assert len(repr(res)) < 300 and repr(res).startswith("AuditResult(command='curvature', n=10")
    assert len(repr(la.load_data("demo", n=8))) < 200


def test_tensor_access_and_pandas(xy, monkeypatch):
    x, y = xy
    res = la.curvature_audit(softplus_cnn(), (x, y), la.CurvatureOptions(method="lanczos", max_iter=6, profile=2,
                                                                          fro_probes=0, jacobian="off"))
    c = res["curvature"]
    assert c.shape == (10,) and c.dtype == torch.float64 and c.tolist() == res.per_sample["curvature"]
    assert res.tensor("converged").dtype == torch.bool and res.tensor("label").dtype == torch.int64
    assert res.tensor("hessian_eigs").shape == (10, 2)
    with pytest.raises(UsageError, match="no per-sample field 'nope'"):
        res.tensor("nope")
    monkeypatch.setitem(sys.modules, "pandas", None)  # as if pandas were not installed
    with pytest.raises(UsageError, match="pip install pandas"):
        res.to_pandas()


def test_to_pandas_when_installed(xy):
    pd = pytest.importorskip("pandas")
    x, y = xy
    res = la.curvature_audit(softplus_cnn(), (x, y), FAST)
    df = res.to_pandas()
    assert isinstance(df, pd.DataFrame) and len(df) == 10
    assert df["curvature"].tolist() == res.per_sample["curvature"]


def test_notices_are_warnings_and_log_records(xy, caplog):
    x, y = xy
    with caplog.at_level(logging.INFO, logger="lcnn_audit"), pytest.warns(la.LcnnAuditNotice, match="uses ReLU"):
        res = la.curvature_audit(relu_cnn(), (x, y), FAST)
    assert any("uses ReLU" in r.getMessage() for r in caplog.records)
    assert any("uses ReLU" in n for n in res.summary["notices"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no notice for a smooth model
        la.curvature_audit(softplus_cnn(), (x, y), FAST)


def test_cli_renders_notices_once_and_no_python_warning():
    from typer.testing import CliRunner

    from lcnn_audit.cli import app

    res = CliRunner().invoke(app, ["curvature", "demo", "--n", "4", "--method", "lanczos", "--max-iter", "4",
                                   "--fro-probes", "0", "--jacobian", "off"])
    assert res.exit_code == 0, res.output
    assert res.output.count("note: the model uses ReLU") == 1
    assert "LcnnAuditNotice" not in res.output and "warnings.warn" not in res.output


def test_robustness_benchmark_matches_the_attack_audit(xy):
    x, y = xy
    net = softplus_cnn()
    clean, robust, result = la.robustness_benchmark(net, (x, y), threat_model="L2", eps=0.5, attacks=("pgd",),
                                                    steps=3, return_result=True)
    s = result.summary
    wc = next(e for e in s["results"] if e["attack"] == "worst_case")
    assert (clean, robust) == (s["clean_accuracy"], wc["robust_accuracy"])
    assert clean == int((net(x).argmax(1) == y).sum()) / 10
    assert 0.0 <= robust <= clean
    assert la.robustness_benchmark(net, TensorDataset(x, y), "Linf", 8 / 255, attacks="fgsm")[0] == clean
    with pytest.raises(UsageError, match="threat_model 'corruptions'"):
        la.robustness_benchmark(net, (x, y), threat_model="corruptions")


def test_write_report_takes_result_objects(xy, tmp_path):
    x, y = xy
    a = la.curvature_audit(softplus_cnn(), (x, y), FAST)
    b = la.curvature_audit(relu_cnn(), (x, y), FAST)
    out = la.write_report([a, b], tmp_path / "r.html", labels=["smooth", "relu"], plots=False)
    text = out.read_text()
    assert '<td class="l">smooth</td>' in text  # the inputs table
    marks = re.search(r'<td class="l">relu \[([0-9, ]+)\]</td>', text).group(1).split(", ")
    relu_notes = [re.search(rf"<li>\[{k}\] relu: ([^<]*)</li>", text).group(1) for k in marks]
    assert any("uses ReLU" in n for n in relu_notes)  # the notice sits beside the ReLU model's numbers
    out2 = la.write_report([a], tmp_path / "r.md", plots=False)
    assert "| model 1 |" in out2.read_text()
    with pytest.raises(UsageError, match="cannot report a int"):
        la.write_report([3], tmp_path / "x.html")


def test_save_model_for_a_plain_module(tmp_path, xy):
    from lcnn_audit.models import SmallCNN

    torch.manual_seed(3)
    net = SmallCNN(in_channels=1, num_classes=10, width=4, input_size=8).eval()
    kw = {"in_channels": 1, "num_classes": 10, "width": 4, "input_size": 8}
    path = la.save_model(net, tmp_path / "m.safetensors", arch="small_cnn", arch_kwargs=kw, normalize="0.5,0.25")
    back = la.load_model(path)
    x, _ = xy
    assert torch.allclose(back(x), net((x - 0.5) / 0.25), atol=1e-6)
    assert back.recipe["arch"] == "small_cnn" and back.recipe["normalize"] == [[0.5], [0.25]]
    with pytest.raises(UsageError, match="pass arch="):
        la.save_model(net, tmp_path / "n.safetensors")
    with pytest.raises(CheckpointError, match="do not fit"):
        la.save_model(net, tmp_path / "n.safetensors", arch="small_cnn", arch_kwargs={**kw, "width": 8})
    assert not (tmp_path / "n.safetensors").exists()
    again = la.save_model(back, tmp_path / "again.safetensors")  # a loaded model carries its recipe
    assert torch.allclose(la.load_model(again)(x), back(x))


def test_results_carry_schema_and_library_versions(xy, tmp_path):
    from lcnn_audit.results import SCHEMA_VERSION, AuditResult

    x, y = xy
    res = la.curvature_audit(softplus_cnn(), (x, y), FAST)
    d = res.to_dict()
    assert list(d)[:3] == ["command", "schema_version", "lcnn_audit_version"]
    assert d["schema_version"] == SCHEMA_VERSION and d["lcnn_audit_version"] == la.__version__
    assert AuditResult.from_dict(d).per_sample == res.per_sample
    with pytest.raises(UsageError, match="schema_version 99, written by a newer lcnn-audit"):
        AuditResult.from_dict({**d, "schema_version": 99})


@pytest.mark.slow
def test_readme_notebook_snippet_runs(tmp_path, monkeypatch):
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme[readme.index("### From Python (a notebook)"):]
    code = section[section.index("```python") + len("```python"):section.index("```", section.index("```python") + 9)]
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)  # noqa: S102 - our own README
    assert 0 <= scope["robust"] <= scope["clean"] <= 1
    assert (tmp_path / "report.html").is_file() and (tmp_path / "net.safetensors").is_file()
    assert torch.equal(la.load_model(tmp_path / "net.safetensors", normalize="0.286,0.353")(scope["x"][:4]),
                       scope["model"](scope["x"][:4]))
