"""Training throughput, end to end through ``covidcxr train`` as a user runs it.

1. seed-cnn at 100x100, batch 64, on 2 threads, warm image cache: images/s from the run's
   history.csv (median of the epochs after the first), next to a plain PyTorch loop over the
   same CNN and in-memory tensors (the usual first implementation), and to ``covidcxr train``
   with glibc's default allocator (``COVIDCXR_KEEP_MALLOC=1``).
2. efficientnet-lite0 (frozen ImageNet trunk): epoch time with the trunk's features cached vs
   running the trunk every epoch (``--no-feature-cache``).

Prints figures, asserts nothing:

    .venv/bin/python benchmarks/bench_train.py [--images 1920] [--epochs 4]
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ("COVID", "Normal", "Viral Pneumonia")


def write_dataset(root: Path, per_class: int) -> None:
    """Smooth random 299x299 PNGs in the database's layout (content does not matter here)."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(0)
    for name in CLASSES:
        folder = root / name / "images"
        folder.mkdir(parents=True)
        for index in range(per_class):
            field = gaussian_filter(rng.normal(0, 1, (299, 299)), 4)
            pixels = np.clip(128 + 40 * field / field.std(), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{name}-{index + 1}.png", compress_level=1)


def covidcxr(*args: str, env: dict[str, str] | None = None) -> float:
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "covidcxr", *args],
        check=True,
        env=(os.environ | (env or {})),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - started


def history(run: Path) -> list[dict[str, float]]:
    with (run / "history.csv").open() as handle:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(handle)]


def median_after_first(rows: list[dict[str, float]], key: str) -> float:
    values = [row[key] for row in rows[1:]] or [rows[0][key]]
    return statistics.median(values)


PLAIN_LOOP = """
import sys, time, torch
from covidcxr.models import create_model
torch.manual_seed(0)
images = torch.rand(int(sys.argv[1]), 3, 100, 100)
labels = torch.randint(0, 3, (len(images),))
model = create_model("seed-cnn", weights=None)
optimiser = torch.optim.Adam(model.parameters(), 1e-3)
loss_fn = torch.nn.CrossEntropyLoss()
speeds = []
for epoch in range(int(sys.argv[2])):
    order = torch.randperm(len(images))
    started = time.perf_counter()
    for start in range(0, len(images), 64):
        batch = order[start:start + 64]
        optimiser.zero_grad()
        loss_fn(model(images[batch]), labels[batch]).backward()
        optimiser.step()
    speeds.append(len(images) / (time.perf_counter() - started))
print(sorted(speeds[1:])[len(speeds[1:]) // 2])
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1920, help="images in the dataset")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--transfer-images", type=int, default=300)
    arguments = parser.parse_args()
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, torch threads: default")
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        data, cache = root / "data", root / "cache"
        write_dataset(data, arguments.images // len(CLASSES))
        common = ["--cache-dir", str(cache), "--quiet", "--workers", "2"]
        covidcxr("data", "cache", str(data), "--size", "100", *common)
        epochs = ["--epochs", str(arguments.epochs), "--patience", "100"]

        print(f"\n1. seed-cnn, 100x100, batch 64, {arguments.images} images (train split 70 %)")
        results = {}
        for label, env in (
            ("covidcxr train", {}),
            ("  with glibc's default malloc", {"COVIDCXR_KEEP_MALLOC": "1"}),
        ):
            run = root / f"run-{len(results)}"
            covidcxr(
                "train",
                "--data",
                str(data),
                "--model",
                "seed-cnn",
                "--out",
                str(run),
                *epochs,
                *common,
                env=env,
            )
            results[label] = median_after_first(history(run), "train_images_per_second")
        plain = subprocess.run(
            [
                sys.executable,
                "-c",
                PLAIN_LOOP,
                str(int(arguments.images * 0.7)),
                str(arguments.epochs),
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        results["plain PyTorch loop (in-memory tensors)"] = float(plain.stdout.strip())
        for label, speed in results.items():
            print(f"  {label:<42} {speed:7.0f} images/s")

        print(
            f"\n2. efficientnet-lite0 (frozen ImageNet trunk), 224x224, "
            f"{arguments.transfer_images} images"
        )
        small = root / "small"
        write_dataset(small, arguments.transfer_images // len(CLASSES))
        covidcxr("data", "cache", str(small), "--size", "224", *common)
        for label, flag in (
            ("features cached", "--feature-cache"),
            ("trunk every epoch", "--no-feature-cache"),
        ):
            run = root / f"lite0-{flag}"
            wall = covidcxr(
                "train",
                "--data",
                str(small),
                "--model",
                "efficientnet-lite0",
                "--out",
                str(run),
                "--epochs",
                "3",
                "--patience",
                "100",
                flag,
                *common,
            )
            rows = history(run)
            epoch_seconds = median_after_first(rows, "train_seconds")
            print(
                f"  {label:<20} {epoch_seconds:8.3f} s per training epoch "
                f"(whole command {wall:.0f} s)"
            )


if __name__ == "__main__":
    main()
