"""Frozen ImageNet backbones with the paper's transfer-learning head.

The paper's third model is Keras VGG16 without its top, frozen, followed by
average pooling -> flatten -> Dense 128 ReLU -> Dropout -> Dense N. Every backbone here gets
that treatment: the trunk ends in global average pooling and flattening, so
``forward_features`` returns (B, D) vectors that can be cached, and only the head
(D -> 128 -> N, Dropout 0.5, Keras-style initialisation) is trained. No L2 (the paper uses none
for this model).

torchvision backbones use the ``IMAGENET1K_V1`` weights (for ResNet-50 rather than the newer
V2: V2's training recipe — label smoothing, mixup, long schedules — is known to make
penultimate features transfer worse when the trunk is frozen). torchvision and timm are
imported only when a network is built.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from covidcxr.models.base import ClassifierNetwork, keras_init
from covidcxr.models.registry import ModelSpec, register
from covidcxr.models.weights import (
    download_torchvision_weights,
    efficientnet_lite0_package_file,
    load_state_dict_by_name,
    load_state_dict_by_position,
    read_state_dict,
)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HEAD_HIDDEN = 128
HEAD_DROPOUT = 0.5

_PAPER_TRANSFER_DEFAULTS = {
    "max_epochs": 10,
    "fractions": (0.75, 0.125, 0.125),
    "batch_size": 64,
    "learning_rate": 1e-3,
    "patience": 3,
    "lr_schedule": "none",
}
"""The paper's VGG16 protocol, the default of every transfer model (``--preset paper`` names
it too)."""


def paper_head(num_features: int, num_classes: int) -> nn.Sequential:
    """The paper's head on pooled features: (B, D) -> Linear 128 -> ReLU -> Dropout 0.5 ->
    Linear N -> (B, N) logits."""
    head = nn.Sequential(
        OrderedDict(
            [
                ("fc1", nn.Linear(num_features, HEAD_HIDDEN)),
                ("relu", nn.ReLU()),
                ("dropout", nn.Dropout(HEAD_DROPOUT)),
                ("fc2", nn.Linear(HEAD_HIDDEN, num_classes)),
            ]
        )
    )
    keras_init(head)
    return head


def _pooled(*named_modules: tuple[str, nn.Module]) -> nn.Sequential:
    """Sequential of ``named_modules`` followed by global average pooling and flattening."""
    return nn.Sequential(
        OrderedDict([*named_modules, ("pool", nn.AdaptiveAvgPool2d(1)), ("flatten", nn.Flatten(1))])
    )


# VGG16 ("configuration D"): channels of each 3×3 conv, "M" for a 2×2 max pooling.
_VGG16_LAYOUT: tuple[int | str, ...] = (
    *(64, 64, "M", 128, 128, "M"),
    *(256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
)


def _vgg16_features() -> nn.Sequential:
    """VGG16's convolutional part, numbered like torchvision's ``vgg16().features`` so that
    its state-dict keys (``0.weight``, ``2.weight``...) match torchvision's files.

    Built here rather than through ``torchvision.models.vgg16()``, whose 120M-parameter
    classifier takes seconds to initialise only to be thrown away.
    """
    layers: list[nn.Module] = []
    in_channels = 3
    last_conv = max(i for i, item in enumerate(_VGG16_LAYOUT) if item != "M")
    for i, item in enumerate(_VGG16_LAYOUT):
        if item == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            continue
        conv = nn.Conv2d(in_channels, int(item), kernel_size=3, padding=1)
        nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
        nn.init.zeros_(conv.bias)
        # The last ReLU is Grad-CAM's target: not in place, as backward hooks require.
        layers += [conv, nn.ReLU(inplace=i != last_conv)]
        in_channels = int(item)
    return nn.Sequential(*layers)


def _vgg16_trunk() -> nn.Sequential:
    return _pooled(("features", _vgg16_features()))


def _resnet50_trunk() -> nn.Sequential:
    from torchvision.models import resnet50

    # conv1, bn1, relu, maxpool, layer1..layer4 keep their names (and so their keys);
    # torchvision's avgpool + fc give way to our pooling and head.
    return _pooled(
        *[(name, m) for name, m in resnet50().named_children() if name not in ("avgpool", "fc")]
    )


def _densenet121_trunk() -> nn.Sequential:
    from torchvision.models import densenet121

    # torchvision applies this final ReLU functionally; as a module it is Grad-CAM's target.
    return _pooled(("features", densenet121().features), ("relu", nn.ReLU()))


def _densenet_legacy_keys(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """torchvision's DenseNet files name layers ``norm.1``, ``conv.2``...; today's modules are
    ``norm1``, ``conv2``. Rename the old keys (new-style files pass through unchanged)."""
    renamed = {}
    for key, value in state_dict.items():
        prefix, _, rest = key.rpartition(".")
        parts = prefix.split(".")
        # e.g. features.denseblock1.denselayer1.norm.1.weight -> ...denselayer1.norm1.weight
        if len(parts) >= 2 and parts[-2] in ("norm", "relu", "conv") and parts[-1] in ("1", "2"):
            key = ".".join([*parts[:-2], parts[-2] + parts[-1], rest])
        renamed[key] = value
    return renamed


def _torchvision_url(enum_name: str) -> str:
    import torchvision.models as tvm

    return getattr(tvm, enum_name).IMAGENET1K_V1.url


def _build_torchvision(
    spec: ModelSpec,
    num_classes: int,
    weights: str | Path | None,
    *,
    make_trunk: Callable[[], nn.Module],
    num_features: int,
    weights_enum: str,
    classifier_prefixes: tuple[str, ...],
    rename: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] = dict,
) -> ClassifierNetwork:
    trunk = make_trunk()
    if weights is not None:
        if weights == "imagenet":
            url = _torchvision_url(weights_enum)
            state_dict = download_torchvision_weights(spec.name, url)
            source = f"the {weights_enum}.IMAGENET1K_V1 file ({url})"
        else:
            state_dict = read_state_dict(Path(weights), spec.name)
            source = str(weights)
        load_state_dict_by_name(
            trunk,
            rename(state_dict),
            source=source,
            model_name=spec.name,
            ignore_prefixes=classifier_prefixes,
        )
    return ClassifierNetwork(spec, trunk, paper_head(num_features, num_classes))


def _transfer_spec(name: str, target_layer: str, description: str, **overrides) -> ModelSpec:
    fields = {
        "name": name,
        "input_size": 224,
        "in_channels": 3,
        "mean": IMAGENET_MEAN,
        "std": IMAGENET_STD,
        "target_layer": target_layer,
        "frozen_trunk": True,
        "default_weights": "imagenet",
        "defaults": _PAPER_TRANSFER_DEFAULTS,
        "presets": {"paper": {}},
        "description": description,
    }
    return ModelSpec(**{**fields, **overrides})


@register(
    _transfer_spec(
        "vgg16",
        "trunk.features.29",
        "the paper's transfer model: frozen ImageNet VGG16 + pooled 128-unit head (15.5 GMACs)",
    )
)
def _build_vgg16(
    spec: ModelSpec, num_classes: int, weights: str | Path | None
) -> ClassifierNetwork:
    return _build_torchvision(
        spec,
        num_classes,
        weights,
        make_trunk=_vgg16_trunk,
        num_features=512,
        weights_enum="VGG16_Weights",
        classifier_prefixes=("classifier.",),
    )


@register(
    _transfer_spec(
        "densenet121",
        "trunk.relu",
        "frozen ImageNet DenseNet-121 + the paper's head (2.9 GMACs)",
    )
)
def _build_densenet121(
    spec: ModelSpec, num_classes: int, weights: str | Path | None
) -> ClassifierNetwork:
    return _build_torchvision(
        spec,
        num_classes,
        weights,
        make_trunk=_densenet121_trunk,
        num_features=1024,
        weights_enum="DenseNet121_Weights",
        classifier_prefixes=("classifier.",),
        rename=_densenet_legacy_keys,
    )


@register(
    _transfer_spec(
        "resnet50",
        "trunk.layer4",
        "frozen ImageNet ResNet-50 (V1 weights) + the paper's head (4.1 GMACs)",
        stages=(("conv1", "bn1"), ("layer1",), ("layer2",), ("layer3",), ("layer4",)),
    )
)
def _build_resnet50(
    spec: ModelSpec, num_classes: int, weights: str | Path | None
) -> ClassifierNetwork:
    return _build_torchvision(
        spec,
        num_classes,
        weights,
        make_trunk=_resnet50_trunk,
        num_features=2048,
        weights_enum="ResNet50_Weights",
        classifier_prefixes=("fc.",),
    )


@register(
    _transfer_spec(
        "efficientnet-lite0",
        "trunk.bn2",
        "frozen ImageNet EfficientNet-Lite0 (timm tf_efficientnet_lite0; weights installable "
        "offline) + the paper's head (0.4 GMACs); input in [-1, 1]",
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        stages=(
            ("conv_stem", "bn1"),
            *((f"blocks.{index}",) for index in range(7)),
            ("conv_head", "bn2"),
        ),
    )
)
def _build_efficientnet_lite0(
    spec: ModelSpec, num_classes: int, weights: str | Path | None
) -> ClassifierNetwork:
    import timm

    # num_classes=0 makes timm's model end in global pooling + flatten: (B, 1280).
    trunk = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=0)
    if weights is not None:
        path = efficientnet_lite0_package_file() if weights == "imagenet" else Path(weights)
        state_dict = read_state_dict(path, spec.name)
        if all(key in state_dict for key in trunk.state_dict()):
            # A timm state dict: match by name, dropping its ImageNet classifier.
            load_state_dict_by_name(
                trunk,
                state_dict,
                source=str(path),
                model_name=spec.name,
                ignore_prefixes=("classifier.",),
            )
        else:
            # The package's file names tensors its own way (_conv_stem, _blocks...) but stores
            # them in timm's order, one for one; its ImageNet classifier (_fc) is dropped.
            load_state_dict_by_position(
                trunk,
                state_dict,
                source=str(path),
                model_name=spec.name,
                ignore_prefixes=("_fc.",),
            )
    return ClassifierNetwork(spec, trunk, paper_head(trunk.num_features, num_classes))
