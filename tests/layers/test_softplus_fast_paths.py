"""The speed-ups of the graph-free centred softplus paths change no result (issue #17).

* u = |βx| is clamped at 80 before exp: bit-identical to the unclamped formula;
* below fp64 the series is cut to the terms fp32 can see: within an ulp of the full series;
* the shared first-order backward equals the separate ∂/∂x and ∂/∂β formulas.
"""

from __future__ import annotations

import importlib

import pytest
import torch

cs = importlib.import_module("lcnn_audit.layers.centered_softplus")


def _unclamped_large(x, b):
    z = x * b
    return (torch.log(torch.exp(-z.abs()) * 0.5 + 0.5) + z.relu()) / b


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_exp_clamp_changes_no_bit(dtype):
    b = torch.tensor(3.0, dtype=dtype)
    u = torch.cat([torch.linspace(0.1, 200, 20001, dtype=dtype), torch.logspace(2, 30, 200, dtype=dtype)])
    x = torch.cat([u, -u]) / b
    assert torch.equal(cs._forward_value(x, b), _unclamped_large(x, b))


def _series_ref(z64, coeffs):
    w = z64 * z64
    acc = torch.zeros_like(z64)
    for c in coeffs:
        acc = acc * w + c
    return acc


def test_short_series_is_within_an_ulp_of_the_full_series():
    z = torch.linspace(-cs._TAU, cs._TAU, 100001, dtype=torch.float64)[1:-1]
    for full, short in ((cs._P_HORNER, cs._P_HORNER_SHORT), (cs._PHI_PRIME_HORNER, cs._PHI_PRIME_HORNER_SHORT)):
        ref, cut = _series_ref(z, full), _series_ref(z, short)
        if full is cs._P_HORNER:  # φ = 1/2 + z·P(z²): the error that reaches φ
            ref, cut = 0.5 + z * ref, 0.5 + z * cut
        rel = ((cut - ref).abs() / ref.abs()).max()
        assert rel < 0.2 * torch.finfo(torch.float32).eps / 2, float(rel)
    assert cs._series_coeffs(torch.float64) == (cs._P_HORNER, cs._PHI_PRIME_HORNER)
    assert cs._series_coeffs(torch.float32) == (cs._P_HORNER_SHORT, cs._PHI_PRIME_HORNER_SHORT)


@pytest.mark.parametrize("b", [1e-4, 0.3, 5.0, 1000.0])
def test_fp32_graph_free_paths_are_as_accurate_as_rounding(b):
    """fp32 value and ∂s₀/∂β against the fp64 composite reference and fp64 closed form: the cut series
    adds no visible error (the ∂β bound is the closed form's own cancellation near |βx| = τ)."""
    g = torch.Generator().manual_seed(0)
    x64 = torch.cat([torch.randn(20000, generator=g, dtype=torch.float64) * s for s in (1e-5, 1e-3, 0.1, 1, 10)])
    x = x64.float()
    x64 = x.double()
    bt, bt64 = torch.tensor(b), torch.tensor(b, dtype=torch.float64)
    val = cs._forward_value(x, bt).double()
    ref = cs.centered_softplus_composite(x64, bt64)
    assert float(((val - ref).abs() / ref.abs().clamp_min(1e-300)).max()) < 2e-6
    small = (x64 * bt64).abs() < cs._TAU
    d = cs._dbeta_graph_free(x, bt).double()
    d_ref = cs._dbeta_graph_free(x64, bt64)
    rel = (d - d_ref).abs() / d_ref.abs().clamp_min(1e-300)
    assert float(rel[small].max()) < 1e-6  # series branch: rounding only
    assert float(rel.max()) < 1e-4


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shared_backward_equals_separate_formulas(dtype):
    g = torch.Generator().manual_seed(1)
    x = (torch.randn(4, 3, 8, 8, generator=g, dtype=torch.float64) * 0.05).to(dtype)
    grad = torch.randn(x.shape, generator=g, dtype=torch.float64).to(dtype)
    b = torch.tensor(1000.0, dtype=dtype)
    gx, d = cs._grads_graph_free(x, b, grad, True, True)
    torch.testing.assert_close(gx, grad * torch.sigmoid(x * b), rtol=0, atol=0)
    torch.testing.assert_close(d, cs._dbeta_differentiable(x, b), rtol=1e-5 if dtype == torch.float32 else 1e-12,
                               atol=0)
    assert cs._grads_graph_free(x, b, grad, True, False)[1] is None
    assert cs._grads_graph_free(x, b, None, False, True)[0] is None
