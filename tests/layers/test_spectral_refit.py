"""Spectral norms are refitted to convergence at save time: after training moved the raw
weights, one power step per forward leaves σ behind; ``refit_spectral_norms`` restores ‖layer‖₂ = 1
(dense float64 operators as the oracle), and ``train(output=...)`` saves refitted layers."""

import torch
from torch import nn

from lcnn_audit.data import load_data
from lcnn_audit.layers.spectral import refit_spectral_norms, spectral_norm_conv, spectral_norm_linear
from lcnn_audit.loading import load_model
from lcnn_audit.penalties import PenaltyConfig
from lcnn_audit.training import TrainConfig, init_model, train
from tests.layers.test_layers import dense_operator


def _norms(convs, shapes, linear):
    out = [float(torch.linalg.matrix_norm(dense_operator(c, s), 2)) for c, s in zip(convs, shapes, strict=True)]
    return out + [float(torch.linalg.matrix_norm(linear.weight.detach().double(), 2))]


def test_refit_restores_unit_spectral_norm_after_weights_move():
    torch.manual_seed(0)
    shapes = [(2, 6, 6), (3, 3, 3)]
    convs = [nn.Conv2d(2, 3, 3, stride=2, padding=1), nn.Conv2d(3, 4, 3, padding=1)]
    for c, s in zip(convs, shapes, strict=True):
        spectral_norm_conv(c, s)
    linear = nn.Linear(12, 5)
    spectral_norm_linear(linear)
    model = nn.Sequential(*convs, linear)
    with torch.no_grad():  # what training does to the raw weights
        for m in (*convs, linear):
            m.parametrizations.weight.original.add_(0.5 * torch.randn_like(m.parametrizations.weight.original))
    model.eval()
    before = _norms(convs, shapes, linear)
    assert max(abs(n - 1) for n in before) > 1e-2  # the stored singular vectors are stale
    results = refit_spectral_norms(model)
    assert len(results) == 3 and all(r.converged for r in results)
    after = _norms(convs, shapes, linear)
    assert max(abs(n - 1) for n in after) < 1e-5, after


def test_train_saves_refitted_spectral_norms(tmp_path):
    model = init_model("small_cnn", {"width": 4}, dataset="fashion-mnist", convert=True, input_shape=(1, 28, 28))
    data = load_data("demo", "train", n=32)
    cfg = TrainConfig(epochs=1, batch_size=16, lr=0.5, curvature_n=0, penalties=PenaltyConfig(lambda_beta=1e-4))
    train(model, data, None, cfg, output=tmp_path / "m.safetensors", handle_sigint=False)
    saved = load_model(str(tmp_path / "m.safetensors")).eval()
    shapes = {}

    def record(mod, args):
        shapes[mod] = tuple(args[0].shape[1:])

    hooks = [m.register_forward_pre_hook(record) for m in saved.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        saved(torch.rand(1, 1, 28, 28))
    for h in hooks:
        h.remove()
    for conv, shape in shapes.items():
        assert abs(float(torch.linalg.matrix_norm(dense_operator(conv, shape), 2)) - 1) < 1e-4
