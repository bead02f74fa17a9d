"""Every registered network, built with random weights (nothing downloads), honours the shared
interface of its task. Classifiers: shapes, forward = head ∘ features, Grad-CAM target, frozen
trunks. Segmentation networks: (B, 1, H, W) logits at any batch and size, Grad-CAM target,
parameter count in the description, channels_last."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from covidcxr.models import create_model, get_model_spec, list_models

CLASSIFIERS = list_models(include_test=True, task="classification")
FROZEN = [name for name in CLASSIFIERS if get_model_spec(name).frozen_trunk]
SEGMENTERS = list_models(include_test=True, task="segmentation")
_built: dict[tuple[str, int], nn.Module] = {}


def built(name: str, num_classes: int | None = None) -> nn.Module:
    """One random-init network per name, shared by the tests of this module (building the big
    backbones costs seconds on CPU); tests set train/eval mode themselves. num_classes None:
    the task's default (3 classes, or 1 mask channel)."""
    if (name, num_classes) not in _built:
        torch.manual_seed(0)
        _built[name, num_classes] = create_model(name, num_classes=num_classes, weights=None)
    return _built[name, num_classes]


def small_side(name: str) -> int:
    """A cheap input side: the spec's for the CNNs (seed-cnn's dense layer fixes it), 64 for
    the globally pooled 224-pixel backbones and the fully convolutional U-Nets."""
    side = get_model_spec(name).input_size
    return side if side <= 100 else 64


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_forward_at_spec_size_and_grad_cam_target(name):
    num_classes = 4
    network = built(name, num_classes).eval()
    spec = network.spec
    target = network.get_submodule(spec.target_layer)
    activations = []
    handle = target.register_forward_hook(lambda module, args, output: activations.append(output))
    try:
        images = torch.rand(3, spec.in_channels, spec.input_size, spec.input_size)
        with torch.no_grad():
            logits = network(images)
    finally:
        handle.remove()
    assert logits.shape == (3, num_classes)
    assert torch.isfinite(logits).all()
    assert len(activations) == 1, f"{spec.target_layer} ran {len(activations)} times"
    activation = activations[0]
    assert activation.ndim == 4 and activation.shape[0] == 3, tuple(activation.shape)
    assert activation.shape[-1] > 1, "Grad-CAM needs a spatial map, not a pooled vector"


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_grad_cam_target_receives_gradients(name):
    """Grad-CAM's backward hooks work on every target (an in-place target would raise). A
    frozen trunk builds no graph by itself: the images must require grad."""
    network = built(name).eval()
    target = network.get_submodule(network.spec.target_layer)
    gradients = []
    handle = target.register_full_backward_hook(
        lambda module, grad_input, grad_output: gradients.append(grad_output[0])
    )
    side = small_side(name)
    images = torch.rand(2, 3, side, side, requires_grad=True)
    try:
        network(images)[:, 0].sum().backward()
    finally:
        handle.remove()
        network.zero_grad(set_to_none=True)
    assert len(gradients) == 1 and gradients[0].ndim == 4
    assert gradients[0].abs().sum() > 0


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_forward_is_head_of_features(name):
    network = built(name).eval()
    side = small_side(name)
    images = torch.rand(3, 3, side, side)
    with torch.no_grad():
        features = network.forward_features(images)
        logits = network.forward_head(features)
        direct = network(images)
    assert features.ndim == 2 and features.shape == (3, network.num_features)
    torch.testing.assert_close(direct, logits, rtol=0, atol=0)
    # Features depend on the image (a broken trunk returning constants would pass the above).
    assert not torch.allclose(features[0], features[1])


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_trainable_parameters_and_modes(name):
    network = built(name)
    network.train()
    head_parameters = list(network.head.parameters())
    assert head_parameters and all(p.requires_grad for p in head_parameters)
    assert network.head.training
    trunk_parameters = list(network.trunk.parameters())
    if network.spec.frozen_trunk:
        assert not any(p.requires_grad for p in trunk_parameters)
        assert not any(m.training for m in network.trunk.modules())
    else:
        assert all(p.requires_grad for p in trunk_parameters)
        assert all(m.training for m in network.trunk.modules())
    network.eval()
    assert not any(m.training for m in network.modules())
    for parameter in network.l2_parameters():
        assert parameter.requires_grad, "regularising a frozen tensor only adds a constant"


@pytest.mark.parametrize("name", FROZEN)
def test_frozen_trunk_does_not_move_while_training(name):
    network = built(name).train()
    side = small_side(name)
    trunk_before = {k: v.clone() for k, v in network.trunk.state_dict().items()}
    head_before = {k: v.clone() for k, v in network.head.state_dict().items()}
    optimizer = torch.optim.SGD([p for p in network.parameters() if p.requires_grad], lr=0.5)
    images = torch.rand(4, 3, side, side) * 5  # far from BatchNorm's statistics
    loss = nn.functional.cross_entropy(network(images), torch.tensor([0, 1, 2, 0]))
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    assert all(p.grad is None for p in network.trunk.parameters())
    for key, value in network.trunk.state_dict().items():
        assert torch.equal(value, trunk_before[key]), f"trunk tensor {key} changed"
    assert any(not torch.equal(v, head_before[k]) for k, v in network.head.state_dict().items())


def test_transfer_head_is_the_papers():
    network = built("vgg16")
    layers = list(network.head.children())
    assert [type(layer) for layer in layers] == [nn.Linear, nn.ReLU, nn.Dropout, nn.Linear]
    assert (layers[0].in_features, layers[0].out_features, layers[2].p) == (512, 128, 0.5)
    assert network.l2_parameters() == [] and network.l2_strength == 0.0


@pytest.mark.parametrize("name", ["seed-cnn", "efficientnet-lite0"])
def test_head_initialisation_follows_the_callers_seed(name):
    torch.manual_seed(123)
    first = create_model(name, weights=None)
    torch.manual_seed(123)
    second = create_model(name, weights=None)
    torch.manual_seed(124)
    third = create_model(name, weights=None)
    for key, value in first.head.state_dict().items():
        assert torch.equal(value, second.head.state_dict()[key])
    assert not torch.equal(first.head.fc1.weight, third.head.fc1.weight)


# --- segmentation networks -------------------------------------------------------------------


def count_parameters(module: nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())


@pytest.mark.parametrize("name", SEGMENTERS)
def test_segmentation_forward_at_spec_size_and_grad_cam_target(name):
    network = built(name).eval()
    spec = network.spec
    assert spec.task == "segmentation" and not spec.frozen_trunk
    target = network.get_submodule(spec.target_layer)
    activations = []
    handle = target.register_forward_hook(lambda module, args, output: activations.append(output))
    try:
        images = torch.rand(3, spec.in_channels, spec.input_size, spec.input_size)
        with torch.no_grad():
            logits = network(images)
    finally:
        handle.remove()
    assert logits.shape == (3, 1, spec.input_size, spec.input_size)
    assert torch.isfinite(logits).all()
    assert len(activations) == 1, f"{spec.target_layer} ran {len(activations)} times"
    activation = activations[0]
    assert activation.ndim == 4 and activation.shape[0] == 3, tuple(activation.shape)
    assert activation.shape[-1] > 1, "Grad-CAM needs a spatial map"


@pytest.mark.parametrize("name", SEGMENTERS)
def test_segmentation_grad_cam_target_receives_gradients(name):
    network = built(name).eval()
    target = network.get_submodule(network.spec.target_layer)
    gradients = []
    handle = target.register_full_backward_hook(
        lambda module, grad_input, grad_output: gradients.append(grad_output[0])
    )
    side = small_side(name)
    try:
        network(torch.rand(2, 1, side, side)).sum().backward()
    finally:
        handle.remove()
        network.zero_grad(set_to_none=True)
    assert len(gradients) == 1 and gradients[0].ndim == 4
    assert gradients[0].abs().sum() > 0


@pytest.mark.parametrize("name", SEGMENTERS)
@pytest.mark.parametrize(("batch", "height", "width"), [(1, 64, 64), (5, 48, 80), (2, 33, 47)])
def test_segmentation_output_matches_any_batch_and_size(name, batch, height, width):
    """Odd batches; sides that are multiples of 16, and odd ones (padded inside the U-Net)."""
    network = built(name).eval()
    with torch.no_grad():
        logits = network(torch.rand(batch, 1, height, width))
    assert logits.shape == (batch, 1, height, width)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("name", SEGMENTERS)
def test_segmentation_description_states_the_parameter_count(name):
    network = built(name)
    assert f"{count_parameters(network):,} parameters" in network.spec.description


@pytest.mark.parametrize("name", SEGMENTERS)
def test_segmentation_channels_last_gives_the_same_logits(name):
    network = built(name).eval()
    side = small_side(name)
    torch.manual_seed(0)
    images = torch.rand(3, 1, side, side)
    with torch.no_grad():
        reference = network(images)
        channels_last_input = network(images.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(channels_last_input, reference, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", SEGMENTERS)
def test_segmentation_trains_end_to_end(name):
    """Every parameter is trainable and gets a gradient; train / eval modes propagate; no L2."""
    network = built(name).train()
    assert all(m.training for m in network.modules())
    assert network.l2_parameters() == [] and network.l2_strength == 0.0
    assert network.num_classes == 1
    side = small_side(name)
    images = torch.rand(2, 1, side, side)
    masks = (torch.rand(2, 1, side, side) > 0.5).float()
    try:
        loss = nn.functional.binary_cross_entropy_with_logits(network(images), masks)
        loss.backward()
        assert all(p.requires_grad and p.grad is not None for p in network.parameters())
    finally:
        network.zero_grad(set_to_none=True)
    network.eval()
    assert not any(m.training for m in network.modules())
