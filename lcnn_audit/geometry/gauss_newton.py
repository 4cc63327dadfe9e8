"""Exact input-Hessian spectra of piecewise-linear classifiers.

For a network that is piecewise linear in its input (ReLU, max-pool, eval-mode BN,
conv, linear), the logits are locally affine, so the input Hessian of the cross-entropy
is exactly its Gauss-Newton part (GUIDE §3; Guo et al., Lemma 3.2):

    H = Jᵀ A J,   A = diag(p) − ppᵀ = S Sᵀ,   S = (I − p1ᵀ) diag(√p),

with p the softmax and J the logit Jacobian. The nonzero spectrum of H equals that of the
C×C matrix M = Sᵀ (J Jᵀ) S, so all eigenvalues, ‖H‖_F and the top eigenvector follow
exactly from one forward pass and C backward passes. The logit target has H = 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .jacobian import jacobian_measures

#: Leaf modules under which a network stays piecewise linear in its input.
PIECEWISE_LINEAR = (
    nn.Linear, nn.Bilinear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.Hardtanh, nn.Hardsigmoid, nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d,
    nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.Flatten, nn.Unflatten,
    nn.Dropout, nn.Dropout2d, nn.Identity, nn.ZeroPad2d, nn.ConstantPad2d,
)


def is_piecewise_linear(model: nn.Module) -> bool:
    """Structural check: every leaf module is piecewise linear (eval mode assumed).

    Functional non-linearities inside ``forward`` are invisible here, so callers verify
    numerically too (see ``measures``)."""
    from ..loading import Normalize  # noqa: PLC0415

    for name, m in model.named_modules():
        if ".parametrizations." in f".{name}.":
            continue  # weight transforms (e.g. spectral norm) act on parameters, not on the input
        if len(list(m.children())) == 0 and not isinstance(m, (*PIECEWISE_LINEAR, Normalize)):
            return False
    return True


def has_maxpool(model: nn.Module) -> bool:
    return any(isinstance(m, (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AdaptiveMaxPool2d)) for m in model.modules())


def has_relu(model: nn.Module) -> bool:
    return any(isinstance(m, (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.Hardtanh, nn.PReLU)) for m in model.modules())


@dataclass
class GaussNewtonSpectrum:
    eigs: torch.Tensor  # (B, C) eigenvalues of H, |λ| descending (rest of the spectrum is 0)
    fro: torch.Tensor  # (B,) ‖H‖_F
    top_vector: torch.Tensor  # (B, d)
    jacobian_fro: torch.Tensor  # (B,)
    cross_lipschitz: torch.Tensor  # (B,) ν²


def gauss_newton_spectrum(J: torch.Tensor, logits: torch.Tensor, target: str = "loss") -> GaussNewtonSpectrum:
    """Exact spectrum of H = JᵀAJ from the Jacobian J (B, C, d) and the logits (B, C)."""
    B, C, d = J.shape
    Jd = J.double()
    G = Jd @ Jd.transpose(1, 2)  # (B, C, C)
    jf, nu = jacobian_measures(J)
    if target != "loss":
        z = torch.zeros(B, device=J.device, dtype=torch.float64)
        return GaussNewtonSpectrum(torch.zeros(B, C, device=J.device, dtype=torch.float64), z,
                                   torch.zeros(B, d, device=J.device, dtype=J.dtype), jf, nu)
    p = torch.softmax(logits.double(), 1)
    sq = p.sqrt()
    S = (torch.eye(C, device=J.device, dtype=torch.float64)[None] - p[:, :, None]) * sq[:, None, :]
    M = S.transpose(1, 2) @ G @ S
    M = 0.5 * (M + M.transpose(1, 2))
    lam, W = torch.linalg.eigh(M)
    order = lam.abs().argsort(1, descending=True)
    lam = lam.gather(1, order)
    W = W.gather(2, order[:, None, :].expand_as(W))
    u = torch.einsum("bcd,bc->bd", Jd, torch.einsum("bij,bj->bi", S, W[:, :, 0]))
    u = u / u.norm(dim=1, keepdim=True).clamp_min(1e-300)
    fro = lam.pow(2).sum(1).sqrt()
    return GaussNewtonSpectrum(lam, fro, u.to(J.dtype), jf, nu)


def gauss_newton_hvp(J: torch.Tensor, logits: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """JᵀAJ v per sample (for verifying that a model is piecewise linear)."""
    p = torch.softmax(logits.double(), 1)
    Jv = torch.einsum("bcd,bd->bc", J.double(), v.double())
    AJv = p * Jv - p * (p * Jv).sum(1, keepdim=True)
    return torch.einsum("bcd,bc->bd", J.double(), AJv).to(v.dtype)
