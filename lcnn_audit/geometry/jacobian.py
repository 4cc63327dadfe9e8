"""Logit Jacobians and the measures of Guo et al. built on them.

J ∈ R^{C×d} is the Jacobian of the C logits gᵢ with respect to the input. Guo et al.,
*On Connections between Regularizations for Improving DNN Robustness*, compare the
Jacobian (Lipschitz) regulariser ‖J‖_F² with the cross-Lipschitz constant

    ν² = Σᵢⱼ ‖∇gᵢ − ∇gⱼ‖² / K²  =  (2/K) (‖J‖_F² − ‖Jᵀ1‖²/K)  =  (2/K) ‖P J‖_F²,

with P = I − 11ᵀ/K the centring projector (the identity follows by expanding the square).
"""

from __future__ import annotations

import torch


def logit_jacobian(x_req: torch.Tensor, logits: torch.Tensor, chunk: int = 16) -> torch.Tensor:
    """Exact J for every sample, shape (B, C, d), from C vector-Jacobian products.

    The VJPs run vectorised (``is_grads_batched``) ``chunk`` classes at a time; the graph
    from ``x_req`` to ``logits`` must be alive (retain_graph is used).
    """
    B, C = logits.shape
    eye = torch.eye(C, device=logits.device, dtype=logits.dtype)
    rows = []
    for lo in range(0, C, chunk):
        e = eye[lo : lo + chunk]  # (k, C)
        go = e[:, None, :].expand(len(e), B, C)
        try:
            (g,) = torch.autograd.grad(logits, x_req, grad_outputs=go, retain_graph=True, is_grads_batched=True)
        except RuntimeError:  # an op without a batching rule: fall back to one VJP per class
            g = torch.stack([torch.autograd.grad(logits, x_req, grad_outputs=go[i], retain_graph=True)[0]
                             for i in range(len(e))])
        rows.append(g.flatten(2).transpose(0, 1))  # (B, k, d)
    return torch.cat(rows, 1).detach()


def jacobian_measures(J: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(‖J‖_F, ν²) per sample from an exact Jacobian (B, C, d)."""
    C = J.shape[1]
    fro_sq = J.double().pow(2).sum((1, 2))
    col_sum_sq = J.double().sum(1).pow(2).sum(1)
    nu_sq = (2.0 / C) * (fro_sq - col_sum_sq / C)
    return fro_sq.sqrt(), nu_sq.clamp_min(0)


def jacobian_measures_estimate(x_req: torch.Tensor, logits: torch.Tensor, probes: torch.Tensor,
                               chunk: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Unbiased Hutchinson estimates of (‖J‖_F², ν²) from probes u (P, B, C), E[uuᵀ] = I:
    E‖Jᵀu‖² = ‖J‖_F² and E‖JᵀPu‖² = ‖PJ‖_F². Returns (‖J‖_F estimate, ν² estimate)."""
    P, B, C = probes.shape
    centred = probes - probes.mean(2, keepdim=True)
    both = torch.cat([probes, centred]).to(logits.dtype)
    sq = []
    for lo in range(0, len(both), chunk):
        (g,) = torch.autograd.grad(logits, x_req, grad_outputs=both[lo : lo + chunk], retain_graph=True,
                                   is_grads_batched=True)
        sq.append(g.flatten(2).double().pow(2).sum(2))
    sq = torch.cat(sq)  # (2P, B)
    fro_sq = sq[:P].mean(0)
    nu_sq = (2.0 / C) * sq[P:].mean(0)
    return fro_sq.sqrt(), nu_sq
