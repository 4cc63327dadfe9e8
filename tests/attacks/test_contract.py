"""The attack contract, checked for every entry of the registry (``ATTACKS``), AutoAttack included.

Every attack built by ``build_attack(name, AttackOptions, norm, eps)`` satisfies the
:class:`~lcnn_audit.attacks.protocol.Attack` protocol; its ``run`` returns adversarial examples
in the [0, 1] box and (eps-bounded attacks) in the eps-ball; it is deterministic for a seed,
leaves the model's mode, parameters, ``.grad`` and the global RNG alone; a
``batch_independent`` attack gives each sample the result it gets alone; a ``minimal_norm``
attack returns the distances of its examples. A new registry entry is checked without
editing this file.
"""

import dataclasses

import pytest
import torch
from typer.testing import CliRunner

from lcnn_audit.attacks import ATTACKS, AttackOptions, build_attack
from lcnn_audit.attacks import fields as F
from lcnn_audit.attacks.autoattack import load_autoattack
from lcnn_audit.attacks.base import flat_norm, norm_tolerance
from lcnn_audit.attacks.protocol import Attack, AttackOutput, MinNormResult
from lcnn_audit.attacks.registry import MINIMAL_NORM, WHITE_BOX
from lcnn_audit.errors import UsageError
from tests.attacks.test_attacks import self_labelled, tiny_cnn

EPS = {"l2": 0.5, "linf": 0.1, "l1": 3.0}
#: small budgets: the contract, not the strength, is under test
OPTIONS = AttackOptions(steps=3, restarts=2, df_steps=5, cw_steps=10, cw_search_steps=2, cw_lr=0.1, version="custom",
                        aa_attacks=("apgd-ce", "square"), aa_n_iter=3, aa_n_queries=10, seed=3)
CASES = [(name, norm) for name, cls in ATTACKS.items() for norm in cls.norms]


def _needs_package(name):
    if name == "autoattack":
        try:
            load_autoattack()
        except UsageError:
            pytest.skip("AutoAttack code (pyautoattack) is not installed")


def _build(name, norm, options=OPTIONS, scale=1.0):
    return build_attack(name, options, norm, None if ATTACKS[name].minimal_norm else scale * EPS[norm])


@pytest.fixture(scope="module")
def problem():
    model = tiny_cnn()
    x, y = self_labelled(model, n=4)
    return model, x, y, torch.arange(10, 14)


@pytest.mark.parametrize("name,norm", CASES, ids=[f"{a}-{n}" for a, n in CASES])
def test_attack_contract(problem, name, norm):
    _needs_package(name)
    model, x, y, index = problem
    state = {k: v.clone() for k, v in model.state_dict().items()}
    atk = _build(name, norm)
    cls = ATTACKS[name]
    assert isinstance(atk, Attack) and type(atk) is cls and atk.name == name and norm in atk.norms
    rng = torch.random.get_rng_state()
    out = atk.run(model, x, y, index)
    assert torch.equal(torch.random.get_rng_state(), rng)  # the global RNG is not consumed
    assert isinstance(out, AttackOutput)
    x_adv = out.x_adv
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype and torch.isfinite(x_adv).all()
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    dist = flat_norm((x_adv - x).double(), norm)
    if cls.minimal_norm:
        assert isinstance(out, MinNormResult)
        found = out.adversarial
        assert found.any()  # the budget suffices on this model, so the checks below are not vacuous
        torch.testing.assert_close(out.norm.double()[found], dist[found], rtol=1e-5, atol=1e-6)
        with torch.no_grad():
            assert (model(x_adv[found]).argmax(1) != y[found]).all()  # a found example is adversarial
    else:
        assert (dist <= atk.eps + norm_tolerance(atk.eps, norm, x[0].numel())).all()
    # deterministic for a seed: a second object from the same options gives the same examples
    assert torch.equal(_build(name, norm).run(model, x, y, index).x_adv, x_adv)
    assert torch.equal(atk(model, x, y, index), x_adv)  # calling it is run(...).x_adv
    assert not model.training and all(p.grad is None for p in model.parameters())
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("name,norm", CASES, ids=[f"{a}-{n}" for a, n in CASES])
def test_attack_is_per_sample(problem, name, norm):
    """A batch of 4 gives each sample what it gets alone (same dataset index). At a small eps most
    samples survive the first restart, so the random later restarts run on several of them and
    decide their results."""
    cls = ATTACKS[name]
    if not cls.batch_independent:
        pytest.skip(f"{name} declares batch_independent = False")
    model, x, y, index = problem
    atk = _build(name, norm, dataclasses.replace(OPTIONS, restarts=4), scale=0.2)
    batch = atk.run(model, x, y, index).x_adv
    alone = torch.cat([atk.run(model, x[i:i + 1], y[i:i + 1], index[i:i + 1]).x_adv for i in range(len(x))])
    torch.testing.assert_close(alone, batch, rtol=0, atol=1e-6)


def test_registry_drives_the_derived_tables():
    assert set(ATTACKS) >= {"pgd", "fgsm", "deepfool", "cw", "autoattack"}
    assert all(name == cls.name for name, cls in ATTACKS.items())
    assert MINIMAL_NORM == tuple(n for n, c in ATTACKS.items() if c.minimal_norm) == ("deepfool", "cw")
    assert WHITE_BOX == tuple(n for n, c in ATTACKS.items() if c.white_box)
    assert "autoattack" not in WHITE_BOX  # it holds the black-box Square attack
    with pytest.raises(UsageError, match="unknown attack"):
        build_attack("pgdd", OPTIONS, "l2", 0.1)


def test_builders_read_the_options():
    opts = AttackOptions(steps=7, restarts=3, loss="margin", df_steps=9, overshoot=0.1, candidates=4, cw_steps=11,
                         cw_lr=0.05, version="plus", seed=5, eot=2)
    pgd = build_attack("pgd", opts, "linf", 0.1)
    assert (pgd.steps, pgd.restarts, pgd.loss, pgd.seed, pgd.eot) == (7, 3, "margin", 5, 1)
    assert build_attack("pgd", opts, "linf", 0.1, steps=28).steps == 28
    adaptive = build_attack("pgd_adaptive", opts, "l2", 0.1)
    assert (adaptive.loss, adaptive.eot) == ("margin", 2)
    df = build_attack("deepfool", opts, "l2")
    assert (df.steps, df.overshoot, df.candidates) == (9, 0.1, 4)
    cw = build_attack("cw", opts, "l2")
    assert (cw.steps, cw.lr) == (11, 0.05)
    aa = build_attack("autoattack", opts, "l1", 3.0)
    assert (aa.version, aa.seed, aa.norm) == ("plus", 5, "l1")
    assert build_attack("fgsm", opts, "l2", 0.2).loss == "margin"


@pytest.mark.parametrize("name", list(ATTACKS))
def test_every_registry_name_reaches_the_library_from_the_cli(monkeypatch, name):
    """``lcnn-audit attack --attack NAME`` validates and hands the library ``attacks=(NAME,)``."""
    import lcnn_audit.attacks
    from lcnn_audit.cli import app

    seen = {}

    def fake_audit(model, data, options, **kw):
        seen["options"] = options
        raise UsageError("stop: the audit was reached")

    monkeypatch.setattr(lcnn_audit.attacks, "attack_audit", fake_audit)
    norm = ATTACKS[name].norms[0]
    res = CliRunner().invoke(app, ["attack", "demo", "--n", "4", "--attack", name, "--norm", norm])
    assert res.exit_code == 2 and "stop: the audit was reached" in res.output, res.output
    assert seen["options"].attacks == (name,) and seen["options"].norms == (norm,)
    assert seen["options"] == AttackOptions.from_cli(attack=name, norm=norm, seed=seen["options"].seed).validate()
    assert name in CliRunner().invoke(app, ["attack", "--help"]).output  # the help lists it


def test_field_names_round_trip():
    for attack in (*ATTACKS, "worst_case", "pgd_adaptive"):
        for norm in ("l2", "linf", "l1"):
            for eps in (0.1, 8 / 255, 1e-5, 3.0):
                p = F.parse(F.robust(attack, norm, eps))
                assert (p.kind, p.attack, p.norm, p.eps) == ("robust", attack, norm, F.eps_key(eps))
    assert F.robust("pgd", "linf", 8 / 255) == "robust_pgd_linf_0.0313725"
    for build, kind in ((F.autoattack_by, "autoattack_by"), (F.autoattack_checks, "autoattack_checks"),
                        (F.more_steps, "more_steps"), (F.black_box, "black_box")):
        p = F.parse(build("l2", 0.15))
        assert (p.kind, p.norm, p.eps, p.attack) == (kind, "l2", "0.15", None)
    assert F.parse(F.large_eps("linf")) == F.FieldName("large_eps", "linf")
    assert F.min_norm("cw") == "cw_norm" and F.ioaf("checked", "l2") == "ioaf_checked_l2"
    assert F.ioaf("unavailable_gradients") == "ioaf_unavailable_gradients"
    for other in ("index", "cw_norm", "ioaf_checked_l2", "robust_", "check_black_box_l2"):
        assert F.parse(other) is None


def test_options_are_frozen_and_parse_no_strings():
    opts = AttackOptions(attacks=["PGD", " fgsm"], norms=["L2"], eps=[0.1, 0.2], bpda=["pre"])
    assert (opts.attacks, opts.norms, opts.eps, opts.bpda) == (("pgd", "fgsm"), ("l2",), (0.1, 0.2), ("pre",))
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts.steps = 3
    assert dataclasses.replace(opts, steps=3).steps == 3 and opts.steps == 10
    with pytest.raises(UsageError, match="must be a sequence of names"):
        AttackOptions(attacks="pgd,fgsm").validate()
    cli = AttackOptions.from_cli(attack="PGD, fgsm", norm="l2,linf", eps=["0.1", "linf=1/255"], bpda="Pre,post",
                                 aa_attacks=None, step_rule=" APGD ")
    assert cli.attacks == ("pgd", "fgsm") and cli.norms == ("l2", "linf") and cli.bpda == ("Pre", "post")
    assert cli.eps == {"linf": (1 / 255,), "*": (0.1,)} and cli.step_rule == "apgd" and cli.aa_attacks is None
    # validation lists every problem with the field it is about, and never mutates the options
    bad = AttackOptions(attacks=("pgd", "deepfool"), norms=("linf", "l2"), steps=0, overshoot=-1.0)
    assert {p.field for p in bad.problems()} == {"steps", "overshoot"}
    assert bad.notices == ["deepfool supports only l2; it does not run for linf"]
