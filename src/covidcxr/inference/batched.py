"""Batched inference shared by training, evaluation and prediction (torch only, no Lightning).

Images travel as uint8 tensors ``(N, 1, H, W)`` already resized to the model's input size
(:func:`covidcxr.data.transforms.resize_image`, the same function the cache uses), so training,
``evaluate`` and ``predict`` preprocess identically. :func:`normalise` turns them into the
network's input.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn


def normalise(
    images: torch.Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    channels: int = 3,
    channels_last: bool = False,
) -> torch.Tensor:
    """uint8 ``(B, 1, H, W)`` → float32 ``(B, channels, H, W)``: scaled to [0, 1], the grey
    channel repeated, then ``(x - mean) / std`` per channel."""
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 1:
        got = f"{images.dtype} {tuple(images.shape)}"
        raise ValueError(f"images should be a uint8 tensor (B, 1, H, W), got {got}")
    scale = torch.tensor(std, dtype=torch.float32, device=images.device).view(1, -1, 1, 1) * 255
    shift = torch.tensor(mean, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
    batch = images.expand(-1, channels, -1, -1).float()
    batch = batch.div_(scale).sub_(shift / scale * 255)
    if channels_last:
        batch = batch.contiguous(memory_format=torch.channels_last)
    return batch


def ensure_eval(network: nn.Module) -> None:
    """``network.eval()`` unless it already is: on a network of ~200 modules the recursive
    switch costs ~3 ms, more than a seed-cnn forward pass at batch 1."""
    if network.training or any(module.training for module in network.children()):
        network.eval()


def uses_channels_last(network: nn.Module) -> bool:
    """True when the network's first 4-D weight is stored channels-last (NHWC), as
    :func:`covidcxr.inference.artifact.load_model` stores classifiers: its input should be too."""
    for parameter in network.parameters():
        if parameter.ndim == 4:
            return parameter.is_contiguous(memory_format=torch.channels_last)
    return False


@torch.inference_mode()
def run_batches(
    function: Callable[[torch.Tensor], torch.Tensor],
    inputs: torch.Tensor,
    batch_size: int = 64,
    progress: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """``function`` over ``inputs`` in batches along dim 0, concatenated (on the CPU)."""
    outputs = []
    total = len(inputs)
    for start in range(0, total, batch_size):
        outputs.append(function(inputs[start : start + batch_size]).float().cpu())
        if progress is not None:
            progress(min(total, start + batch_size), total)
    if not outputs:
        return torch.zeros(0)
    return torch.cat(outputs)


def map_network(
    network: nn.Module,
    function: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    batch_size: int = 64,
    progress: Callable[[int, int], None] | None = None,
    channels: int = 3,
) -> torch.Tensor:
    """``function`` of each batch of uint8 images ``(N, 1, H, W)`` once normalised (on the
    network's device, in its memory format), concatenated; the network is put in eval mode."""
    ensure_eval(network)
    device = next(network.parameters()).device
    nhwc = uses_channels_last(network)
    return run_batches(
        lambda batch: function(normalise(batch.to(device), mean, std, channels, nhwc)),
        images,
        batch_size,
        progress,
    )


def predict_logits(
    network: nn.Module,
    images: torch.Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    batch_size: int = 64,
    progress: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """Logits ``(N, C)`` of uint8 images ``(N, 1, H, W)``; the network is put in eval mode."""
    return map_network(network, network, images, mean, std, batch_size, progress)


def network_outputs(
    network: nn.Module, batch: torch.Tensor, temperature: float, features: bool = True
) -> torch.Tensor:
    """``(B, D + C)``: a classifier's trunk features ``forward_features`` and its
    temperature-scaled softmax, from one pass over a normalised batch ``(B, 3, S, S)``; with
    ``features=False`` the softmax ``(B, C)`` alone (any network mapping images to logits)."""
    if not features:
        return torch.softmax(network(batch) / temperature, dim=1)
    trunk = network.forward_features(batch)
    probabilities = torch.softmax(network.forward_head(trunk) / temperature, dim=1)
    return torch.cat([trunk.flatten(1), probabilities], dim=1)


def extract_features(
    network: nn.Module,
    images: torch.Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    batch_size: int = 64,
    progress: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """The frozen trunk's output ``forward_features`` ``(N, D)`` for uint8 images."""
    return map_network(network, network.forward_features, images, mean, std, batch_size, progress)


def predict_probabilities(
    network: nn.Module,
    images: torch.Tensor,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    batch_size: int = 8,
) -> torch.Tensor:
    """Lung probabilities ``(N, H, W)`` of uint8 images ``(N, 1, H, W)`` at the input size."""

    def probabilities(batch: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(network(batch))[:, 0]

    return map_network(network, probabilities, images, mean, std, batch_size, channels=1)
