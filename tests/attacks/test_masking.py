"""Gradient masking: each masking model is flagged by the default audit, and its counter brings robust
accuracy within the Clopper-Pearson interval of an independent BPDA/EOT/margin reference attack."""

import pytest
import torch

from lcnn_audit.attacks import PGD, AttackOptions, attack_audit, clopper_pearson
from lcnn_audit.attacks.counters import bpda
from lcnn_audit.attacks.indicators import incomplete_optimization
from lcnn_audit.data import load_data
from lcnn_audit.errors import UsageError
from lcnn_audit.loading import load_model
from tests.masking_models import Quantise, masking_models, reference_attack, wrap

EPS, STEPS, N = 0.2, 10, 48
#: The flag each masking model must raise in the default run.
EXPECTED_FLAG = {"quantise-8": "unavailable_gradients", "saturated-logits": "unavailable_gradients",
                 "random-noise": "nondeterministic", "jpeg-like": "unavailable_gradients",
                 "shattered": "incomplete_optimization"}
REFERENCE = {"quantise-8": {"bpda_pre": True}, "saturated-logits": {"margin": True}, "random-noise": {"eot": 8},
             "jpeg-like": {"bpda_pre": True}, "shattered": {"bpda_pre": True}}


@pytest.fixture(scope="module")
def demo_net():
    return load_model("demo")


@pytest.fixture(scope="module")
def demo_data():
    return load_data("demo", n=N, seed=3)


def worst(res):
    return res.summary["worst_case"]["l2"][f"{EPS:g}"]


@pytest.mark.slow
@pytest.mark.parametrize("name", list(EXPECTED_FLAG))
def test_masking_is_flagged_and_countered(name, demo_net, demo_data):
    torch.manual_seed(0)
    model, counter = masking_models(demo_net)[name]
    base = attack_audit(model, demo_data, AttackOptions(eps=(EPS,), steps=STEPS))
    flags = base.summary["flags"]
    assert flags["gradient_masking"] and flags[EXPECTED_FLAG[name]], (name, flags)
    adapt = attack_audit(model, demo_data, AttackOptions(eps=(EPS,), steps=STEPS, **counter)) if counter else base
    got = worst(adapt)
    x, y = demo_data.tensors()
    ref = reference_attack(model, x, y, "l2", EPS, STEPS, **REFERENCE[name])
    lo, hi = clopper_pearson(int(ref.sum()), len(y))
    assert lo <= got["robust_accuracy"] <= hi, (name, got["robust_accuracy"], int(ref.sum()), lo, hi)
    assert got["robust_accuracy"] <= worst(base)["robust_accuracy"]  # the counter never loses anything
    assert adapt.summary["flags"]["gradient_masking"]  # the flag is still shown next to the honest number
    assert "pgd_adaptive" in adapt.summary  # the counter's own row
    # zero-gradient inputs get the margin-loss counter even in the default run
    assert ("pgd_adaptive" in base.summary) == (base.summary["indicators"]["unavailable_gradients"]["count"] > 0)


@pytest.mark.slow
def test_no_false_alarm_on_the_honest_demo_model(demo_net):
    data = load_data("demo", n=96, seed=5)
    res = attack_audit(demo_net, data, AttackOptions())
    assert res.summary["flags"]["gradient_masking"] is False, res.summary["flag_messages"]
    ind = res.summary["indicators"]
    assert ind["non_convergence"]["checked"] > 0 and ind["unavailable_gradients"]["count"] == 0
    assert "pgd_adaptive" not in res.summary  # nothing saturated, so the counter did not run


def test_bpda_is_the_identity_backward_and_restores_the_model():
    model = wrap(torch.nn.Flatten(0, -1), Quantise())  # pre = quantiser, net = anything
    x = torch.rand(2, 3, requires_grad=True)
    (g,) = torch.autograd.grad(model(x).sum(), x)
    assert torch.equal(g, torch.zeros_like(g))  # the quantiser's gradient is zero
    with bpda(model, ("pre",)):
        out = model(x)
        (g,) = torch.autograd.grad(out.sum(), x)
    assert torch.equal(out, model(x)) and torch.equal(g, torch.ones_like(g))  # same forward, identity backward
    (g,) = torch.autograd.grad(model(x).sum(), x)
    assert torch.equal(g, torch.zeros_like(g))  # hooks removed
    with pytest.raises(UsageError, match="no submodule 'prx'.*did you mean pre"):
        with bpda(model, ("prx",)):
            pass
    shrink = wrap(torch.nn.Identity(), torch.nn.AvgPool1d(2))
    with pytest.raises(UsageError, match="keeps the shape"):
        with bpda(shrink, ("pre",)):
            shrink(torch.rand(1, 1, 4))


def test_eot_averages_the_gradient_over_passes():
    """On a model adding fixed noise from a cycle of 4, EOT-4's gradient equals the mean of the 4 gradients."""
    class Cycle(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.k, self.w = 0, torch.randn(4, 5, 2)

        def forward(self, x):
            self.k = (self.k + 1) % 4
            return x.flatten(1) @ self.w[self.k]

    from lcnn_audit.attacks.base import input_gradient

    m = Cycle()
    x, y = torch.rand(3, 5), torch.tensor([0, 1, 0])
    g4, _, _ = input_gradient(m, x, y, "margin", eot=4)
    singles = torch.stack([input_gradient(m, x, y, "margin")[0] for _ in range(4)]).mean(0)
    torch.testing.assert_close(g4, singles)
    with pytest.raises(UsageError, match="eot"):
        PGD("l2", 0.1, eot=0)


def test_incomplete_optimization_indicator():
    fooled = torch.tensor([False, False, False, True])
    trace = torch.tensor([[0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0],   # still rising: incomplete
                          [0.0, 5.0, 7.0, 7.0, 7.0, 7.0, 7.0, 7.0],   # converged
                          [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0],   # flat: never improves
                          [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]])  # fooled: not counted
    assert incomplete_optimization(trace, fooled).tolist() == [True, False, False, False]


def test_indicator_counts_and_gate_paths():
    from lcnn_audit.gates.metrics import resolve_metric
    from tests.attacks.test_attacks import as_data, linear_problem

    model, x, y, _ = linear_problem()
    res = attack_audit(model, as_data(x, y), AttackOptions(eps=(0.1,), steps=10), batch_size=40)
    ind = res.summary["indicators"]
    assert set(ind) == {"silent_success", "incomplete_optimization", "transfer_failure", "non_convergence",
                        "unavailable_gradients", "unreachable_misclassification"}
    assert ind["unavailable_gradients"] == {"count": 0, "checked": len(y), "share": 0.0}
    assert ind["transfer_failure"]["checked"] == 0 and ind["transfer_failure"]["share"] is None
    assert ind["non_convergence"]["checked"] == len(range(0, len(y), 8))
    assert resolve_metric(res.summary, "indicators.silent_success.count")[0] == 0
    assert res.summary["flags"]["gradient_masking"] is False


def test_cli_counters_and_their_errors(tmp_path):
    import json

    from tests.cli.test_attack import FAST, assert_one_line_error, invoke

    out = tmp_path / "r.json"
    res = invoke("attack", *FAST, "--eot", "2", "--bpda", "normalize", "--json", out)
    assert res.exit_code == 0, res.output
    s = json.loads(out.read_text())["summary"]
    assert "pgd_adaptive" in s
    assert s["pgd_adaptive"]["l2"]["0.3"]["robust"] >= s["worst_case"]["l2"]["0.3"]["robust"]
    assert "indicators of attack failure" in res.output
    assert_one_line_error(invoke("attack", *FAST, "--bpda", "prep"), "no submodule 'prep'")
    assert_one_line_error(invoke("attack", *FAST, "--step-rule", "adam"), "unknown step rule")
    assert_one_line_error(invoke("attack", *FAST, "--step-rule", "apgd", "--step-size", "0.1"), "fixed step")


def test_gate_policy_checks_indicator_paths():
    from lcnn_audit.gates.policy import _attack_metric_problems

    assert _attack_metric_problems(["indicators", "silent_success", "count"], None) == []
    assert _attack_metric_problems(["flags", "non_convergence"], None) == []
    bad = _attack_metric_problems(["indicators", "silent", "count"], None)
    assert bad and "unreachable_misclassification" in bad[0]
