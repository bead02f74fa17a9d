"""The interface every registered network shares: a trunk, a head, and its spec."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from covidcxr.models.registry import ModelSpec


class ClassifierNetwork(nn.Module):
    """An image classifier split into ``trunk`` (image -> feature vector) and ``head``
    (feature vector -> logits).

    Unlike timm, :meth:`forward_features` returns the trunk's *pooled and flattened* output,
    (B, D): for a frozen trunk it is exactly what can be computed once and cached, after which
    only :meth:`forward_head` is trained.

    Args:
        spec: the registry entry this network was built from.
        trunk: module mapping (B, C, H, W) images to (B, D) features.
        head: module mapping (B, D) features to (B, num_classes) logits.
        l2_parameter_names: dotted names of the parameters that get L2 regularisation.
        l2_strength: Keras-style L2 factor: the training loss adds
            ``l2_strength * sum(w.pow(2).sum() for w in l2_parameters())`` (0 means none).

    When ``spec.frozen_trunk`` is true the trunk's parameters have ``requires_grad=False`` and
    the trunk stays in eval mode even after ``.train()``, so BatchNorm statistics never move.
    """

    def __init__(
        self,
        spec: ModelSpec,
        trunk: nn.Module,
        head: nn.Module,
        *,
        l2_parameter_names: Sequence[str] = (),
        l2_strength: float = 0.0,
    ) -> None:
        super().__init__()
        self.spec = spec
        self.trunk = trunk
        self.head = head
        self.l2_strength = float(l2_strength)
        self._l2_parameter_names = tuple(l2_parameter_names)
        for parameter_name in self._l2_parameter_names:
            self.get_parameter(parameter_name)  # fail at construction on a typo
        if spec.frozen_trunk:
            self.trunk.requires_grad_(False)
            self.trunk.eval()

    def fine_tune(self, stages: int) -> list[str]:
        """Make the last ``stages`` of the frozen trunk's parts (``spec.stages``) trainable;
        returns their names. The trunk stays in eval mode, so its BatchNorm statistics keep
        their ImageNet values (a small dataset's batches would only make them noisier): only
        weights and affine parameters learn. ``stages=0`` refreezes the whole trunk."""
        if not self.spec.frozen_trunk:
            raise ValueError(f"{self.spec.name!r} trains its whole trunk already; no fine-tune")
        parts = self.spec.stages
        if isinstance(stages, bool) or not isinstance(stages, int) or not 0 <= stages <= len(parts):
            raise ValueError(
                f"{self.spec.name!r}: fine_tune should be between 0 and {len(parts)} (the parts "
                f"of its trunk), got {stages!r}"
            )
        self.trunk.requires_grad_(False)
        names = [name for part in parts[len(parts) - stages :] for name in part]
        for name in names:
            self.trunk.get_submodule(name).requires_grad_(True)
        return names

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) normalised images -> (B, D) pooled, flattened trunk features."""
        return self.trunk(images)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """(B, D) features from :meth:`forward_features` -> (B, num_classes) logits."""
        return self.head(features)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) normalised images -> (B, num_classes) logits (no softmax)."""
        return self.forward_head(self.forward_features(images))

    def l2_parameters(self) -> list[nn.Parameter]:
        """The parameters that get L2 regularisation of strength ``l2_strength`` (may be [])."""
        return [self.get_parameter(name) for name in self._l2_parameter_names]

    def train(self, mode: bool = True) -> ClassifierNetwork:
        super().train(mode)
        if self.spec.frozen_trunk:
            self.trunk.eval()
        return self

    @property
    def num_features(self) -> int:
        """D, the width of :meth:`forward_features`' output."""
        first_linear = next(m for m in self.head.modules() if isinstance(m, nn.Linear))
        return first_linear.in_features

    @property
    def num_classes(self) -> int:
        """Width of the logits."""
        last_linear = [m for m in self.head.modules() if isinstance(m, nn.Linear)][-1]
        return last_linear.out_features


def keras_init(module: nn.Module) -> None:
    """Initialise ``module``'s convolutions and linear layers as Keras does by default
    (Glorot-uniform weights, zero biases), so that the paper's models start where its did."""
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d | nn.Linear):
            nn.init.xavier_uniform_(layer.weight)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
