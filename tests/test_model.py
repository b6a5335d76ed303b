"""Model: the Reshape layer, input shapes, and rebuilding from a config alone."""

import torch
from conftest import ft


def test_reshape_keeps_the_batch_dimension():
    layer = ft.Reshape(1, 28, 28)
    assert layer(torch.zeros(5, 784)).shape == (5, 1, 28, 28)
    assert layer(torch.zeros(5, 1, 28, 28)).shape == (5, 1, 28, 28)
    assert "1, 28, 28" in repr(layer)


def test_model_accepts_flat_and_image_input_with_the_same_result():
    torch.manual_seed(0)
    model = ft.build_model(ft.model_config([1, 28, 28], 10, [0.13], [0.3])).eval()
    x = torch.rand(3, 1, 28, 28)
    assert model(x).shape == (3, 10)
    assert torch.allclose(model(x), model(x.reshape(3, 784)))


def test_model_adapts_to_colour_32x32_input():
    model = ft.build_model(ft.model_config([3, 32, 32], 7, [0.5] * 3, [0.2] * 3))
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 7)


def test_normalize_uses_the_stored_statistics():
    layer = ft.Normalize([0.5], [0.25])
    assert torch.allclose(layer(torch.full((1, 1, 2, 2), 1.0)), torch.full((1, 1, 2, 2), 2.0))
    assert set(layer.state_dict()) == {"mean", "std"}


def test_rebuilt_model_from_config_and_state_dict_is_identical():
    config = ft.model_config([1, 28, 28], 10, [0.13], [0.3])
    model = ft.build_model(config).eval()
    clone = ft.build_model(config)
    clone.load_state_dict(model.state_dict())
    x = torch.rand(4, 784)
    assert torch.equal(model(x), clone.eval()(x))


def test_model_has_dropout_and_batch_norm():
    model = ft.build_model(ft.model_config([1, 28, 28], 10, [0.13], [0.3]))
    kinds = {type(m) for m in model.modules()}
    assert torch.nn.Dropout in kinds and torch.nn.BatchNorm2d in kinds and ft.Reshape in kinds
