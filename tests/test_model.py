"""Model: the Reshape layer, input shapes, and rebuilding from a config alone."""

import dataclasses

import pytest
import torch
from conftest import ft


def test_reshape_keeps_the_batch_dimension():
    layer = ft.Reshape(1, 28, 28)
    assert layer(torch.zeros(5, 784)).shape == (5, 1, 28, 28)
    assert layer(torch.zeros(5, 1, 28, 28)).shape == (5, 1, 28, 28)


def test_model_accepts_flat_and_image_input_with_the_same_result():
    torch.manual_seed(0)
    model = ft.build_model(ft.ModelConfig(input_shape=(1, 28, 28), num_classes=10, mean=(0.13,), std=(0.3,))).eval()
    x = torch.rand(3, 1, 28, 28)
    assert model(x).shape == (3, 10)
    assert torch.allclose(model(x), model(x.reshape(3, 784)))


def test_model_adapts_to_colour_32x32_input():
    model = ft.build_model(ft.ModelConfig(input_shape=(3, 32, 32), num_classes=7, mean=(0.5,) * 3, std=(0.2,) * 3))
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 7)


def test_normalize_uses_the_stored_statistics():
    layer = ft.Normalize([0.5], [0.25])
    assert torch.allclose(layer(torch.full((1, 1, 2, 2), 1.0)), torch.full((1, 1, 2, 2), 2.0))
    assert set(layer.state_dict()) == {"mean", "std"}


def test_rebuilt_model_from_config_and_state_dict_is_identical():
    config = ft.ModelConfig(input_shape=(1, 28, 28), num_classes=10, mean=(0.13,), std=(0.3,))
    model = ft.build_model(config).eval()
    clone = ft.build_model(config)
    clone.load_state_dict(model.state_dict())
    x = torch.rand(4, 784)
    assert torch.equal(model(x), clone.eval()(x))


def test_model_has_dropout_and_batch_norm():
    model = ft.build_model(ft.ModelConfig(input_shape=(1, 28, 28), num_classes=10, mean=(0.13,), std=(0.3,)))
    kinds = {type(m) for m in model.modules()}
    assert torch.nn.Dropout in kinds and torch.nn.BatchNorm2d in kinds and ft.Reshape in kinds


P4 = ft.ModelConfig(stages=((4,), (8, 8), (8,)), p4=True)


def _turn_features(features: torch.Tensor) -> torch.Tensor:
    """What a 90° turn of the input does to P4Conv features: turn each map and cycle each channel's four turn slots."""
    n, c4, h, w = features.shape
    return torch.rot90(features, 1, dims=(2, 3)).reshape(n, c4 // 4, 4, h, w).roll(1, dims=2).reshape(n, c4, h, w)


def test_p4_convolutions_are_equivariant_to_quarter_turns():
    torch.manual_seed(0)
    layers = torch.nn.Sequential(ft.P4Conv(1, 3, lift=True), torch.nn.ReLU(), ft.P4Conv(3, 2, lift=False))
    x = torch.rand(2, 1, 12, 12)
    out = layers(x)
    assert out.shape == (2, 8, 12, 12)
    assert torch.allclose(layers(torch.rot90(x, 1, dims=(2, 3))), _turn_features(out), atol=1e-5)


def test_p4_filter_bank_is_four_turned_copies_of_the_learnt_weights():
    conv = ft.P4Conv(1, 2, lift=True)
    bank = conv.weight.reshape(-1)[conv.index]  # [2 channels x 4 turns, 1, 3, 3]
    for k in range(4):
        assert torch.equal(bank[k::4], torch.rot90(conv.weight, k, dims=(2, 3)))
    assert list(conv.state_dict()) == ["weight"]  # the index is rebuilt, never stored in checkpoints
    assert conv.weight.numel() == 2 * 9


@pytest.mark.parametrize("lift", [True, False])
def test_p4_filters_backpropagate_as_autograds_own_gather_does(lift):
    conv = ft.P4Conv(2, 3, lift).double()
    grad = torch.randn(conv.index.shape, dtype=torch.float64)
    ours = conv.weight.detach().clone().requires_grad_()
    (ft.TurnedFilters.apply(ours, conv.index, conv.inverse) * grad).sum().backward()
    theirs = conv.weight.detach().clone().requires_grad_()
    (theirs.reshape(-1)[conv.index] * grad).sum().backward()  # autograd's scatter: the same sums, in another order
    assert torch.allclose(ours.grad, theirs.grad, rtol=0, atol=1e-12) and ours.grad.abs().min() > 0


def test_p4_model_trains_and_rebuilds_from_its_config():
    torch.manual_seed(0)
    config = dataclasses.replace(P4, input_shape=(1, 28, 28), num_classes=10, mean=(0.13,), std=(0.3,))
    model = ft.build_model(config)
    x, y = torch.rand(8, 784), torch.randint(0, 10, (8,))
    torch.nn.functional.cross_entropy(model(x), y).backward()
    assert all(p.grad is not None for p in model.parameters())
    clone = ft.build_model(config)
    clone.load_state_dict(model.state_dict())
    assert torch.equal(model.eval()(x), clone.eval()(x))
    assert sum(isinstance(m, ft.P4Conv) for m in model.modules()) == 4


def test_max_pool_without_gradients_gives_the_numbers_of_pytorchs_and_training_keeps_its_kernel(monkeypatch):
    pool = ft.MaxPool()
    for side in (28, 14, 7, 3):  # odd sides drop their last row and column, as max_pool2d does
        x = torch.randn(2, 5, side, side)
        with torch.no_grad():
            assert torch.equal(pool(x), torch.nn.functional.max_pool2d(x, 2))
    calls = []
    monkeypatch.setattr(ft.F, "max_pool2d", lambda x, k: calls.append(k) or torch.nn.functional.avg_pool2d(x, k))
    pool(torch.randn(2, 5, 8, 8, requires_grad=True)).sum().backward()
    assert calls == [2]  # the strided halves' backward is slower than the kernel's (docs/research.md)


def _trained_statistics(model: torch.nn.Module) -> torch.nn.Module:
    """The model with batch-norm statistics and affine weights unlike a fresh one's, as training leaves them."""
    torch.manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1), m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(-2, 2), m.bias.data.uniform_(-1, 1)
    return model.eval()


def test_folding_batch_norm_into_the_convolutions_keeps_the_predictions():
    for config in (dataclasses.replace(P4, input_shape=(1, 28, 28), num_classes=10), ft.ModelConfig(input_shape=(3, 32, 32))):
        model = _trained_statistics(ft.build_model(config))
        folded = ft.fold_batch_norm(model)
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
        assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # the trained model is left as it was
        x = torch.rand(6, *config.input_shape)
        with torch.no_grad():
            assert torch.allclose(folded(x), model(x), atol=1e-4, rtol=1e-4)


def test_validation_and_prediction_leave_the_runs_random_streams_alone():
    """Validating between epochs must not draw from torch's random stream, or the dropout masks of the next epoch, and
    so the run's weights, would depend on it (folding batch norm builds fresh convolutions, whose initial weights draw)."""
    model = ft.build_model(
        dataclasses.replace(ft.DATASETS["corruptedmnist"].model_config, input_shape=(1, 28, 28), num_classes=10, mean=(0.1,), std=(0.3,))
    )
    images = torch.rand(8, 1, 28, 28)
    before = torch.get_rng_state()
    logits = ft.predict_logits(model.eval(), images, torch.device("cpu"))
    assert logits.shape == (8, 10) and torch.equal(torch.get_rng_state(), before)
