"""The AutoAttack adapter returns exactly what the reference package returns when called directly."""

import pytest
import torch

from lcnn_audit.attacks import AutoAttack
from lcnn_audit.attacks.autoattack import load_autoattack
from tests.attacks.test_attacks import self_labelled, tiny_cnn


@pytest.mark.parametrize("norm,eps,attacks", [("linf", 0.08, ["apgd-ce"]), ("l2", 0.12, ["apgd-ce", "apgd-dlr"])])
def test_adapter_per_sample_results_equal_a_direct_call(norm, eps, attacks):
    model = tiny_cnn(seed=11)
    x, y = self_labelled(model, n=12, seed=4)
    index = torch.arange(100, 112)
    adapter = AutoAttack(norm, eps, version="custom", attacks=attacks, seed=3)
    out = adapter.run(model, x, y, index)

    pkg = load_autoattack()
    seed = adapter.batch_seed(index)  # the seed the adapter documents: seed·1000003 + smallest index
    assert seed == (3 * 1_000_003 + 100) % (2**31 - 1)
    with torch.random.fork_rng():
        direct = pkg.AutoAttack(model, attacks=attacks, device="cpu", eps=eps, norm={"linf": "Linf", "l2": "L2"}[norm],
                                seed=seed, version="custom")
        x_ref, y_ref = direct.run_standard_evaluation(x, y, batch_size=len(y))
    torch.testing.assert_close(out.x_adv, x_ref, rtol=0, atol=0)
    assert torch.equal(out.y_adv, y_ref)
    with torch.no_grad():
        fooled = model(x_ref).argmax(1) != y
    assert [b != "" for b in out.broken_by] == fooled.tolist()  # attribution agrees sample by sample
    assert 0 < int(fooled.sum()) < len(y)  # the comparison is not vacuous
