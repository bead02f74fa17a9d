"""The paper's CNN: exact architecture, regularisation and channels_last behaviour."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from covidcxr.models import create_model


def count_parameters(module: nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())


@pytest.mark.parametrize(("num_classes", "expected"), [(3, 959_651), (4, 959_651 + 257)])
def test_parameter_count_matches_the_paper(num_classes, expected):
    network = create_model("seed-cnn", num_classes=num_classes)
    assert count_parameters(network) == expected
    # Per layer, as in the paper's summary table.
    per_layer = {
        name: count_parameters(module)
        for name, module in [*network.trunk.named_children(), *network.head.named_children()]
        if count_parameters(module)
    }
    assert per_layer == {
        "conv1": 896,
        "conv2": 4_624,
        "conv3": 2_320,
        "fc1": 819_712,
        "fc2": 131_328,
        "fc3": 257 * num_classes,
    }


def test_activation_shapes_match_the_paper():
    network = create_model("seed-cnn").eval()
    shapes = {}
    hooks = [
        network.get_submodule(f"trunk.{name}").register_forward_hook(
            lambda module, args, output, name=name: shapes.__setitem__(name, tuple(output.shape))
        )
        for name in ("conv1", "pool1", "conv2", "pool2", "conv3", "pool3", "flatten")
    ]
    with torch.no_grad():
        network(torch.rand(2, 3, 100, 100))
    for hook in hooks:
        hook.remove()
    assert shapes == {
        "conv1": (2, 32, 98, 98),
        "pool1": (2, 32, 49, 49),
        "conv2": (2, 16, 47, 47),
        "pool2": (2, 16, 23, 23),
        "conv3": (2, 16, 21, 21),
        "pool3": (2, 16, 10, 10),
        "flatten": (2, 1600),
    }


def test_dropout_after_each_pooling_and_l2_on_the_conv_kernels():
    network = create_model("seed-cnn")
    names = [name for name, _ in network.trunk.named_children()]
    for index in (1, 2, 3):
        assert names.index(f"drop{index}") == names.index(f"pool{index}") + 1
        assert network.trunk.get_submodule(f"drop{index}").p == 0.25
    assert network.l2_strength == 1e-3
    kernels = [network.trunk.conv1.weight, network.trunk.conv2.weight, network.trunk.conv3.weight]
    assert [id(p) for p in network.l2_parameters()] == [id(p) for p in kernels]
    # Keras-style initialisation: zero biases.
    assert all(not layer.bias.any() for layer in network.modules() if hasattr(layer, "bias"))


def test_dropout_is_active_only_in_training():
    torch.manual_seed(0)
    network = create_model("seed-cnn")
    images = torch.rand(2, 3, 100, 100)
    network.train()
    assert not torch.equal(network.forward_features(images), network.forward_features(images))
    network.eval()
    assert torch.equal(network.forward_features(images), network.forward_features(images))


def test_channels_last_gives_the_same_logits():
    torch.manual_seed(0)
    network = create_model("seed-cnn").eval()
    images = torch.rand(5, 3, 100, 100)
    with torch.no_grad():
        reference = network(images)
        channels_last_input = network(images.contiguous(memory_format=torch.channels_last))
        network.to(memory_format=torch.channels_last)
        channels_last_both = network(images.contiguous(memory_format=torch.channels_last))
    # Convolutions in the two layouts round differently (~4e-7 here), so not bit for bit; a
    # flatten in memory order instead of (C, H, W) order would change the logits far more.
    torch.testing.assert_close(channels_last_input, reference, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(channels_last_both, reference, rtol=1e-5, atol=1e-6)


def test_tiny_cnn_is_tiny_and_test_only():
    network = create_model("tiny-cnn", num_classes=2)
    assert network.spec.test_only and network.spec.input_size == 32
    assert count_parameters(network) < 1_000
    assert len(network.l2_parameters()) == 2 and network.l2_strength > 0
    frozen = create_model("tiny-frozen-cnn")
    assert frozen.spec.frozen_trunk and frozen.l2_parameters() == []
