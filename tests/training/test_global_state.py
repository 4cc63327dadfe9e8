"""``train()`` leaves the caller's process as it found it: no SIGINT handler, global RNGs
given back (issue 13: it used to install a handler and reseed them by default)."""

import random
import signal

import numpy as np
import pytest
import torch
from torch import nn

from lcnn_audit.data import load_data
from lcnn_audit.training import StopFlag, TrainConfig, train


@pytest.fixture(scope="module")
def data():
    return load_data("demo", "train", n=24, seed=1)


def dropout_net(seed=0):
    """Dropout draws from the global torch generator: the RNG state matters to the weights."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 16), nn.Softplus(), nn.Dropout(0.5), nn.Linear(16, 10))


def cfg(**kw):
    return TrainConfig(**{**dict(epochs=2, batch_size=8, lr=0.05, curvature_n=0, seed=4, augment="none"), **kw})


def states():
    return torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy()


def same_states(a, b):
    return torch.equal(a[0], b[0]) and a[1] == b[1] and np.array_equal(a[2], b[2])


def test_no_sigint_handler_unless_asked(data):
    def sentinel(signum, frame):
        raise AssertionError("the caller's handler must not run")

    seen = []
    previous = signal.signal(signal.SIGINT, sentinel)
    try:
        train(dropout_net(), data, None, cfg(epochs=1), on_step=lambda s: seen.append(signal.getsignal(signal.SIGINT)))
        assert seen and all(h is sentinel for h in seen)
        assert signal.getsignal(signal.SIGINT) is sentinel
        seen.clear()  # the CLI's explicit opt-in still installs it, for the run only
        train(dropout_net(), data, None, cfg(epochs=1), handle_sigint=True,
              on_step=lambda s: seen.append(signal.getsignal(signal.SIGINT)))
        assert seen and all(h is not sentinel for h in seen)
        assert signal.getsignal(signal.SIGINT) is sentinel
    finally:
        signal.signal(signal.SIGINT, previous)


def test_global_rngs_are_given_back_and_runs_stay_deterministic(data):
    a = dropout_net()
    torch.manual_seed(11)
    random.seed(11)
    np.random.seed(11)
    before = states()
    train(a, data, None, cfg())
    assert same_states(before, states())  # untouched, although dropout drew from them
    torch.manual_seed(99)  # another caller state: same run (the run seeds its own draws from config.seed)
    b = dropout_net()
    train(b, data, None, cfg())
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    c = dropout_net()
    train(c, data, None, cfg(seed=5))
    assert not all(torch.equal(p, q) for p, q in zip(a.parameters(), c.parameters(), strict=True))
    d = dropout_net()
    before = states()
    train(d, data, None, cfg(), seed_global_rngs=True)  # the CLI's: left seeded and advanced
    assert not same_states(before, states())


def test_keyboard_interrupt_outside_a_callback_propagates(data, tmp_path):
    """Without the handler, only an interrupt at a step boundary (raised in on_step) is a
    clean stop; one in the middle of a step is Python's usual KeyboardInterrupt."""
    net = dropout_net()
    calls = []

    def hook(module, args):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt

    net[1].register_forward_pre_hook(hook)
    with pytest.raises(KeyboardInterrupt):
        train(net, data, None, cfg(), run_dir=tmp_path)
    stop = StopFlag()

    def interrupt(info):
        raise KeyboardInterrupt  # a second one (a stop is already requested) would propagate

    res = train(dropout_net(), data, None, cfg(), run_dir=tmp_path / "b", on_step=interrupt, stop=stop)
    assert stop.requested and not res.complete
