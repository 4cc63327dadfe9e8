"""Reproducibility and interruption for long runs: global RNG states, seeding, SIGINT.

A training checkpoint stores :func:`rng_state` so that a resumed run draws exactly the
random numbers the uninterrupted run would have drawn; :func:`sigint_to` turns the first
Ctrl-C into a stop request that the loop honours after the current step.
"""

from __future__ import annotations

import contextlib
import random
import signal
import threading
from collections.abc import Iterator

import numpy as np
import torch


class StopFlag:
    """Set by Ctrl-C (or by ``request()``); the loop checkpoints and returns after the step."""

    def __init__(self) -> None:
        self.requested = False

    def request(self) -> None:
        """Ask the loop to stop after the current step."""
        self.requested = True


def rng_state() -> dict:
    """The global RNG states (torch, CUDA, python, numpy)."""
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": random.getstate(),
        "numpy": {"name": np_state[0], "keys": torch.from_numpy(np_state[1].astype(np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]), "cached": float(np_state[4])},
    }


def set_rng_state(state: dict) -> None:
    """Restore the states of :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))


def seed_everything(seed: int) -> None:
    """Seed the global generators (torch, CUDA, python, numpy) at the start of a fresh run."""
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)


@contextlib.contextmanager
def sigint_to(stop: StopFlag) -> Iterator[None]:
    """While active, the first SIGINT sets ``stop``; a second one raises KeyboardInterrupt."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        if stop.requested:
            signal.signal(signal.SIGINT, previous)
            raise KeyboardInterrupt
        stop.request()

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def deterministic_kernels(on: bool) -> Iterator[None]:
    """With ``on``, deterministic cuDNN (no benchmark autotuning) inside the block."""
    old = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    if on:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = old
