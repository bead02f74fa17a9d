"""How fast the lung-segmentation U-Net runs on the CPU at 256×256.

    .venv/bin/python benchmarks/bench_segment.py [--model unet] [--runs 30]

Prints inference milliseconds per image (``torch.inference_mode()``, eval mode) at batch 1
(median of ``--runs`` calls after warm-up) and at batches 8 and 16 (median per image), then the
wall time of one training step at batch 8 (forward, binary cross-entropy with logits, backward,
Adam step; median of 3 after one warm-up step). The batch-8 figures are repeated with network
and images in ``channels_last``, the layout the training engine picks for large inputs. Random
images and masks; torch's default thread count. Takes about 80 s on 2 cores. Not a test:
nothing is asserted.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from covidcxr.models import create_model


def median_seconds(function: Callable[[], object], runs: int, warmup: int) -> float:
    for _ in range(warmup):
        function()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def random_batch(batch: int, side: int, channels_last: bool) -> torch.Tensor:
    images = torch.rand(batch, 1, side, side)
    return images.contiguous(memory_format=torch.channels_last) if channels_last else images


def inference_ms_per_image(
    network: nn.Module, batch: int, side: int, runs: int, channels_last: bool = False
) -> float:
    images = random_batch(batch, side, channels_last)
    with torch.inference_mode():
        seconds = median_seconds(lambda: network(images), runs=runs, warmup=2)
    return 1000 * seconds / batch


def training_step_seconds(
    network: nn.Module, batch: int, side: int, runs: int, channels_last: bool = False
) -> float:
    images = random_batch(batch, side, channels_last)
    masks = (torch.rand(batch, 1, side, side) > 0.5).float()
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-3)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss = nn.functional.binary_cross_entropy_with_logits(network(images), masks)
        loss.backward()
        optimizer.step()

    return median_seconds(step, runs=runs, warmup=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="unet", help="a segmentation model name")
    parser.add_argument("--runs", type=int, default=30, help="timed batch-1 inference calls")
    args = parser.parse_args()

    torch.manual_seed(0)
    start = time.perf_counter()
    network = create_model(args.model, weights=None)  # the first build imports MONAI
    build_seconds = time.perf_counter() - start
    spec = network.spec
    side = spec.input_size
    parameters = sum(p.numel() for p in network.parameters())
    print(
        f"{spec.name}: {parameters:,} parameters, {side}×{side} input, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; "
        f"built in {build_seconds:.1f} s (MONAI import included)"
    )

    network.eval()
    batch_one = inference_ms_per_image(network, 1, side, args.runs)
    print(f"inference, batch  1: {batch_one:6.1f} ms/image (median of {args.runs})")
    for batch in (8, 16):
        per_image = inference_ms_per_image(network, batch, side, runs=5)
        print(f"inference, batch {batch:>2}: {per_image:6.1f} ms/image (median of 5 batches)")
    network.train()
    step = training_step_seconds(network, 8, side, runs=3)
    print(f"training step, batch 8: {step:.2f} s ({1000 * step / 8:.0f} ms/image; median of 3)")

    network.to(memory_format=torch.channels_last).eval()
    per_image = inference_ms_per_image(network, 8, side, runs=5, channels_last=True)
    print(f"channels_last inference, batch 8: {per_image:6.1f} ms/image (median of 5 batches)")
    network.train()
    step = training_step_seconds(network, 8, side, runs=3, channels_last=True)
    print(f"channels_last training step, batch 8: {step:.2f} s (median of 3)")


if __name__ == "__main__":
    main()
