"""The lung-segmentation U-Net: spec, size, state-dict keys and argument checking. (The shared
segmentation interface is swept in test_interface.py.)"""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from covidcxr.models import SegmentationNetwork, create_model, get_model_spec
from covidcxr.models.unet import TINY_UNET_FEATURES, UNET_FEATURES, UNET_LITE_FEATURES


def count_parameters(module: nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())


def test_unet_spec():
    spec = get_model_spec("unet")
    assert (spec.task, spec.input_size, spec.in_channels) == ("segmentation", 256, 1)
    assert (spec.mean, spec.std) == ((0.0,), (1.0,))
    assert spec.frozen_trunk is False and spec.default_weights is None and not spec.test_only
    assert dict(spec.defaults) == {
        "max_epochs": 30,
        "fractions": (0.7, 0.1, 0.2),
        "batch_size": 8,
        "learning_rate": 1e-3,
        "patience": 3,
        "lr_schedule": "none",
    }
    tiny = get_model_spec("tiny-unet")
    assert tiny.test_only and tiny.task == "segmentation" and tiny.input_size == 64


@pytest.mark.parametrize(
    ("name", "features", "parameters"),
    [
        ("unet", UNET_FEATURES, 1_948_129),
        ("unet-lite", UNET_LITE_FEATURES, 488_241),
        ("tiny-unet", TINY_UNET_FEATURES, 11_213),
    ],
)
def test_network_is_a_basic_unet_of_the_stated_size(name, features, parameters):
    network = create_model(name)
    assert isinstance(network, SegmentationNetwork)
    assert network.spec is get_model_spec(name)
    assert type(network.unet).__name__ == "BasicUNet"
    assert count_parameters(network) == parameters
    assert network.unet.conv_0.conv_0.conv.out_channels == features[0]
    assert network.unet.down_4.convs.conv_1.conv.out_channels == features[4]
    assert network.unet.final_conv.in_channels == features[5]
    assert network.unet.final_conv.out_channels == 1
    assert str(features) in network.spec.description


def test_state_dict_keys_are_stable_and_round_trip():
    torch.manual_seed(0)
    first = create_model("tiny-unet").eval()
    keys = list(first.state_dict())
    assert all(key.startswith("unet.") for key in keys)
    assert keys[0] == "unet.conv_0.conv_0.conv.weight"
    assert keys[-2:] == ["unet.final_conv.weight", "unet.final_conv.bias"]
    torch.manual_seed(1)
    second = create_model("tiny-unet").eval()
    images = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        assert not torch.equal(first(images), second(images))
        second.load_state_dict(first.state_dict(), strict=True)
        assert torch.equal(first(images), second(images))


def test_initialisation_follows_the_callers_seed():
    torch.manual_seed(5)
    first = create_model("tiny-unet")
    torch.manual_seed(5)
    second = create_model("tiny-unet")
    for key, value in first.state_dict().items():
        assert torch.equal(value, second.state_dict()[key]), key


@pytest.mark.parametrize("weights", ["imagenet", "some/file.pth"])
def test_no_pretrained_weights(weights):
    with pytest.raises(ValueError, match="'unet' has no pretrained weights"):
        create_model("unet", weights=weights)


@pytest.mark.parametrize("num_classes", [2, 3])
def test_one_mask_channel_only(num_classes):
    with pytest.raises(ValueError, match=f"num_classes must be 1, got {num_classes}"):
        create_model("tiny-unet", num_classes=num_classes)
    assert create_model("tiny-unet", num_classes=1).num_classes == 1


@pytest.mark.parametrize("shape", [(1, 3, 64, 64), (64, 64), (1, 1, 1, 64, 64)])
def test_wrong_input_shape_says_what_was_expected(shape):
    network = create_model("tiny-unet")
    expected = f"expects images of shape (batch, 1, height, width), got {tuple(shape)}"
    with pytest.raises(ValueError, match=re.escape(expected)):
        network(torch.rand(shape))
