"""Small built-in architectures, addressable by name with ``--arch``.

They serve the bundled demo model and the Fashion-MNIST reproduction (issue #7); any
torchvision model or user factory works the same way through :mod:`lcnn_audit.model.arch`.
"""

from __future__ import annotations

from torch import nn

ACTIVATIONS = {
    "relu": lambda beta: nn.ReLU(),
    "softplus": lambda beta: nn.Softplus(beta=beta),
    "gelu": lambda beta: nn.GELU(),
    "silu": lambda beta: nn.SiLU(),
}

POOLS = {"max": nn.MaxPool2d, "avg": nn.AvgPool2d}


class SmallCNN(nn.Sequential):
    """4 conv layers (BN + activation, max-pool after the 2nd and 4th), then one linear layer.

    ``act`` is one of ``relu``, ``softplus`` (with ``beta``; the LCNN paper's "standard"
    baseline uses softplus with beta = 1000), ``gelu``, ``silu``. ``pool="avg"`` pools by
    averaging, which keeps a smooth net twice differentiable (Proposition 1's assumption).
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: int = 32, input_size: int = 28,  # noqa: PLR0917 - public architecture constructor (arch_kwargs or positional)
                 act: str = "relu", beta: float = 1000.0, bn: bool = True, pool: str = "max"):
        if act not in ACTIVATIONS:
            raise ValueError(f"unknown act {act!r}; use one of {', '.join(ACTIVATIONS)}")
        if pool not in POOLS:
            raise ValueError(f"unknown pool {pool!r}; use one of {', '.join(POOLS)}")
        layers: list[nn.Module] = []
        chans = [in_channels, width, width, 2 * width, 2 * width]
        for i in range(4):
            layers.append(nn.Conv2d(chans[i], chans[i + 1], 3, padding=1, bias=not bn))
            if bn:
                layers.append(nn.BatchNorm2d(chans[i + 1]))
            layers.append(ACTIVATIONS[act](beta))
            if i in (1, 3):
                layers.append(POOLS[pool](2))
        side = input_size // 4
        layers += [nn.Flatten(), nn.Linear(2 * width * side * side, num_classes)]
        super().__init__(*layers)


class MLP(nn.Sequential):
    """Flatten, then ``depth`` hidden layers with the chosen activation, then a linear head."""

    def __init__(self, in_features: int = 784, num_classes: int = 10, hidden: int = 128, depth: int = 2,  # noqa: PLR0917 - public architecture constructor (arch_kwargs or positional)
                 act: str = "relu", beta: float = 1000.0):
        layers: list[nn.Module] = [nn.Flatten()]
        d = in_features
        for _ in range(depth):
            layers += [nn.Linear(d, hidden), ACTIVATIONS[act](beta)]
            d = hidden
        layers.append(nn.Linear(d, num_classes))
        super().__init__(*layers)


#: Built-in architecture registry: name -> factory.
BUILTIN_ARCHS = {"small_cnn": SmallCNN, "mlp": MLP}
