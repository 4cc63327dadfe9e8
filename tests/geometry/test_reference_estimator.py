"""``--method reference``: a faithful port of the LCNN reference code's power iteration
(kylematoba/lcnn, estimate_curvature.py), checked against the literal algorithm run on exact
fp64 Hessians, and its low bias shown (issue #15)."""

import pytest
import torch
from typer.testing import CliRunner

from lcnn_audit import rng
from lcnn_audit.cli import app
from lcnn_audit.geometry.lanczos import lanczos, reference_power_iteration
from lcnn_audit.geometry.measures import STREAM_START
from tests.conftest import softplus_cnn
from tests.geometry.test_geometry import exact_hessians, run


def literal_reference(H: torch.Tensor, z: torch.Tensor, iters: int) -> torch.Tensor:
    """estimate_curvature.py's loop on one explicit matrix, line for line (fp64)."""
    u = z / torch.norm(z)
    for _ in range(iters):
        hvp = H @ u
        u = hvp / (torch.norm(hvp) + 1e-6)
    return (H @ u * u).sum().abs()


@pytest.mark.parametrize("iters", [1, 10])
def test_reference_matches_literal_port_on_exact_hessians(iters):
    model = softplus_cnn(8, 5.0, seed=3)
    x, y = torch.rand(6, 1, 8, 8), torch.randint(0, 10, (6,))
    fields, method = run(model, x, y, method="reference", iters=iters)
    assert method == "reference"
    H = exact_hessians(model, x, y)
    z = rng.per_sample_normal(0, STREAM_START, torch.arange(6), (64,), torch.float32).double()
    want = torch.stack([literal_reference(H[i], z[i], iters) for i in range(6)])
    torch.testing.assert_close(fields["hessian_norm"], want, rtol=2e-4, atol=1e-9)
    torch.testing.assert_close(fields["curvature"], want / (fields["grad_norm"] + 1e-6), rtol=2e-4, atol=1e-9)
    assert fields["iterations"].tolist() == [iters + 1] * 6
    assert not fields["converged"].any()  # no convergence test in the reference: never claims one
    exact = torch.linalg.eigvalsh(H).abs().amax(1)
    assert bool((fields["hessian_norm"] <= exact * (1 + 1e-4)).all())  # a Rayleigh quotient never reads high


def test_reference_reads_low_on_plus_minus_pair_where_lanczos_does_not():
    """The ± pair of a cross-entropy Hessian: u alternates between the two eigenvectors, and
    uᵀHu ≈ a² − b² cancels (the reference's estimate), while ‖Hu‖ (``--method power``) does not."""
    d = 20
    Q, _ = torch.linalg.qr(torch.randn(d, d, dtype=torch.float64))
    ev = torch.linspace(-0.1, 0.1, d, dtype=torch.float64)
    ev[0], ev[1] = 1.0, -0.999
    H = Q @ torch.diag(ev) @ Q.T
    q0 = (Q[:, 0] + Q[:, 1] + 0.01 * torch.randn(d, dtype=torch.float64))[None]
    ref = reference_power_iteration(lambda v: v @ H, q0, iters=10)
    lan = lanczos(lambda v: v @ H, q0, max_iter=20, tol=1e-10)
    assert float(lan.eigs[0, 0]) == pytest.approx(1.0, rel=1e-8)
    assert float(ref.eigs[0, 0].abs()) < 0.05  # > 95 % low on this sample
    assert float(literal_reference(H, q0[0], 10)) == pytest.approx(float(ref.eigs[0, 0].abs()), rel=1e-9)


def test_cli_method_reference_and_profile_refused():
    runner = CliRunner()
    res = runner.invoke(app, ["curvature", "demo", "--n", "4", "--method", "reference", "--iters", "10",
                              "--smooth-relu", "1000"])
    assert res.exit_code == 0, res.output
    bad = runner.invoke(app, ["curvature", "demo", "--n", "4", "--method", "reference", "--profile", "3"])
    assert bad.exit_code == 2 and "--profile" in bad.output
