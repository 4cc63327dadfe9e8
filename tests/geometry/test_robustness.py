"""Gradient-robustness curves and train-test discrepancy (issue #4) against closed forms."""

import json

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from lcnn_audit import load_data, rng
from lcnn_audit.cli import app
from lcnn_audit.geometry import CurvatureOptions, compute_geometry
from lcnn_audit.geometry.robustness import STREAM_NOISE, GradRobustnessOptions, discrepancy, grad_robustness
from lcnn_audit.geometry.state import measurement_state
from tests.conftest import softplus_cnn
from tests.geometry.test_geometry import Quadratic

RADII = (1e-3, 1e-2, 1e-1)


def tensor_data(tmp_path, x, y, name="d.pt"):
    torch.save({"x": x, "y": y}, tmp_path / name)
    return load_data(str(tmp_path / name))


def test_quadratic_logit_gradient_change_closed_form(tmp_path):
    model = Quadratic().eval()
    x, y = torch.rand(5, 1, 4, 4), torch.tensor([0, 1, 2, 0, 1])
    data = tensor_data(tmp_path, x, y)
    opts = GradRobustnessOptions(radii=RADII, draws=3, curvature=CurvatureOptions(target="logit", jacobian="off"))
    res = grad_robustness(model, data, opts)
    got = torch.tensor(res.per_sample["grad_change"], dtype=torch.float64)
    A, b = model.A.detach().double(), model.b.detach().double()
    for i in range(5):
        Ay = A[y[i]]
        g0 = Ay @ x[i].flatten().double() + b[y[i]]
        for j, r in enumerate(RADII):
            vals = [float((Ay @ (r * rng.per_sample_sphere(0, STREAM_NOISE + m, torch.tensor([i]), (1, 4, 4))
                                 .flatten().double())).norm() / g0.norm()) for m in range(3)]
            assert abs(float(got[i, j]) - sum(vals) / 3) <= 1e-4 * sum(vals) / 3


def test_linear_model_gradient_change_is_exactly_zero(tmp_path):
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval()
    data = tensor_data(tmp_path, torch.rand(6, 1, 8, 8), torch.randint(0, 10, (6,)))
    res = grad_robustness(model, data, GradRobustnessOptions(radii=RADII, adversarial=True, adv_steps=2,
                                                             curvature=CurvatureOptions(target="logit")))
    assert all(v == 0.0 for row in res.per_sample["grad_change"] for v in row)
    assert all(v == 0.0 for row in res.per_sample["grad_change_adv"] for v in row)
    assert all(c["quadratic"] == 0 for c in res.summary["curves"])


def test_softplus_net_obeys_proposition_1_bound(tmp_path):
    """‖∇f(x+ε)−∇f(x)‖/‖∇f(x)‖ <= rδe^(rδ), δ = max C_f over the segment [x, x+ε] (sampled finely)."""
    model = softplus_cnn(8, 3.0)
    x, y = torch.rand(4, 1, 8, 8), torch.randint(0, 10, (4,))
    radii = (0.05, 0.5)
    opts = GradRobustnessOptions(radii=radii, draws=2, curvature=CurvatureOptions(jacobian="off", fro_probes=0))
    res = grad_robustness(model, tensor_data(tmp_path, x, y), opts)
    got = torch.tensor(res.per_sample["grad_change_max"], dtype=torch.float64)
    ts = torch.linspace(0, 1, 11)
    with measurement_state(model) as prep:
        for m in range(2):
            u = rng.per_sample_sphere(0, STREAM_NOISE + m, torch.arange(4), (1, 8, 8))
            for j, r in enumerate(radii):
                pts = torch.cat([x + t * r * u for t in ts])
                idx = torch.arange(4).repeat(len(ts))
                geo, _ = compute_geometry(prep.model, pts, y.repeat(len(ts)), idx,
                                          CurvatureOptions(jacobian="off", fro_probes=0, tol=1e-6, max_iter=64))
                delta = geo["curvature"].view(len(ts), 4).amax(0)
                bound = r * delta * torch.exp(r * delta)
                assert bool((got[:, j] <= bound).all()), (r, got[:, j], bound)


def test_discrepancy_is_zero_on_identical_data(tmp_path):
    model = softplus_cnn(8, 3.0)
    x, y = torch.rand(10, 1, 8, 8), torch.randint(0, 10, (10,))
    data = tensor_data(tmp_path, x, y)
    res = discrepancy(model, data, data, CurvatureOptions(jacobian="off"))
    assert res.summary["delta_tt"] == {"grad_norm": 0.0, "hessian_norm": 0.0, "curvature": 0.0}
    assert res.per_sample["split"] == ["train"] * 10 + ["test"] * 10


def test_discrepancy_formula_on_demo():
    from lcnn_audit import load_model

    model = load_model("demo")
    tr, te = load_data("demo", split="train", n=40), load_data("demo", n=40)
    res = discrepancy(model, tr, te)
    for g in ("grad_norm", "hessian_norm", "curvature"):
        a, b = res.summary["train"][g]["mean"], res.summary["test"][g]["mean"]
        assert res.summary["delta_tt"][g] == abs(b - a) / b
        assert res.summary["delta_tt_train"][g] == abs(b - a) / a


def test_discrepancy_train_form_reproduces_printed_table3_scale(tmp_path):
    """Test gradient norms 10× the train ones (the printed Table 3's "> 10×"): the caption's
    form |te − tr|/te is 0.9 and can never exceed 1; the train form gives 9, the printed scale.
    f = logit of a linear model: ‖∇f‖ = ‖W_y‖ exactly, 1 for label 0 and 10 for label 1."""
    lin = nn.Linear(64, 2, bias=False)
    with torch.no_grad():
        lin.weight.zero_()
        lin.weight[0, 0], lin.weight[1, 1] = 1.0, 10.0
    model = nn.Sequential(nn.Flatten(), lin).eval()
    x = torch.rand(6, 1, 8, 8)
    train = tensor_data(tmp_path, x, torch.zeros(6, dtype=torch.long), name="tr.pt")
    test = tensor_data(tmp_path, x, torch.ones(6, dtype=torch.long), name="te.pt")
    res = discrepancy(model, train, test, CurvatureOptions(target="logit", method="lanczos", jacobian="off"))
    assert res.summary["delta_tt"]["grad_norm"] == pytest.approx(0.9, rel=1e-6)
    assert res.summary["delta_tt_train"]["grad_norm"] == pytest.approx(9.0, rel=1e-6)


def test_cli_grad_robustness_compare_and_plot(tmp_path):
    runner = CliRunner()
    res = runner.invoke(app, ["grad-robustness", "demo", "--compare", "demo", "--n", "6", "--draws", "1",
                              "--radii", "0.01,0.1", "--plot", str(tmp_path / "g.png"), "--json",
                              str(tmp_path / "g.json")])
    assert res.exit_code == 0, res.output
    out = json.loads((tmp_path / "g.json").read_text())
    assert len(out["summary"]["models"]) == 2 and "grad_change@1" in out["per_sample"]
    assert (tmp_path / "g.png").read_bytes()[:4] == b"\x89PNG"
    bad = runner.invoke(app, ["grad-robustness", "demo", "--radii", "0.1,-1"])
    assert bad.exit_code == 2 and "--radii" in bad.output


def test_cli_discrepancy_with_same_tensor_file(tmp_path):
    x = torch.rand(8, 1, 28, 28)
    torch.save({"x": x, "y": torch.randint(0, 10, (8,))}, tmp_path / "d.pt")
    res = CliRunner().invoke(app, ["discrepancy", "demo", "--data", str(tmp_path / "d.pt"), "--train-data",
                                   str(tmp_path / "d.pt"), "--json", str(tmp_path / "o.json")])
    assert res.exit_code == 0, res.output
    out = json.loads((tmp_path / "o.json").read_text())["summary"]
    assert out["delta_tt"]["curvature"] == 0.0 and out["delta_tt_train"]["curvature"] == 0.0
    assert "Δtt /test" in res.output and "Δtt /train" in res.output


def test_maxpool_ties_give_a_floor_and_a_notice(tmp_path):
    """On a constant image every max-pool window ties; noise picks another subgradient, so the
    relative gradient change does not vanish as r -> 0 (and the result says why)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Softplus(2.0), nn.MaxPool2d(2), nn.Flatten(),
                        nn.Linear(4 * 16, 10)).eval()
    data = tensor_data(tmp_path, torch.zeros(4, 1, 8, 8), torch.arange(4))
    opts = GradRobustnessOptions(radii=(1e-5, 1e-3), draws=2, curvature=CurvatureOptions(jacobian="off"))
    res = grad_robustness(net, data, opts)
    assert min(c["mean"] for c in res.summary["curves"]) > 0.05
    assert any("max-pooling" in n for n in res.summary["notices"])
    net[2] = nn.AvgPool2d(2)
    smooth = grad_robustness(net, data, opts)
    assert smooth.summary["curves"][0]["mean"] < 1e-3
    assert not any("max-pooling" in n for n in smooth.summary["notices"])


def test_avgpool_small_cnn_has_no_gradient_floor(tmp_path):
    """SmallCNN(pool="avg") keeps a softplus net twice differentiable (Proposition 1's
    assumption): on the constant image that gives the max-pool floor, the change vanishes."""
    from lcnn_audit.models import SmallCNN

    torch.manual_seed(0)
    x, y = torch.zeros(4, 1, 28, 28), torch.arange(4)
    data = tensor_data(tmp_path, x, y)
    opts = GradRobustnessOptions(radii=(1e-6,), draws=1, curvature=CurvatureOptions(jacobian="off", max_iter=10))
    changes = {}
    for pool in ("max", "avg"):
        torch.manual_seed(0)
        net = SmallCNN(width=4, act="softplus", beta=10.0, pool=pool).eval()
        changes[pool] = grad_robustness(net, data, opts).summary["curves"][0]["mean"]
    assert changes["avg"] < 1e-3 < changes["max"]
