"""The W/σ(W) node of conv spectral normalisation (`_DivideBySigma`) against plain autograd.

σ = uᵀ conv(v; W) is linear in W, so its gradient G = ∂σ/∂W carries all of σ's dependence on W
and ∂L/∂W = (g − (Σ g⊙W/σ)·G)/σ. The oracle is autograd through the composite ``W / σ(W)``
with the same singular vectors, in float64, and torch's gradcheck of the whole parametrisation.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from lcnn_audit.layers.spectral import spectral_norm_conv

CASES = [
    (nn.Conv2d, dict(in_channels=3, out_channels=5, kernel_size=3, padding=1), (3, 7, 7)),
    (nn.Conv2d, dict(in_channels=3, out_channels=4, kernel_size=3, stride=2, padding=1), (3, 8, 8)),
    (nn.Conv2d, dict(in_channels=4, out_channels=4, kernel_size=3, padding="same", groups=2), (4, 6, 6)),
    (nn.Conv2d, dict(in_channels=2, out_channels=3, kernel_size=3, padding=1, padding_mode="reflect"), (2, 6, 6)),
    (nn.Conv1d, dict(in_channels=2, out_channels=3, kernel_size=3, padding=1), (2, 9)),
    (nn.Conv3d, dict(in_channels=1, out_channels=2, kernel_size=2), (1, 4, 4, 4)),
]


def _layer(cls, kw, shape):
    torch.manual_seed(0)
    conv = cls(**kw).double()
    spectral_norm_conv(conv, shape)
    return conv


def _composite(conv):
    """The normalised weight as plain autograd ops on the raw weight, same u and v."""
    par = conv.parametrizations.weight[0]
    w = conv.parametrizations.weight.original
    sigma = torch.sum(par._u.clone() * par.geometry.apply(par._v.clone(), w))
    return w / sigma


@pytest.mark.parametrize(("cls", "kw", "shape"), CASES)
def test_weight_gradient_equals_autograd_of_the_composite(cls, kw, shape):
    conv = _layer(cls, kw, shape)
    conv.eval()  # no power step: both sides see the same u, v
    ref = copy.deepcopy(conv)
    x = torch.randn(3, *shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    target = torch.randn_like(conv(x))
    (conv(x) * target).sum().backward()
    w_ref = _composite(ref)
    (ref._conv_forward(x, w_ref, ref.bias) * target).sum().backward()
    got = conv.parametrizations.weight.original.grad
    want = ref.parametrizations.weight.original.grad
    assert torch.allclose(got, want, rtol=1e-12, atol=1e-14 * want.abs().max())
    assert torch.equal(conv.weight.detach(), w_ref.detach())  # the forward value is unchanged, bit for bit


def test_gradcheck_of_the_whole_parametrisation():
    conv = _layer(nn.Conv2d, dict(in_channels=2, out_channels=3, kernel_size=3, stride=2, padding=1), (2, 5, 5))
    par = conv.parametrizations.weight[0].eval()
    w = conv.parametrizations.weight.original.detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(par, (w,))


def test_train_mode_gradient_matches_after_the_same_power_step():
    conv = _layer(nn.Conv2d, dict(in_channels=3, out_channels=4, kernel_size=3, padding=1), (3, 6, 6))
    ref = copy.deepcopy(conv)
    conv.train()
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    conv(x).square().sum().backward()  # one power step, then W/σ through the node
    par = ref.parametrizations.weight[0]
    par._power_method(ref.parametrizations.weight.original.detach(), 1)
    ref._conv_forward(x, _composite(ref), ref.bias).square().sum().backward()
    got, want = conv.parametrizations.weight.original.grad, ref.parametrizations.weight.original.grad
    assert torch.allclose(got, want, rtol=1e-12, atol=1e-14 * want.abs().max())


def test_no_grad_and_frozen_weights_take_the_plain_path_with_the_same_value():
    conv = _layer(nn.Conv2d, dict(in_channels=2, out_channels=2, kernel_size=3, padding=1), (2, 5, 5)).eval()
    with_grad = conv.weight
    assert with_grad.grad_fn is not None and "DivideBySigma" in type(with_grad.grad_fn).__name__
    with torch.no_grad():
        plain = conv.weight
    assert torch.equal(with_grad.detach(), plain)


def test_second_derivative_in_the_weights_is_refused_not_wrong():
    conv = _layer(nn.Conv2d, dict(in_channels=2, out_channels=2, kernel_size=3, padding=1), (2, 5, 5)).eval()
    w = conv.parametrizations.weight.original
    x = torch.randn(1, 2, 5, 5, dtype=torch.float64)
    (g,) = torch.autograd.grad(conv(x).square().sum(), w, create_graph=True)
    # torch reports the refused second derivative as an unreachable input (or, elsewhere, as once_differentiable)
    with pytest.raises(RuntimeError, match="once_differentiable|not have been used in the graph"):
        torch.autograd.grad(g.sum(), w)


def test_input_gradient_penalties_still_differentiate_through_the_layer():
    """GradReg-style double backward in x (first order in W) goes through the node."""
    conv = _layer(nn.Conv2d, dict(in_channels=2, out_channels=3, kernel_size=3, padding=1), (2, 5, 5)).eval()
    ref = copy.deepcopy(conv)
    x = torch.randn(2, 2, 5, 5, dtype=torch.float64, requires_grad=True)
    for layer, weight_of in ((conv, lambda m: m.weight), (ref, _composite)):
        out = layer._conv_forward(x, weight_of(layer), layer.bias)
        (gx,) = torch.autograd.grad(torch.tanh(out).sum(), x, create_graph=True)
        gx.square().sum().backward()
    got, want = conv.parametrizations.weight.original.grad, ref.parametrizations.weight.original.grad
    assert torch.allclose(got, want, rtol=1e-12, atol=1e-14 * want.abs().max())
