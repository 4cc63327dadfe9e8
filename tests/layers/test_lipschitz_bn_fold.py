"""γ-Lipschitz batch norm folds its scale into the affine parameters: outputs, running statistics
and every gradient equal the unfolded form BN(x)·min(γ, ‖BN‖₂)/‖BN‖₂ (scale from the updated
running variance), in train and eval mode."""

import copy

import pytest
import torch
from torch import nn

from lcnn_audit.layers import LipschitzBatchNorm1d, LipschitzBatchNorm2d


def _unfolded(layer, x):
    bn = nn.modules.batchnorm._BatchNorm.forward(layer, x)  # plain batch norm with the layer's own state
    norm = layer.bn_norm().clamp_min(torch.finfo(x.dtype).tiny)
    return bn * (torch.minimum(layer.gamma.to(norm.dtype), norm) / norm)


@pytest.mark.parametrize("cls,shape", [(LipschitzBatchNorm2d, (8, 5, 4, 4)), (LipschitzBatchNorm1d, (8, 5))])
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("gamma", [1.2, 30.0])  # the cap active, and not
def test_folded_scale_matches_unfolded(cls, shape, affine, train, gamma):
    torch.manual_seed(0)
    layer = cls(shape[1], affine=affine, gamma_init=gamma).double()
    with torch.no_grad():
        layer.running_var.uniform_(0.5, 2.0)
        layer.running_mean.normal_()
        if affine:
            layer.weight.uniform_(0.5, 3.0)
            layer.bias.normal_()
    ref = copy.deepcopy(layer)
    layer.train(train)
    ref.train(train)
    x = (torch.randn(shape, dtype=torch.float64) * 2 + 1).requires_grad_(True)
    x2 = x.detach().clone().requires_grad_(True)
    y, y_ref = layer(x), _unfolded(ref, x2)
    torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        torch.testing.assert_close(getattr(layer, name), getattr(ref, name))
    w = torch.randn_like(y)
    (y * w).sum().backward()
    (y_ref * w).sum().backward()
    torch.testing.assert_close(x.grad, x2.grad, rtol=1e-10, atol=1e-12)
    for (n, p), (_, q) in zip(layer.named_parameters(), ref.named_parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-10, atol=1e-12, msg=n)
