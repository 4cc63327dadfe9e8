"""Models that mask gradients in known ways, built on the bundled demo CNN, and reference attacks.

Each wraps the demo classifier as ``nn.Sequential(pre=<preprocessing>, net=<demo>)`` (or
scales its logits), so ``--bpda pre`` names the preprocessing. Used by
``tests/attacks/test_masking.py`` and ``benchmarks/masking_table.py``.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from lcnn_audit.attacks.base import flat_norm, project


class Quantise(nn.Module):
    """8-level input quantisation ``round(7x)/7``: zero gradient almost everywhere."""

    def forward(self, x):
        return torch.round(x * 7) / 7


class JpegLike(nn.Module):
    """A JPEG-like op without a straight-through estimator: 4×4 block DCT, coefficients rounded
    to a step of ``q``, inverse DCT. Its gradient is zero almost everywhere."""

    def __init__(self, q: float = 0.1, block: int = 4):
        super().__init__()
        n = block
        k = torch.arange(n, dtype=torch.float64)
        basis = torch.cos(torch.pi * (2 * k.view(1, -1) + 1) * k.view(-1, 1) / (2 * n)) * (2 / n) ** 0.5
        basis[0] /= 2**0.5
        self.register_buffer("d", basis.float())  # orthonormal DCT-II
        self.q, self.block = q, block

    def forward(self, x):
        n, c, h, w = x.shape
        b = self.block
        blocks = x.view(n, c, h // b, b, w // b, b).permute(0, 1, 2, 4, 3, 5)
        coef = self.d @ blocks @ self.d.T
        coef = torch.round(coef / self.q) * self.q
        out = self.d.T @ coef @ self.d
        return out.permute(0, 1, 2, 4, 3, 5).reshape(n, c, h, w)


class Shatter(nn.Module):
    """Shattered gradients: ``x + a·sin(w·x)`` — nearly the identity forward, a gradient
    ``1 + a·w·cos(w·x)`` dominated by a useless oscillation when ``a·w ≫ 1``."""

    def __init__(self, a: float = 0.002, w: float = 10000.0):
        super().__init__()
        self.a, self.w = a, w

    def forward(self, x):
        return x + self.a * torch.sin(self.w * x)


class Noise(nn.Module):
    """Gaussian input noise at every forward pass (a randomised defence)."""

    def __init__(self, sigma: float = 0.2):
        super().__init__()
        self.sigma = sigma

    def forward(self, x):
        return x + self.sigma * torch.randn_like(x)


class Scale(nn.Module):
    def __init__(self, s: float):
        super().__init__()
        self.s = s

    def forward(self, z):
        return z * self.s


def wrap(net: nn.Module, pre: nn.Module) -> nn.Module:
    return nn.Sequential(OrderedDict(pre=pre, net=net)).eval()


def saturated(net: nn.Module, s: float = 1e4) -> nn.Module:
    """Logits scaled by ``s``: the softmax saturates and the cross-entropy gradient underflows to 0."""
    return nn.Sequential(OrderedDict(net=net, scale=Scale(s))).eval()


def masking_models(net: nn.Module) -> dict[str, tuple[nn.Module, dict]]:
    """name -> (model, the counter options the audit needs for it)."""
    return {
        "quantise-8": (wrap(net, Quantise()), {"bpda": ("pre",)}),
        "saturated-logits": (saturated(net), {}),
        "random-noise": (wrap(net, Noise()), {"eot": 8}),
        "jpeg-like": (wrap(net, JpegLike()), {"bpda": ("pre",)}),
        "shattered": (wrap(net, Shatter()), {"bpda": ("pre",)}),
    }


def reference_attack(model: nn.Module, x, y, norm: str, eps: float, steps: int, *, bpda_pre: bool = False,
                     eot: int = 1, margin: bool = False) -> torch.Tensor:
    """A plain reference PGD written independently of the package's attack loop: BPDA via a
    straight-through preprocessing, EOT by averaging ``eot`` gradients (and logits), an
    optional margin loss, clean start; keeps the best iterate (misclassified by the averaged
    logits, else highest loss) and returns whether each sample is robust, judged by one
    fresh forward pass of that iterate."""
    alpha = 2.5 * eps / steps

    def forward(z):
        if bpda_pre:
            return model.net(z + (model.pre(z) - z).detach())
        return model(z)

    def loss_fn(logits):
        if margin:
            true = logits.gather(1, y.view(-1, 1)).squeeze(1)
            other = logits.scatter(1, y.view(-1, 1), float("-inf")).amax(dim=1)
            return other - true
        return F.cross_entropy(logits, y, reduction="none")

    delta = torch.zeros_like(x)
    best_x, best_adv = x.clone(), torch.zeros(len(y), dtype=torch.bool)
    best_loss = torch.full((len(y),), float("-inf"))
    for _ in range(steps + 1):
        xa = (x + delta).clamp(0, 1)
        grad, logits = torch.zeros_like(x), 0.0
        for _ in range(eot):
            z = xa.detach().requires_grad_(True)
            out = forward(z)
            (gi,) = torch.autograd.grad(loss_fn(out).sum(), z)
            grad, logits = grad + gi / eot, logits + out.detach() / eot
        adv, loss = logits.argmax(1) != y, loss_fn(logits)
        better = (adv & ~best_adv) | ((adv == best_adv) & (loss > best_loss))
        best_x[better], best_adv[better], best_loss[better] = xa[better], adv[better], loss[better]
        step = grad.sign() if norm == "linf" else grad / flat_norm(grad, "l2").clamp_min(1e-12).view(-1, 1, 1, 1)
        delta = project(x, delta + alpha * step, norm, eps)
    with torch.no_grad():
        correct = model(x).argmax(1) == y
        return correct & (model(best_x).argmax(1) == y)
