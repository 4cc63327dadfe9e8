"""The most-curved-sample pictures: vectors checked against exact Hessians, storage, CLI, report."""

import base64
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import lcnn_audit as la
from lcnn_audit.cli import app
from lcnn_audit.examples import Examples, adversarial_examples, curved_examples, top_curved
from lcnn_audit.geometry.measures import compute_geometry
from tests.conftest import softplus_cnn

PNG = b"\x89PNG\r\n\x1a\n"
SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "check_report_render.py"
runner = CliRunner()
OPTS = la.CurvatureOptions(method="lanczos", max_iter=40, tol=1e-6, fro_probes=0, jacobian="off")


@pytest.fixture
def xy():
    g = torch.Generator().manual_seed(2)
    return torch.rand(6, 1, 6, 6, generator=g), torch.randint(0, 10, (6,), generator=g)


def _exact_hessians(net, x, y):
    from lcnn_audit.geometry.objective import per_sample_objective

    net = net.double()
    out = []
    for xi, yi in zip(x.double(), y, strict=True):
        f = lambda v, yi=yi, s=xi.shape: per_sample_objective(net(v.view(1, *s)), yi.view(1)).sum()  # noqa: E731
        out.append(torch.func.hessian(f)(xi.flatten()).detach())
    return out


def test_top_vector_is_the_exact_top_eigenvector(xy):
    x, y = xy
    net = softplus_cnn(side=6, beta=3.0)
    geo, _ = compute_geometry(net, x, y, torch.arange(6), OPTS, vectors=True)
    for i, H in enumerate(_exact_hessians(softplus_cnn(side=6, beta=3.0), x, y)):
        w, V = torch.linalg.eigh(H)
        j = int(w.abs().argmax())
        u = geo["top_vector"][i].flatten().double()
        assert abs(float(geo["top_eig"][i]) - float(w[j])) <= 1e-4 * abs(float(w[j]))
        assert abs(float(u @ V[:, j])) > 0.999  # the same direction, up to sign


def test_curved_examples_are_the_top_k_and_match_the_audit(xy):
    x, y = xy
    net = softplus_cnn(side=6, beta=3.0)
    res = la.curvature_audit(net, (x, y), OPTS)
    ex = curved_examples(net, (x, y), res, k=3)
    order = sorted(range(6), key=lambda i: -res.per_sample["curvature"][i])[:3]
    assert ex.index == order == top_curved(res, 3)
    assert torch.allclose(torch.tensor(ex.curvature), torch.tensor([res.per_sample["curvature"][i] for i in order]),
                          rtol=1e-4)
    assert torch.equal(ex.images["x"], x[order])
    g = ex.images["gradient"].flatten(1).double()
    u = ex.images["top_vector"].flatten(1).double()
    assert ((g * u).sum(1) >= 0).all()  # sign fixed: <u, grad> >= 0
    assert torch.allclose(u.norm(dim=1), torch.ones(3, dtype=torch.float64), atol=1e-5)
    assert torch.allclose(g.norm(dim=1), torch.tensor(ex.grad_norm, dtype=torch.float64), rtol=1e-5)


def test_round_trip_is_compact_and_downsamples(xy):
    x, _ = xy
    big = torch.rand(2, 3, 128, 96)
    ex = Examples(index=[0, 1], label=[1, 2], pred=[1, 3], curvature=[1.0, 2.0], eigenvalue=[-3.0, 4.0],
                  grad_norm=[0.1, 0.2], images={"x": big, "gradient": big - 0.5, "top_vector": big})
    d = json.loads(json.dumps(ex.to_dict()))
    back = Examples.from_dict(d)
    assert back.images["x"].shape == (2, 3, 64, 64)
    assert torch.allclose(back.images["x"], torch.nn.functional.adaptive_avg_pool2d(big, (64, 64)), atol=1e-3)
    assert back.eigenvalue == [-3.0, 4.0] and back.index == [0, 1]
    small = Examples.from_dict(Examples(index=[0], label=[0], pred=[0], curvature=[0.0], eigenvalue=[0.0],
                                        grad_norm=[0.0], images={"x": x[:1]}).to_dict())
    assert torch.allclose(small.images["x"], x[:1], atol=1e-3)


def test_adversarial_examples_are_within_eps_and_misclassified(xy):
    x, _ = xy
    net = softplus_cnn(side=6, beta=3.0)
    y = net(x).argmax(1)  # every sample correct, so every one can be attacked
    res = la.attack_audit(net, (x, y), la.AttackOptions(attacks=("pgd",), eps=[0.5, 2.0], steps=5))
    broken = sum(1 for c, r in zip(res.per_sample["correct"], res.per_sample["robust_worst_case_l2_2"],
                                   strict=True) if c and not r)
    assert broken >= 2
    ex = adversarial_examples(net, (x, y), res, k=2)
    adv = ex.adversarial
    d = ex.images["perturbation"].flatten(1).norm(dim=1)
    assert torch.allclose(ex.images["x_adv"] - ex.images["x"], ex.images["perturbation"])
    for i in range(len(ex)):
        assert adv["found"][i]
        assert float(d[i]) <= adv["eps"][i] * (1 + 1e-4)
        assert adv["adv_pred"][i] != ex.label[i]
    assert ex.images["x_adv"].min() >= 0 and ex.images["x_adv"].max() <= 1


def test_cli_save_images_and_report(tmp_path):
    out, img = tmp_path / "c.json", tmp_path / "img"
    res = runner.invoke(app, ["curvature", "demo", "--n", "12", "--examples", "3", "--json", str(out),
                              "--save-images", str(img)])
    assert res.exit_code == 0, res.output
    png = img / "curvature_most_curved.png"
    assert png.read_bytes().startswith(PNG)
    ex = json.loads(out.read_text())["summary"]["examples"]
    assert len(ex["index"]) == 3 and set(ex["images"]) == {"x", "gradient", "top_vector"}
    html = tmp_path / "r.html"
    rep = runner.invoke(app, ["report", str(out), "-o", str(html)])
    assert rep.exit_code == 0, rep.output
    text = html.read_text()
    assert "the most curved samples" in text
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert len(images) == 4 and all(base64.b64decode(i).startswith(PNG) for i in images)


def test_save_images_path_is_checked_first(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    res = runner.invoke(app, ["curvature", "demo", "--n", "4", "--save-images", str(f)])
    assert res.exit_code == 2 and "is a file; give a directory" in res.output
    res = runner.invoke(app, ["curvature", "demo", "--n", "4", "--examples", "0", "--save-images", str(tmp_path)])
    assert res.exit_code == 2 and "--save-images needs --examples" in res.output


@pytest.mark.slow
def test_report_with_examples_renders_in_chromium(tmp_path):
    if not shutil.which("chromium") and not shutil.which("chromium-browser"):
        pytest.skip("no chromium")
    c, a = tmp_path / "c.json", tmp_path / "a.json"
    assert runner.invoke(app, ["curvature", "demo", "--n", "16", "--examples", "4", "--json", str(c)]).exit_code == 0
    res = runner.invoke(app, ["attack", "demo", "--n", "16", "--examples", "4", "--json", str(a)])
    assert res.exit_code == 0, res.output
    assert json.loads(a.read_text())["summary"]["examples"]["images"].keys() >= {"x_adv", "perturbation"}
    html, shot = tmp_path / "r.html", tmp_path / "r.png"
    assert runner.invoke(app, ["report", str(c), str(a), "-o", str(html)]).exit_code == 0
    proc = subprocess.run([sys.executable, str(SCRIPT), str(html), "--png", str(shot), "--height", "3500"],
                          capture_output=True, text=True, timeout=240, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout)["ok"]


def test_example_images_survive_the_json_even_beyond_float16_range():
    """A random-weight net's input gradient can exceed float16's 65504: it must not become inf."""
    import math

    from lcnn_audit.examples import Examples

    g = torch.tensor([[[[1e6, -3.0], [2.5e-3, 0.0]]], [[[0.5, 0.25], [0.0, -1.0]]]])
    ex = Examples(index=[0, 1], label=[0, 1], pred=[0, 1], curvature=[1.0, 2.0], eigenvalue=[1.0, 2.0],
                  grad_norm=[1.0, 1.0], images={"grad": g})
    back = Examples.from_dict(ex.to_dict()).images["grad"]
    assert torch.isfinite(back).all()
    assert not math.isinf(float(back.abs().max()))
    peak = g.flatten(1).abs().amax(dim=1).view(-1, 1, 1, 1)  # float16 precision relative to each sample's peak
    assert ((back - g).abs() <= 1e-3 * peak).all()
