"""Lung segmentation: MONAI's ``BasicUNet`` as ``unet``, and a tiny test-only ``tiny-unet``.

    >>> network = create_model("unet")            # random init; no pretrained U-Net exists
    >>> network(torch.rand(2, 1, 256, 256)).shape  # grey images in [0, 1] -> mask logits
    torch.Size([2, 1, 256, 256])

``unet`` uses features (16, 32, 64, 128, 256, 16): 1,948,129 parameters; on 2 CPU cores
about 130 ms per 256×256 image at inference and 3.4 s per training step of 8 images
(``benchmarks/bench_segment.py``). MONAI's default widths (32, 32, 64, 128, 256, 32) widen only
the first and last blocks, which run at full resolution: 1.6 % more parameters, yet they
doubled the training step (7.8 s);
halving every width (8, 16, 32, 64, 128, 8) was ~3× faster but keeps a quarter of the
parameters. Everything else is MONAI's default: instance norm, LeakyReLU(0.1), transposed
convolutions for upsampling, replicate-padding where a decoder stage has an odd size.

MONAI takes seconds to import, so it is imported only when a U-Net is built.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from covidcxr.models.registry import ModelSpec, register

UNET_FEATURES = (16, 32, 64, 128, 256, 16)
TINY_UNET_FEATURES = (4, 4, 8, 8, 16, 4)
UNET_PARAMETERS = 1_948_129  # of BasicUNet(2, 1, 1, UNET_FEATURES); tests check it
TINY_UNET_PARAMETERS = 11_213

# Grad-CAM target: the second-to-last decoder block, (B, 32, H/2, W/2) for ``unet``. The last
# block (upcat_1) feeds only the final 1×1 convolution, which is linear, so a CAM there would
# just redraw the logits.
_TARGET_LAYER = "unet.upcat_2"

_UNET_DEFAULTS = {
    "max_epochs": 30,
    "fractions": (0.7, 0.1, 0.2),
    "batch_size": 8,
    "learning_rate": 1e-3,
    "patience": 3,
    "lr_schedule": "none",
}


class SegmentationNetwork(nn.Module):
    """A segmentation network with its registry spec: (B, C, H, W) images, normalised with
    ``spec.mean`` / ``spec.std`` from [0, 1], -> (B, 1, H, W) mask logits (no sigmoid).

    The wrapped network is the ``unet`` attribute, so every state-dict key starts with
    ``unet.``. Like :class:`~covidcxr.models.ClassifierNetwork` it exposes ``spec``,
    ``num_classes`` (output channels: 1), ``l2_strength`` (0) and ``l2_parameters()`` ([]), so
    the shared engine can treat both alike.
    """

    def __init__(self, spec: ModelSpec, unet: nn.Module) -> None:
        super().__init__()
        self.spec = spec
        self.unet = unet
        self.num_classes = 1
        self.l2_strength = 0.0

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) normalised images -> (B, 1, H, W) logits. Any B; any H, W, though
        multiples of 16 avoid the internal padding of odd-sized decoder stages."""
        if images.ndim != 4 or images.shape[1] != self.spec.in_channels:
            raise ValueError(
                f"{self.spec.name!r} expects images of shape (batch, {self.spec.in_channels}, "
                f"height, width), got {tuple(images.shape)}"
            )
        return self.unet(images)

    def l2_parameters(self) -> list[nn.Parameter]:
        """No L2 regularisation for the U-Net: always []."""
        return []


def _build_basic_unet(
    spec: ModelSpec, num_classes: int, features: tuple[int, ...]
) -> SegmentationNetwork:
    if num_classes != 1:
        raise ValueError(
            f"{spec.name!r} predicts one lung-mask channel, so num_classes must be 1, got "
            f"{num_classes}; leave num_classes out"
        )
    from monai.networks.nets import BasicUNet

    unet = BasicUNet(
        spatial_dims=2, in_channels=spec.in_channels, out_channels=1, features=features
    )
    return SegmentationNetwork(spec, unet)


def _unet_spec(name: str, features: tuple[int, ...], parameters: int, **overrides) -> ModelSpec:
    fields = {
        "name": name,
        "input_size": 256,
        "in_channels": 1,
        "mean": (0.0,),
        "std": (1.0,),
        "target_layer": _TARGET_LAYER,
        "frozen_trunk": False,
        "default_weights": None,
        "defaults": _UNET_DEFAULTS,
        "description": (
            f"lung segmentation: MONAI BasicUNet, features {features}, {parameters:,} "
            "parameters; 256×256 grey input in [0, 1] -> (B, 1, H, W) mask logits"
        ),
        "task": "segmentation",
    }
    return ModelSpec(**{**fields, **overrides})


# ``weights`` is always None in the builders: the registry refuses any other value for specs
# whose default_weights is None.
@register(_unet_spec("unet", UNET_FEATURES, UNET_PARAMETERS))
def _build_unet(
    spec: ModelSpec, num_classes: int, weights: str | Path | None
) -> SegmentationNetwork:
    return _build_basic_unet(spec, num_classes, UNET_FEATURES)


UNET_LITE_FEATURES = (8, 16, 32, 64, 128, 8)


@register(
    _unet_spec(
        "unet-lite",
        UNET_LITE_FEATURES,
        488_241,
        input_size=128,
        description=(
            f"lung segmentation for CPUs: MONAI BasicUNet, features {UNET_LITE_FEATURES}, "
            "488,241 parameters, at 128×128 (masks are resized back to each image's size)"
        ),
    )
)
def _build_unet_lite(
    spec: ModelSpec, num_classes: int, weights: str | Path | None
) -> SegmentationNetwork:
    return _build_basic_unet(spec, num_classes, UNET_LITE_FEATURES)


@register(
    _unet_spec(
        "tiny-unet",
        TINY_UNET_FEATURES,
        TINY_UNET_PARAMETERS,
        input_size=64,
        defaults={**_UNET_DEFAULTS, "max_epochs": 2},
        description=(
            f"test only: a tiny BasicUNet, features {TINY_UNET_FEATURES}, "
            f"{TINY_UNET_PARAMETERS:,} parameters, at 64×64"
        ),
        test_only=True,
    )
)
def _build_tiny_unet(
    spec: ModelSpec, num_classes: int, weights: str | Path | None
) -> SegmentationNetwork:
    return _build_basic_unet(spec, num_classes, TINY_UNET_FEATURES)
