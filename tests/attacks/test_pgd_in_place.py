"""The CPU step loops update the best iterate, APGD's x_max/g_max and its checkpoint resets in
place (only the rows that change move). They must equal the out-of-place ``torch.where``
bookkeeping that accelerators use, bit for bit: an in-place write into a tensor that another
name still holds (an aliased iterate or gradient) would make them differ."""

import pytest
import torch

from lcnn_audit.attacks import PGD, pgd
from lcnn_audit.data import load_data
from lcnn_audit.loading import load_model


def test_take_rows_in_place_equals_where():
    g = torch.Generator().manual_seed(0)
    dst, src = torch.rand(6, 1, 3, 3, generator=g), torch.rand(6, 1, 3, 3, generator=g)
    for mask in (torch.tensor([1, 0, 1, 1, 0, 0], dtype=torch.bool), torch.zeros(6, dtype=torch.bool),
                 torch.ones(6, dtype=torch.bool)):
        expect = torch.where(mask.view(-1, 1, 1, 1), src, dst)
        mine = dst.clone()
        out = pgd.take_rows(mine, src, mask, in_place=True)
        assert out is mine and torch.equal(out, expect)
        assert torch.equal(pgd.take_rows(dst, src, mask, in_place=False), expect)


@pytest.mark.parametrize("rule", ["apgd", "fixed"])
@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_in_place_step_loop_equals_the_where_loop(monkeypatch, norm, rule):
    model = load_model("demo")
    x, y = load_data("demo", n=32, seed=2).tensors()
    eps = 0.5 if norm == "l2" else 8 / 255
    atk = PGD(norm, eps, steps=12, restarts=2, step_rule=rule, step_size=eps / 4 if rule == "fixed" else None)
    fast = atk.run(model, x, y, trace=True, all_restarts=True)
    take = pgd.take_rows
    monkeypatch.setattr(pgd, "take_rows", lambda dst, src, mask, in_place: take(dst, src, mask, in_place=False))
    slow = atk.run(model, x, y, trace=True, all_restarts=True)
    for a, b in ((fast.x_adv, slow.x_adv), (fast.loss, slow.loss), (fast.trace, slow.trace),
                 (fast.adversarial, slow.adversarial), (fast.restart_adversarial, slow.restart_adversarial)):
        assert torch.equal(a, b)
