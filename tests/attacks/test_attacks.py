"""Attacks and the attack audit: closed forms, projections, protocol, flags, AutoAttack adapter."""

import math
import sys
import types

import pytest
import torch
from torch import nn

from lcnn_audit.attacks import (
    ATTACKS,
    FGSM,
    PGD,
    AttackOptions,
    AutoAttack,
    CarliniWagnerL2,
    DeepFool,
    attack_audit,
    clopper_pearson,
)
from lcnn_audit.attacks import autoattack as aa_mod
from lcnn_audit.attacks.base import flat_norm, norm_tolerance, project, project_ball, recheck
from lcnn_audit.attacks.flags import compute_flags
from lcnn_audit.attacks.options import parse_eps
from lcnn_audit.data import ImageData, load_data
from lcnn_audit.errors import CheckFailedError, UsageError
from lcnn_audit.loading import load_model
from lcnn_audit.results import AuditResult

# --------------------------------------------------------------------------- fixtures



class LinearBinary(nn.Module):
    """Logits (−z/2, z/2) with z = w·x + b: class 1 iff z > 0; distance to the boundary |z|/‖w‖."""

    def __init__(self, w: torch.Tensor, b: float):
        super().__init__()
        self.w = nn.Parameter(w.clone())
        self.b = nn.Parameter(torch.tensor(float(b)))

    def forward(self, x):
        z = x.flatten(1) @ self.w + self.b
        return torch.stack([-z / 2, z / 2], dim=1)


def linear_problem(n=40, shape=(1, 4, 5), seed=0):
    """Points at known L2 distances from the hyperplane, all inside [0.2, 0.8] (away from the box)."""
    g = torch.Generator().manual_seed(seed)
    d = math.prod(shape)
    w = torch.randn(d, generator=g)
    w_hat = w / w.norm()
    b = -float(w @ torch.full((d,), 0.5))
    dists = torch.tensor([0.02, 0.07, 0.12, 0.17, 0.24])[torch.arange(n) % 5]
    sign = torch.where(torch.arange(n) % 2 == 0, 1.0, -1.0)
    c = 0.45 + 0.1 * torch.rand(n, d, generator=g)
    c = c - ((c @ w + b) / (w @ w)).unsqueeze(1) * w  # onto the hyperplane
    x = c + (sign * dists).unsqueeze(1) * w_hat
    assert x.min() > 0.2 and x.max() < 0.8
    y = (sign > 0).long()
    model = LinearBinary(w, b).eval()
    return model, x.view(n, *shape), y, dists


def as_data(x, y, name="t") -> ImageData:
    return ImageData(name=name, split="test", x=x, y=y, indices=torch.arange(len(y)), num_classes=int(y.max()) + 1)


def tiny_cnn(seed=0, classes=5):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 36, classes)).eval()


def self_labelled(model, n=24, seed=0):
    """Random 6x6 images (some pixels exactly 0 or 1) labelled by the model itself: all correct."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 6, 6, generator=g)
    x[:, :, 0] = 0.0
    x[:, :, -1] = 1.0
    with torch.no_grad():
        y = model(x).argmax(1)
    return x, y


@pytest.fixture(scope="module")
def demo():
    model = load_model("demo")
    x, y = load_data("demo", n=24, seed=1).tensors()
    return model, x, y


# --------------------------------------------------------------------------- closed form


@pytest.mark.parametrize("eps", [0.05, 0.1, 0.15, 0.2])
def test_pgd_l2_linear_closed_form(eps):
    model, x, y, dists = linear_problem()
    x_adv = PGD("l2", eps, steps=20)(model, x, y)
    with torch.no_grad():
        robust = model(x_adv).argmax(1) == y
    assert torch.equal(robust, dists > eps)
    assert (flat_norm(x_adv - x, "l2") <= eps + 1e-5).all()


def test_audit_linear_closed_form_and_minimal_norms():
    model, x, y, dists = linear_problem()
    eps = (0.05, 0.1, 0.15, 0.2)
    res = attack_audit(model, as_data(x, y), AttackOptions(attacks=("pgd", "deepfool", "cw"), eps=eps, steps=20,
                                                           cw_steps=40, cw_search_steps=3, masking_checks=False),
                       batch_size=40)
    n = len(y)
    for e in eps:
        want = int((dists > e).sum())
        for attack in ("pgd", "deepfool", "worst_case"):
            entry = res.summary[attack]["l2"][f"{e:g}"]
            assert entry["robust"] == want and entry["n"] == n
            assert entry["ci_low"] <= want / n <= entry["ci_high"]
    df = torch.tensor(res.per_sample["deepfool_norm"])
    cw = torch.tensor(res.per_sample["cw_norm"])
    assert (df >= dists - 1e-5).all() and (df <= dists * 1.03 + 1e-3).all()  # overshoot 2 %
    assert (cw >= dists - 1e-5).all() and (cw <= dists * 1.1 + 1e-2).all()
    assert res.summary["flags"]["gradient_masking"] is False


# --------------------------------------------------------------------------- projections


def dykstra(x, v, norm, eps, iters=4000):
    """Reference projection onto ball ∩ box by Dykstra's alternating projections."""
    z, p, q = v.clone(), torch.zeros_like(v), torch.zeros_like(v)
    for _ in range(iters):
        yb = torch.maximum(torch.minimum(z + p, 1 - x), -x)
        p = z + p - yb
        z_new = project_ball(yb + q, norm, eps)
        q = yb + q - z_new
        z = z_new
    return z


def test_ball_projections_exact():
    v = torch.randn(16, 3, 5, 5, dtype=torch.float64)
    for eps in (0.1, 1.0, 100.0):
        p2 = project_ball(v, "l2", eps)
        n = flat_norm(v, "l2")
        want = torch.where((n > eps).view(-1, 1, 1, 1), v * (eps / n).view(-1, 1, 1, 1), v)
        torch.testing.assert_close(p2, want, rtol=0, atol=1e-15)
        torch.testing.assert_close(project_ball(v, "linf", eps), v.clamp(-eps, eps), rtol=0, atol=0)


@pytest.mark.parametrize("norm", ["l2", "linf"])
@pytest.mark.parametrize("eps", [0.03, 0.3, 1.5])
def test_box_ball_projection_matches_dykstra(norm, eps):
    g = torch.Generator().manual_seed(3)
    x = torch.rand(12, 1, 4, 4, generator=g, dtype=torch.float64)
    x[:6, :, 0] = 0.0
    x[:6, :, -1] = 1.0
    v = 0.6 * torch.randn(x.shape, generator=g, dtype=torch.float64)
    p = project(x, v, norm, eps)
    torch.testing.assert_close(p, dykstra(x, v, norm, eps), rtol=0, atol=1e-9)
    assert (flat_norm(p, norm) <= eps * (1 + 1e-12)).all()
    assert ((x + p) >= 0).all() and ((x + p) <= 1).all()
    inside = 0.5 * project(x, v, norm, eps)  # feasible points are fixed points
    torch.testing.assert_close(project(x, inside, norm, eps), inside, rtol=0, atol=1e-15)


# --------------------------------------------------------------------------- contract


def _attacks_for_contract():
    return [PGD("l2", 0.5, steps=3), PGD("linf", 0.1, steps=3, restarts=2), FGSM("linf", 0.1), FGSM("l2", 0.5),
            DeepFool(steps=5), CarliniWagnerL2(steps=5, search_steps=2)]


def test_registry_is_complete():
    assert set(ATTACKS) == {"pgd", "fgsm", "deepfool", "cw", "autoattack"}


@pytest.mark.parametrize("atk", _attacks_for_contract(), ids=repr)
def test_attack_contract(atk):
    model = tiny_cnn()
    x, y = self_labelled(model)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    a1, a2 = atk(model, x, y), atk(model, x, y)
    assert a1.shape == x.shape and torch.isfinite(a1).all()
    assert torch.equal(a1, a2)  # deterministic
    assert a1.min() >= 0 and a1.max() <= 1
    if hasattr(atk, "eps"):
        assert (flat_norm(a1 - x, atk.norm) <= atk.eps + norm_tolerance(atk.eps, atk.norm, 36)).all()
    assert not model.training
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_pgd_in_train_mode_keeps_mode_and_grads():
    model = tiny_cnn().train()
    x, y = self_labelled(model.eval())
    model.train()
    x_adv = PGD("linf", 0.1, steps=3)(model, x, y)
    assert model.training and all(m.training for m in model.modules())
    assert all(p.requires_grad and p.grad is None for p in model.parameters())
    assert (flat_norm(x_adv - x, "linf") <= 0.1 + 1e-6).all()
    with torch.no_grad():  # also works under no_grad (e.g. inside an eval loop)
        PGD("l2", 0.2, steps=2)(model, x, y)


def test_pgd_random_starts_do_not_depend_on_the_batch():
    atk = PGD("l2", 0.3, steps=2)
    x = torch.rand(10, 1, 6, 6)
    idx = torch.arange(100, 110)
    full = atk.start(x, idx, 0)
    part = atk.start(x[3:7], idx[3:7], 0)
    torch.testing.assert_close(full[3:7], part, rtol=0, atol=0)
    assert not torch.equal(atk.start(x, idx, 0), atk.start(x, idx, 1))  # restarts differ
    model, xl, yl, _ = linear_problem()
    opts = AttackOptions(eps=(0.1,), steps=3, restarts=2, masking_checks=False)
    a = attack_audit(model, as_data(xl, yl), opts, batch_size=40)
    b = attack_audit(model, as_data(xl, yl), opts, batch_size=13)
    assert a.per_sample["robust_pgd_l2_0.1"] == b.per_sample["robust_pgd_l2_0.1"]


def test_bad_attack_arguments():
    with pytest.raises(UsageError):
        PGD("l1", 0.1)
    with pytest.raises(UsageError):
        PGD("l2", -1.0)
    with pytest.raises(UsageError):
        PGD("l2")  # eps is required
    with pytest.raises(UsageError, match="version"):
        AutoAttack("linf", 0.1, version="fast")
    with pytest.raises(UsageError, match="custom"):
        AutoAttack("linf", 0.1, version="custom")


# --------------------------------------------------------------------------- strength


def reference_pgd(model, x, y, norm, eps, steps, alpha, random_start):
    """A plain Madry-style PGD: project onto the ball, clip to the box, return the LAST iterate."""
    g = torch.Generator().manual_seed(123)
    if random_start:
        if norm == "linf":
            delta = (torch.rand(x.shape, generator=g) * 2 - 1) * eps
        else:
            d = torch.randn(x.shape, generator=g)
            delta = d / d.flatten(1).norm(dim=1).view(-1, 1, 1, 1) * eps * torch.rand(x.shape[0], 1, 1, 1, generator=g)
    else:
        delta = torch.zeros_like(x)
    xa = (x + delta).clamp(0, 1)
    for _ in range(steps):
        xa = xa.detach().requires_grad_(True)
        loss = nn.functional.cross_entropy(model(xa), y)
        (grad,) = torch.autograd.grad(loss, xa)
        if norm == "linf":
            xa = xa + alpha * grad.sign()
            xa = torch.min(torch.max(xa, x - eps), x + eps).clamp(0, 1)
        else:
            xa = xa + alpha * grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
            d = xa - x
            n = d.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
            xa = (x + d * torch.clamp(eps / n, max=1.0)).clamp(0, 1)
    with torch.no_grad():
        return model(xa.detach()).argmax(1) != y


def test_pgd_at_least_as_strong_as_reference_same_trajectory(demo):
    """No random start, Linf: identical trajectories, so keeping the best iterate can only add successes."""
    model, x, y = demo
    eps, steps = 3 / 255, 5
    ours = PGD("linf", eps, steps=steps, random_start=False, step_rule="fixed")
    with torch.no_grad():
        mine = model(ours(model, x, y)).argmax(1) != y
    ref = reference_pgd(model, x, y, "linf", eps, steps, ours.step_size, random_start=False)
    assert (mine | ~ref).all()  # every sample the reference breaks, ours breaks


@pytest.mark.parametrize("norm,eps", [("l2", 0.25), ("linf", 3 / 255)])
def test_pgd_at_least_as_strong_as_reference_random_start(demo, norm, eps):
    model, x, y = demo
    steps = 5
    ours = PGD(norm, eps, steps=steps)
    with torch.no_grad():
        correct = model(x).argmax(1) == y
        mine = (model(ours(model, x, y)).argmax(1) != y) & correct
    ref = reference_pgd(model, x, y, norm, eps, steps, ours.step_size, random_start=True) & correct
    assert int(mine.sum()) >= int(ref.sum())


# --------------------------------------------------------------------------- protocol


def test_protocol_counts_monotone_and_restores_model():
    model = tiny_cnn(seed=1)
    x, y = self_labelled(model, n=30)
    y[:6] = (y[:6] + 1) % 5  # six points start misclassified
    model.train()
    flags_before = [p.requires_grad for p in model.parameters()]
    eps = (0.02, 0.05, 0.1, 0.3)
    res = attack_audit(model, as_data(x, y), AttackOptions(attacks=("pgd", "fgsm", "deepfool"), norms=("l2", "linf"),
                                                           eps=eps, steps=4), batch_size=11)
    assert model.training and [p.requires_grad for p in model.parameters()] == flags_before
    s, ps = res.summary, res.per_sample
    assert s["clean_correct"] == 24 and s["clean_accuracy"] == pytest.approx(24 / 30)
    for entry in s["results"]:
        assert entry["n"] == 30  # accuracy divides by all n
    for attack in ("pgd", "fgsm", "worst_case"):
        for norm in ("l2", "linf"):
            accs = [s[attack][norm][f"{e:g}"]["robust_accuracy"] for e in eps]
            assert accs == sorted(accs, reverse=True) and accs[0] <= 24 / 30
            cols = [ps[f"robust_{attack}_{norm}_{e:g}"] for e in eps]
            for j in range(1, len(eps)):  # per sample: robust at a larger eps => robust at every smaller one
                assert all(cols[j - 1][i] or not cols[j][i] for i in range(30))
    for norm in ("l2", "linf"):  # worst case = AND over attacks
        for e in eps:
            wc = ps[f"robust_worst_case_{norm}_{e:g}"]
            parts = [ps[f"robust_{a}_{norm}_{e:g}"] for a in ("pgd", "fgsm", "deepfool") if norm in ATTACKS[a].norms]
            assert all(w <= all(p[i] for p in parts) for i, w in enumerate(wc))
    assert not any(ps["robust_pgd_l2_0.02"][:6])  # misclassified points are never robust
    assert all(v == 0.0 for v in ps["deepfool_norm"][:6])
    assert "deepfool supports only l2" in " ".join(s["notices"])


def test_failed_recheck_is_an_error(monkeypatch):
    model = tiny_cnn()
    x, y = self_labelled(model, n=8)
    with pytest.raises(CheckFailedError, match="outside the l2 ball"):
        recheck(model, x, (x + 0.3).clamp(0, 1), y, "l2", 0.1, "test")
    with pytest.raises(CheckFailedError, match="NaN"):
        recheck(model, x, x * float("nan"), y, "l2", 0.1, "test")
    with pytest.raises(CheckFailedError, match=r"\[0, 1\]"):
        recheck(model, x, x + 2.0, y, "linf", 5.0, "test")

    class Cheat:
        def __call__(self, model, x, y, index=None):
            return (x + 0.5).clamp(0, 1)

    real = AttackOptions.build
    monkeypatch.setattr(AttackOptions, "build", lambda self, a, n, e=None, steps=None: Cheat() if a == "pgd"
                        else real(self, a, n, e, steps))
    with pytest.raises(CheckFailedError):
        attack_audit(model, as_data(x, y), AttackOptions(eps=(0.1,), masking_checks=False))


def test_options_validation_lists_every_problem():
    with pytest.raises(UsageError) as err:
        AttackOptions(attacks=("pgdd", "cw"), norms=("l3", "linf"), steps=0, loss="hinge").validate()
    msg = str(err.value)
    for part in ("did you mean pgd", "l3", "steps", "hinge", "cw supports"):
        assert part in msg
    eps = parse_eps(["0.1,8/255", "linf=1/255"])
    assert eps == {"*": (0.1, 8 / 255), "linf": (1 / 255,)}
    opts = AttackOptions(norms=("l2", "linf"), eps=eps).validate()
    assert opts.eps_for("l2") == [8 / 255, 0.1] and opts.eps_for("linf") == [1 / 255]
    with pytest.raises(UsageError):
        parse_eps(["abc"])
    with pytest.raises(UsageError, match="above 1"):
        AttackOptions(norms=("linf",), eps=(2.0,)).validate()


def test_audit_prints_nothing(capsys):
    model, x, y, _ = linear_problem(n=10)
    attack_audit(model, as_data(x, y), AttackOptions(eps=(0.1,), steps=2))
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""


def test_interval_is_clopper_pearson():
    lo, hi = clopper_pearson(5, 10)
    assert lo == pytest.approx(0.18709, abs=1e-5) and hi == pytest.approx(0.81291, abs=1e-5)
    assert clopper_pearson(0, 100) == (0.0, pytest.approx(1 - 0.025 ** (1 / 100)))
    assert clopper_pearson(100, 100)[1] == 1.0
    assert all(math.isnan(v) for v in clopper_pearson(0, 0))


def test_save_adv_and_result_roundtrip(tmp_path):
    from safetensors import safe_open

    model, x, y, dists = linear_problem(n=20)
    path = tmp_path / "adv.safetensors"
    res = attack_audit(model, as_data(x, y), AttackOptions(attacks=("pgd", "deepfool"), eps=(0.05, 0.15), steps=10),
                       batch_size=8, save_adv=path)
    assert res.summary["save_adv"] == str(path) and not (tmp_path / "adv.safetensors.partial").exists()
    with safe_open(str(path), "pt") as f:
        t = {k: f.get_tensor(k) for k in f.keys()}
        meta = f.metadata()
    assert torch.equal(t["index"], torch.arange(20)) and torch.equal(t["x"], x)
    first = t["first_eps_l2"]
    want = torch.where(dists <= 0.05, 0.05, torch.where(dists <= 0.15, 0.15, float("inf")))
    torch.testing.assert_close(first, want.float())
    broken = torch.isfinite(first)
    assert (flat_norm(t["x_adv_l2"] - x, "l2")[broken] <= first[broken] + 1e-5).all()
    with torch.no_grad():
        assert (model(t["x_adv_l2"][broken]).argmax(1) != y[broken]).all()
    assert "deepfool" in meta["lcnn_audit.attack_codes"]
    back = AuditResult.from_dict(res.to_dict())
    assert back.summary["results"] == res.summary["results"]


# --------------------------------------------------------------------------- gradient-masking flags


class Saturated(nn.Module):
    """Logits scaled by 1e4: the softmax is exactly one-hot in fp32, so CE gradients are exactly 0."""

    def __init__(self):
        super().__init__()
        self.inner = tiny_cnn(seed=2)

    def forward(self, x):
        return 1e4 * self.inner(x)


class Noisy(nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = tiny_cnn(seed=3)

    def forward(self, x):
        out = self.inner(x)
        return out + 0.5 * torch.randn_like(out)


def test_masked_gradients_are_flagged():
    model = Saturated().eval()
    x, y = self_labelled(model, n=16)
    res = attack_audit(model, as_data(x, y), AttackOptions(norms=("linf",), eps=(0.01,), steps=3))
    f = res.summary["flags"]
    assert f["zero_gradients"] and f["large_eps_not_broken"] and f["gradient_masking"]
    assert any("large_eps_not_broken" in m for m in res.summary["flag_messages"])


def test_nondeterministic_model_is_flagged():
    model = Noisy().eval()
    x, y = self_labelled(model, n=12)
    res = attack_audit(model, as_data(x, y), AttackOptions(eps=(0.05,), steps=2, masking_checks=False))
    assert res.summary["flags"]["nondeterministic"] and res.summary["flags"]["gradient_masking"]


def test_more_steps_and_black_box_flags_from_fields():
    n = 100
    opts = AttackOptions(attacks=("pgd", "autoattack"), norms=("l2",), eps=(0.1, 0.2)).validate()
    ps = {"index": list(range(n)), "zero_grad": [False] * n, "nondeterministic": [False] * n,
          "robust_pgd_l2_0.1": [i < 60 for i in range(n)], "robust_pgd_l2_0.2": [i < 40 for i in range(n)],
          "check_more_steps_l2_0.2": [i < 50 for i in range(n)], "check_large_eps_l2": [False] * n,
          "autoattack_by_l2_0.1": [""] * n, "autoattack_checks_l2_0.1": [""] * n,
          "autoattack_by_l2_0.2": ["square" if i < 3 else "" for i in range(n)],
          "autoattack_checks_l2_0.2": [""] * n}
    flags, msgs = compute_flags(ps, opts)
    assert flags["more_steps_higher_accuracy"] and flags["black_box_stronger"] and flags["gradient_masking"]
    assert flags["large_eps_not_broken"] is False and flags["autoattack_dynamic_model"] is False
    ps["check_more_steps_l2_0.2"] = [i < 41 for i in range(n)]
    ps["autoattack_by_l2_0.2"] = [""] * n
    flags, _ = compute_flags(ps, opts)
    assert not flags["more_steps_higher_accuracy"] and not flags["black_box_stronger"]
    assert not flags["gradient_masking"]


# --------------------------------------------------------------------------- AutoAttack adapter

QUICK = dict(version="custom", attacks=["apgd-ce", "square"], n_iter=4, n_queries=10)


class Softmaxed(nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = tiny_cnn(seed=4)

    def forward(self, x):
        return self.inner(x).softmax(dim=1)


class Dynamic(nn.Module):
    """Calls autograd inside forward, which AutoAttack's check_dynamic detects."""

    def __init__(self):
        super().__init__()
        self.inner = tiny_cnn(seed=5)

    def forward(self, x):
        with torch.enable_grad():
            xx = x.detach().requires_grad_(True)
            (g,) = torch.autograd.grad((xx**2).sum(), xx)
        return self.inner(x) + 0.0 * g.flatten(1)[:, :1]


def test_autoattack_adapter_reports_flags(capsys):
    clean = tiny_cnn(seed=6)
    x, y = self_labelled(clean, n=10)
    out = AutoAttack("linf", 0.1, **QUICK).run(clean, x, y)
    assert out.x_adv.shape == x.shape and not any(out.flags.values())
    assert (flat_norm(out.x_adv - x, "linf") <= 0.1 + 1e-6).all()
    assert set(out.broken_by) <= {"", "apgd-ce", "square"} and "pyautoattack" in out.package

    soft = Softmaxed().eval()
    xs, ys = self_labelled(soft, n=8)
    assert AutoAttack("l2", 0.5, **QUICK).run(soft, xs, ys).flags["softmax_output"]

    noisy = Noisy().eval()
    xn, yn = self_labelled(noisy, n=8)
    assert AutoAttack("linf", 0.05, **QUICK).run(noisy, xn, yn).flags["randomized"]

    dyn = Dynamic().eval()
    xd, yd = self_labelled(dyn, n=8)
    assert AutoAttack("linf", 0.05, **QUICK).run(dyn, xd, yd).flags["dynamic_model"]
    # the module-global check_dynamic counter is reset: the next (static) model is not flagged
    assert not AutoAttack("linf", 0.05, **QUICK).run(clean, x, y).flags["dynamic_model"]
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_autoattack_keeps_global_rng_and_tracer():
    clean = tiny_cnn(seed=6)
    x, y = self_labelled(clean, n=6)
    torch.manual_seed(42)
    state = torch.get_rng_state()
    tracer = sys.gettrace()
    AutoAttack("linf", 0.05, **QUICK)(clean, x, y)
    assert torch.equal(torch.get_rng_state(), state) and sys.gettrace() is tracer


def test_autoattack_in_the_audit():
    model = tiny_cnn(seed=7)
    x, y = self_labelled(model, n=12)
    res = attack_audit(model, as_data(x, y), AttackOptions(attacks=("pgd", "autoattack"), norms=("linf",),
                                                           eps=(0.02, 0.1), steps=3, version="custom",
                                                           aa_attacks=("apgd-ce", "square"), aa_n_iter=4,
                                                           aa_n_queries=10, masking_checks=False))
    s = res.summary
    assert s["flags"]["black_box_stronger"] is not None
    acc = [s["autoattack"]["linf"][k]["robust_accuracy"] for k in ("0.02", "0.1")]
    assert acc[0] >= acc[1]
    assert "pyautoattack" in res.environment["autoattack"]
    assert set(res.per_sample["autoattack_by_linf_0.1"]) <= {"", "apgd-ce", "square"}


def test_prefers_the_autoattack_package(monkeypatch):
    """With an ``autoattack`` package installed (original API: attacks_to_run, Logger.log, bs=) it is used."""
    calls = {}
    checks = types.ModuleType("autoattack.checks")
    checks.funcs = {"grad": 7, "backward": 1, "_make_grads": 0}

    class Logger:
        def log(self, text):
            print(text)  # the original prints; the adapter must swallow it

    class FakeAA:
        def __init__(self, model, norm="Linf", eps=0.3, seed=None, verbose=True, attacks_to_run=(),
                     version="standard", is_tf_model=False, device="cuda", log_path=None):
            calls.update(norm=norm, eps=eps, verbose=verbose, attacks_to_run=attacks_to_run, version=version)
            self.logger = Logger()

        def run_standard_evaluation(self, x, y, bs=250, return_labels=False):
            calls["funcs_at_run"] = dict(checks.funcs)
            print("using custom version")
            self.logger.log("Warning: it seems to be a randomized defense! Please use version='rand'.")
            return (x.clone(), y.clone()) if return_labels else x.clone()

    pkg = types.ModuleType("autoattack")
    pkg.AutoAttack, pkg.checks, pkg.__version__ = FakeAA, checks, "0.1"
    monkeypatch.setitem(sys.modules, "autoattack", pkg)
    monkeypatch.setitem(sys.modules, "autoattack.checks", checks)
    assert aa_mod.load_autoattack() is pkg
    model = tiny_cnn()
    x, y = self_labelled(model, n=4)
    out = AutoAttack("l2", 0.5, version="custom", attacks=["apgd-ce"]).run(model, x, y)
    assert calls["norm"] == "L2" and calls["attacks_to_run"] == ["apgd-ce"] and calls["verbose"] is False
    assert calls["funcs_at_run"] == {"grad": 0, "backward": 0, "_make_grads": 0}
    assert out.flags["randomized"] and out.package == "autoattack 0.1"
