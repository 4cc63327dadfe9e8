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

from ..model.wrapper import Normalize
from ..nn_kinds import MAX_POOLS, NONLINEAR, PIECEWISE_LINEAR, RELU_FAMILY
from .jacobian import jacobian_measures

_NOT_PIECEWISE_LINEAR = tuple(t for t in NONLINEAR if t not in PIECEWISE_LINEAR)


def is_piecewise_linear(model: nn.Module) -> bool:
    """Structural check: every leaf module is piecewise linear (eval mode assumed).

    Functional non-linearities inside ``forward`` are invisible here, so callers verify
    numerically too (see ``measures``)."""
    for name, m in model.named_modules():
        if ".parametrizations." in f".{name}.":
            continue  # weight transforms (e.g. spectral norm) act on parameters, not on the input
        if isinstance(m, _NOT_PIECEWISE_LINEAR):
            return False  # also when it has children (MultiheadAttention holds a Linear)
        if len(list(m.children())) == 0 and not isinstance(m, (*PIECEWISE_LINEAR, Normalize)):
            return False
    return True


def has_maxpool(model: nn.Module) -> bool:
    """Whether any module is a max-pool (:data:`lcnn_audit.nn_kinds.MAX_POOLS`)."""
    return any(isinstance(m, MAX_POOLS) for m in model.modules())


def has_relu(model: nn.Module) -> bool:
    """Whether any module is in :data:`lcnn_audit.nn_kinds.RELU_FAMILY`."""
    return any(isinstance(m, RELU_FAMILY) for m in model.modules())


@dataclass
class GaussNewtonSpectrum:
    """Exact spectrum of H = Jᵀ A J per sample, from the C×C matrix Sᵀ(J Jᵀ)S (A = S Sᵀ)."""

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
