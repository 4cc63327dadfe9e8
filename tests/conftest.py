import random

import numpy as np
import pytest
import torch
from torch import nn


def pytest_configure(config):
    # one intra-op thread: on 2 shared cores, torch's default of 2 threads per process made small
    # ops up to 40x slower whenever anything else ran (measured); subprocess tests set OMP_NUM_THREADS
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    random.seed(0)
    np.random.seed(0)
    yield


def softplus_cnn(side: int = 8, beta: float = 5.0, classes: int = 10, seed: int = 0) -> nn.Module:
    """A small smooth CNN (random init) whose input Hessian is well defined everywhere."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.Softplus(beta), nn.Conv2d(8, 8, 3, padding=1, stride=2), nn.Softplus(beta),
        nn.Flatten(), nn.Linear(8 * (side // 2) ** 2, classes),
    ).eval()


def relu_cnn(side: int = 8, classes: int = 10, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(6 * (side // 2) ** 2, classes),
    ).eval()


@pytest.fixture
def tensor_file(tmp_path):
    x = torch.rand(20, 1, 8, 8)
    y = torch.randint(0, 10, (20,))
    path = tmp_path / "data.pt"
    torch.save({"x": x, "y": y}, path)
    return path
