"""The paper's small CNN (``seed-cnn``) and tiny test-only CNNs (``tiny-cnn``,
``tiny-frozen-cnn``).

The paper (Keras) does not state its dropout rate or L2 strength; we take the usual Keras
values: ``Dropout(0.25)`` after each pooling and ``kernel_regularizer=l2(1e-3)`` on the three
convolution kernels, i.e. the training loss adds ``1e-3 * sum(w ** 2)`` over those kernels
(exposed as ``network.l2_strength`` and ``network.l2_parameters()``; biases and dense layers are
not regularised). Weights are initialised as Keras does (Glorot-uniform kernels, zero biases)
so that training starts where the paper's did.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

from torch import nn

from covidcxr.models.base import ClassifierNetwork, keras_init
from covidcxr.models.layers import FastDropout
from covidcxr.models.registry import ModelSpec, register

SEED_CNN_DROPOUT = 0.25
SEED_CNN_L2 = 1e-3

_PAPER_CNN = {
    "max_epochs": 50,
    "fractions": (0.7, 0.1, 0.2),
    "batch_size": 64,
    "learning_rate": 1e-3,
    "patience": 3,
    "lr_schedule": "none",
}
"""The paper's protocol (``--preset paper``): Adam 1e-3, batch 64, at most 50 epochs, early
stopping after 3 epochs without a lower validation loss, 70/10/20."""

SEED_CNN_DEFAULTS = {**_PAPER_CNN, "max_epochs": 100, "patience": 10}
"""covidcxr's defaults for the same network: early stopping waits 10 epochs, not 3, and may run
up to 100 (augmented runs learn more slowly and need them). On a real
copy of the database (README, "Pretrained models") the paper's patience stops while the
model is still learning: the validation loss of this small CNN jumps by ±0.05 from epoch to
epoch, so three epochs without a new minimum come early (there: epoch 12, best 9, test accuracy
90.2 %); with 10 it ran 46 epochs (best 36) to 93.4 %. Dividing the learning rate on plateaus
(``--lr-schedule plateau``) did worse (91.4 %): the same noise triggers it too early."""


def _conv_block(index: int, in_channels: int, out_channels: int, dropout: float) -> list:
    """Conv 3×3 (valid) -> ReLU -> MaxPool 2 -> Dropout, named ``conv{i}``, ``relu{i}``..."""
    return [
        (f"conv{index}", nn.Conv2d(in_channels, out_channels, kernel_size=3)),
        # Not in place: relu3 is Grad-CAM's target, and backward hooks refuse in-place modules.
        (f"relu{index}", nn.ReLU()),
        (f"pool{index}", nn.MaxPool2d(2)),
        (f"drop{index}", FastDropout(dropout)),
    ]


class SeedCNN(ClassifierNetwork):
    """The paper's CNN for (B, 3, 100, 100) images in [0, 1]; 959,651 parameters for 3 classes.

    trunk: conv1 (32) -> conv2 (16) -> conv3 (16), each 3×3 valid + ReLU + MaxPool 2 + Dropout,
    then flatten: (B, 16·10·10) = (B, 1600). head: Dense 512 ReLU -> Dense 256 ReLU -> Dense N.
    Works on ``channels_last`` inputs: flattening follows the logical (C, H, W) order whatever
    the memory layout.
    """

    def __init__(self, spec: ModelSpec, num_classes: int, dropout: float = SEED_CNN_DROPOUT):
        trunk = nn.Sequential(
            OrderedDict(
                [
                    *_conv_block(1, 3, 32, dropout),
                    *_conv_block(2, 32, 16, dropout),
                    *_conv_block(3, 16, 16, dropout),
                    ("flatten", nn.Flatten(1)),
                ]
            )
        )
        head = nn.Sequential(
            OrderedDict(
                [
                    ("fc1", nn.Linear(1600, 512)),
                    ("relu1", nn.ReLU()),
                    ("fc2", nn.Linear(512, 256)),
                    ("relu2", nn.ReLU()),
                    ("fc3", nn.Linear(256, num_classes)),
                ]
            )
        )
        keras_init(trunk)
        keras_init(head)
        super().__init__(
            spec,
            trunk,
            head,
            l2_parameter_names=("trunk.conv1.weight", "trunk.conv2.weight", "trunk.conv3.weight"),
            l2_strength=SEED_CNN_L2,
        )


class TinyCNN(ClassifierNetwork):
    """A few-hundred-parameter CNN on (B, 3, 32, 32) images, for fast engine tests.

    trunk: conv1 (8) ReLU MaxPool -> conv2 (8) ReLU -> global average pool -> (B, 8);
    head: Linear(8, N). Same L2 mechanism as :class:`SeedCNN` (unless the spec freezes the
    trunk), so tests exercise it.
    """

    def __init__(self, spec: ModelSpec, num_classes: int):
        trunk = nn.Sequential(
            OrderedDict(
                [
                    ("conv1", nn.Conv2d(3, 8, kernel_size=3, padding=1)),
                    ("relu1", nn.ReLU()),
                    ("pool1", nn.MaxPool2d(2)),
                    ("conv2", nn.Conv2d(8, 8, kernel_size=3, padding=1)),
                    ("relu2", nn.ReLU()),
                    ("pool", nn.AdaptiveAvgPool2d(1)),
                    ("flatten", nn.Flatten(1)),
                ]
            )
        )
        head = nn.Sequential(OrderedDict([("fc", nn.Linear(8, num_classes))]))
        # A frozen trunk is not trained, so regularising it would only add a constant.
        kernels = ("trunk.conv1.weight", "trunk.conv2.weight")
        trainable_kernels = () if spec.frozen_trunk else kernels
        super().__init__(
            spec,
            trunk,
            head,
            l2_parameter_names=trainable_kernels,
            l2_strength=SEED_CNN_L2 if trainable_kernels else 0.0,
        )


_TEST_DEFAULTS = {"max_epochs": 2, "fractions": (0.7, 0.1, 0.2), "batch_size": 8}


@register(
    ModelSpec(
        name="seed-cnn",
        input_size=100,
        in_channels=3,
        mean=(0.0, 0.0, 0.0),
        std=(1.0, 1.0, 1.0),
        target_layer="trunk.relu3",
        frozen_trunk=False,
        default_weights=None,
        defaults=SEED_CNN_DEFAULTS,
        presets={"paper": _PAPER_CNN},
        description=(
            "the paper's CNN: 3 conv blocks + dense 512/256, 100×100 input in [0, 1], "
            f"dropout {SEED_CNN_DROPOUT}, L2 {SEED_CNN_L2:g} on conv kernels (959,651 params)"
        ),
    )
)
def _build_seed_cnn(spec: ModelSpec, num_classes: int, weights: str | Path | None) -> SeedCNN:
    return SeedCNN(spec, num_classes)


@register(
    ModelSpec(
        name="tiny-cnn",
        input_size=32,
        in_channels=3,
        mean=(0.0, 0.0, 0.0),
        std=(1.0, 1.0, 1.0),
        target_layer="trunk.relu2",
        frozen_trunk=False,
        default_weights=None,
        defaults={**_TEST_DEFAULTS, "learning_rate": 1e-2},
        description="test only: a tiny trainable CNN at 32×32",
        test_only=True,
    )
)
def _build_tiny_cnn(spec: ModelSpec, num_classes: int, weights: str | Path | None) -> TinyCNN:
    return TinyCNN(spec, num_classes)


@register(
    ModelSpec(
        name="tiny-frozen-cnn",
        input_size=32,
        in_channels=3,
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        target_layer="trunk.relu2",
        frozen_trunk=True,
        default_weights=None,
        defaults={**_TEST_DEFAULTS, "learning_rate": 1e-2},
        description="test only: a tiny CNN with a frozen random trunk, for feature-cache tests",
        test_only=True,
        stages=(("conv1",), ("conv2",)),
    )
)
def _build_tiny_frozen_cnn(
    spec: ModelSpec, num_classes: int, weights: str | Path | None
) -> TinyCNN:
    return TinyCNN(spec, num_classes)
