"""The fused centred softplus (one autograd.Function) against the composite reference op,
to second order: gradcheck/gradgradcheck in fp64, and equality of values, gradients, input
HVPs and GradReg/CURE training gradients on a converted LCNN."""

import pytest
import torch
from torch import nn

from lcnn_audit.layers import CenteredSoftplus, centered_softplus
from lcnn_audit.layers.centered_softplus import centered_softplus_composite
from lcnn_audit.penalties import PenaltyBatch, cure_penalty, gradreg_penalty


def _x(n=200, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    # both numerical branches: |βx| < 0.1 (series for ∂/∂β) and beyond, and large |x|
    x = torch.cat([torch.randn(n, generator=g, dtype=dtype) * 3, torch.randn(n, generator=g, dtype=dtype) * 1e-2,
                   torch.tensor([0.0, 30.0, -30.0, 1e3, -1e3], dtype=dtype)])
    return x.requires_grad_(True)


@pytest.mark.parametrize("b", [1e-3, 0.05, 0.7, 5.0, 40.0])
def test_fused_gradcheck_and_gradgradcheck_fp64(b):
    x = (torch.randn(30, dtype=torch.float64) * 2).requires_grad_(True)
    beta = torch.tensor(b, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(centered_softplus, (x, beta))
    assert torch.autograd.gradgradcheck(centered_softplus, (x, beta))


def test_fused_gradgradcheck_per_channel_beta():
    x = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    beta = torch.tensor([0.02, 1.0, 8.0], dtype=torch.float64).view(3, 1).requires_grad_(True)
    assert torch.autograd.gradcheck(centered_softplus, (x, beta))
    assert torch.autograd.gradgradcheck(centered_softplus, (x, beta))


def _derivatives(fn, dtype, b):
    """value, ∂/∂x, ∂/∂β, ∂²/∂x² (diagonal), ∂²/∂x∂β, ∂²/∂β² of Σ wᵢ s₀(xᵢ; β)."""
    x = _x(dtype=dtype)
    beta = torch.tensor(b, dtype=dtype, requires_grad=True)
    y = fn(x, beta)
    w = torch.linspace(-1, 1, len(y), dtype=dtype)
    gx, gb = torch.autograd.grad((w * y).sum(), (x, beta), create_graph=True)
    hxx, hxb = torch.autograd.grad(gx.sum(), (x, beta), retain_graph=True)
    (hbb,) = torch.autograd.grad(gb, beta)
    return [t.detach().double() for t in (y, gx, gb, hxx, hxb, hbb)]


NAMES = ("value", "dx", "dbeta", "dxx", "dxdbeta", "dbetabeta")


@pytest.mark.parametrize("b", [1e-4, 0.3, 5.0, 1000.0])
def test_fused_matches_composite_to_second_order_fp64(b):
    fused, ref = _derivatives(centered_softplus, torch.float64, b), _derivatives(centered_softplus_composite,
                                                                               torch.float64, b)
    for name, a, r in zip(NAMES, fused, ref, strict=True):
        # the ∂/∂β terms are sums in which both ops cancel near |βx| = 0.1 (the composite more: against
        # 50-digit mpmath at x = 1e3, β = 1e-4 its ∂²/∂β² is off by 1.8e-11, the fused op's by 8e-13)
        rtol = 1e-12 if name in ("value", "dx", "dxx") else 1e-9
        torch.testing.assert_close(a, r, rtol=rtol, atol=1e-14 * float(r.abs().max()), msg=name)


@pytest.mark.parametrize("b", [1e-4, 0.3, 5.0, 1000.0])
def test_fused_fp32_is_at_least_as_accurate_as_composite(b):
    """fp32 errors against the fp64 reference: the fused op loses no accuracy on any derivative."""
    ref = _derivatives(centered_softplus_composite, torch.float64, b)
    fused = _derivatives(centered_softplus, torch.float32, b)
    comp = _derivatives(centered_softplus_composite, torch.float32, b)
    for name, r, f, c in zip(NAMES, ref, fused, comp, strict=True):
        scale = float(r.abs().max())
        err_f = float((f - r).abs().max()) / scale
        err_c = float((c - r).abs().max()) / scale
        assert err_f <= max(2 * err_c, 1e-6), (name, err_f, err_c)


def _lcnn(seed=0):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), CenteredSoftplus(3.0), nn.Conv2d(4, 4, 3, stride=2, padding=1),
                        CenteredSoftplus(0.4), nn.Flatten(), nn.Linear(4 * 4 * 4, 5)).double()
    return net


def _with_composite(monkeypatch):
    monkeypatch.setattr(CenteredSoftplus, "forward", lambda self, x: centered_softplus_composite(x, self.beta))


def _input_hvp(net, x, y, v):
    x = x.clone().requires_grad_(True)
    loss = nn.functional.cross_entropy(net(x), y, reduction="sum")
    (g,) = torch.autograd.grad(loss, x, create_graph=True)
    (hv,) = torch.autograd.grad(g, x, grad_outputs=v)
    return g.detach(), hv


def test_fused_input_hvp_and_penalty_gradients_match_composite(monkeypatch):
    net = _lcnn()
    x = torch.rand(6, 1, 8, 8, dtype=torch.float64)
    y = torch.randint(0, 5, (6,))
    v = torch.randn_like(x)

    def run():
        g, hv = _input_hvp(net, x, y, v)
        grads = {}
        for name, pen in (("gradreg", lambda b: gradreg_penalty(b, weight=1.0)),
                          ("cure", lambda b: cure_penalty(b, weight=1.0, h=0.3))):
            net.zero_grad()
            batch = PenaltyBatch(net, x, y)
            (batch.loss + pen(batch)).backward()  # double backward into the weights and the β's
            grads[name] = [p.grad.clone() for p in net.parameters()]
        return g, hv, grads

    fused = run()
    _with_composite(monkeypatch)
    ref = run()
    torch.testing.assert_close(fused[0], ref[0], rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(fused[1], ref[1], rtol=1e-10, atol=1e-12)
    for name in ("gradreg", "cure"):
        for a, r in zip(fused[2][name], ref[2][name], strict=True):
            torch.testing.assert_close(a, r, rtol=1e-10, atol=1e-12)


def test_fused_hvp_matches_exact_hessian():
    """Independent oracle: the dense fp64 Hessian of the composite op by torch.func."""
    net = _lcnn(1)
    x = torch.rand(1, 1, 8, 8, dtype=torch.float64)
    y = torch.tensor([2])
    v = torch.randn_like(x)
    _, hv = _input_hvp(net, x, y, v)

    def f(xx):
        h = xx
        for m in net:
            h = centered_softplus_composite(h, m.beta) if isinstance(m, CenteredSoftplus) else m(h)
        return nn.functional.cross_entropy(h, y, reduction="sum")

    H = torch.func.hessian(f)(x).reshape(64, 64)
    torch.testing.assert_close(hv.reshape(-1), H @ v.reshape(-1), rtol=1e-10, atol=1e-12)


def test_fused_is_one_autograd_node():
    x = torch.randn(10, requires_grad=True)
    y = centered_softplus(x, torch.tensor(2.0, requires_grad=True))
    assert type(y.grad_fn).__name__ == "_CenteredSoftplusFnBackward"


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("b", [1e-4, 0.3, 5.0, 1000.0])
def test_first_order_backward_paths_agree(dtype, b):
    """The first-order backward (no graph, in place) equals the differentiable one used by double backward."""
    grads = []
    for create_graph in (False, True):
        x = _x(dtype=dtype)
        beta = torch.tensor(b, dtype=dtype, requires_grad=True)
        w = torch.linspace(-1, 1, len(x), dtype=dtype)
        grads.append([g.detach() for g in torch.autograd.grad((w * centered_softplus(x, beta)).sum(), (x, beta),
                                                              create_graph=create_graph)])
    rtol = 1e-12 if dtype == torch.float64 else 1e-5
    for a, r in zip(*grads, strict=True):
        torch.testing.assert_close(a, r, rtol=rtol, atol=0.0)


def test_compiled_kernels_fall_back_with_a_reason(monkeypatch):
    from lcnn_audit.layers import softplus_kernels as sk

    def broken(*a):
        raise OSError("no C++ compiler found")

    sk._compile.cache_clear()
    monkeypatch.setattr(sk, "_compile", lambda device_type: sk.SoftplusKernels(broken, broken, broken))
    kernels, reason = sk.compiled_kernels("cpu")
    assert kernels is None and "torch.compile failed" in reason and "no C++ compiler" in reason
    wrong = sk.SoftplusKernels(lambda x, b: x, sk._grad_x, sk._grad_beta)  # eager but wrong: must be refused
    monkeypatch.setattr(sk, "_compile", lambda device_type: wrong)
    kernels, reason = sk.compiled_kernels("cpu")
    assert kernels is None and "disagree" in reason


def test_train_records_the_kernels_it_used(monkeypatch):
    from lcnn_audit.data import load_data
    from lcnn_audit.layers import softplus_kernels as sk
    from lcnn_audit.training import TrainConfig, init_model, train

    eager = sk.SoftplusKernels(sk._forward, sk._grad_x, sk._grad_beta)  # uncompiled: same maths, no compile time
    monkeypatch.setattr(sk, "_compile", lambda device_type: eager)
    model = init_model("small_cnn", {"width": 4}, dataset="fashion-mnist", convert=True, input_shape=(1, 28, 28))
    data = load_data("demo", "train", n=16)
    cfg = TrainConfig(epochs=1, batch_size=8, curvature_n=0, penalties=__import__(
        "lcnn_audit.penalties", fromlist=["PenaltyConfig"]).PenaltyConfig(lambda_beta=1e-4, gradreg=1e-3))
    res = train(model, data, None, cfg, compile_kernels=True, handle_sigint=False)
    assert res.summary["kernels"] == "compiled"
    assert all(m.kernels is None for m in model.modules() if isinstance(m, CenteredSoftplus))  # restored
    assert train(model, data, None, cfg, handle_sigint=False).summary["kernels"] == "eager"


def test_kernel_functions_match_eager_paths():
    """The functions handed to torch.compile compute what the eager graph-free paths do."""
    import importlib

    sk = importlib.import_module("lcnn_audit.layers.softplus_kernels")
    cs = importlib.import_module("lcnn_audit.layers.centered_softplus")
    for dtype, rtol in ((torch.float64, 1e-12), (torch.float32, 1e-5)):
        x = _x(dtype=dtype).detach()
        grad = torch.randn_like(x)
        for b in (1e-4, 0.3, 5.0, 1000.0):
            bt = torch.tensor(b, dtype=dtype)
            torch.testing.assert_close(sk._forward(x, bt), cs._forward_value(x, bt), rtol=rtol, atol=0.0)
            torch.testing.assert_close(sk._grad_x(x, bt, grad), torch.sigmoid(x * bt) * grad, rtol=rtol, atol=0.0)
            ref = torch.dot(grad, cs._dbeta_graph_free(x, bt))
            torch.testing.assert_close(sk._grad_beta(x, bt, grad), ref, rtol=rtol * 10, atol=0.0)


@pytest.mark.slow
def test_compiled_kernels_compile_and_match_eager_to_second_order():
    from lcnn_audit.layers.softplus_kernels import compiled_kernels

    kernels, reason = compiled_kernels("cpu")
    if kernels is None:
        pytest.skip(reason)
    net = _lcnn().float()
    x = torch.rand(6, 1, 8, 8)
    y = torch.randint(0, 5, (6,))

    def grads():
        net.zero_grad()
        batch = PenaltyBatch(net, x, y)
        (batch.loss + gradreg_penalty(batch, weight=1.0)).backward()
        return [p.grad.clone() for p in net.parameters()]

    ref = grads()
    for m in net.modules():
        if isinstance(m, CenteredSoftplus):
            m.kernels = kernels
    got = grads()
    for a, r in zip(got, ref, strict=True):
        torch.testing.assert_close(a, r, rtol=1e-4, atol=1e-6)


def test_batched_vjps_through_the_fused_op():
    """logit Jacobians use is_grads_batched (vmap over the incoming gradients): no fallback, same rows."""
    net = _lcnn().eval()
    x = torch.rand(3, 1, 8, 8, dtype=torch.float64, requires_grad=True)
    logits = net(x)
    eye = torch.eye(5, dtype=torch.float64)[:, None, :].expand(5, 3, 5)
    (batched,) = torch.autograd.grad(logits, x, grad_outputs=eye, retain_graph=True, is_grads_batched=True)
    for c in range(5):
        (row,) = torch.autograd.grad(logits, x, grad_outputs=eye[c], retain_graph=True)
        torch.testing.assert_close(batched[c], row, rtol=1e-12, atol=1e-14)
