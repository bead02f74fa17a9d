"""How long near-duplicate detection takes on the full COVID-19 Radiography Database.

Measures (1) decode + hash (perceptual hash and detail signature) throughput on synthetic
299x299 8-bit PNG files (the database's format) with 1 and 2 processes, and (2) grouping time
for 21,165 hashes, random plus planted duplicates; then extrapolates to the 21,165-image
database. Prints figures, asserts nothing.

    .venv/bin/python benchmarks/bench_duplicates.py [--images 2000] [--processes 1 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from covidcxr.data.duplicates import (
    HASH_BITS,
    HASH_WORDS,
    detail_signature,
    duplicate_groups,
    group_near_duplicates,
    perceptual_hash,
)
from covidcxr.io import read_image

DATABASE_IMAGES = 21_165
SIZE = 299


def synthetic_radiograph(rng: np.random.Generator) -> np.ndarray:
    """A uint8 (299, 299) picture with X-ray-like statistics: a bright body ellipse, two darker
    lung fields, smooth noise and grain, so PNG decoding and hashing cost what they do on real
    data."""
    rows, columns = (axis / np.float32(SIZE) for axis in np.ogrid[0:SIZE, 0:SIZE])
    centre_x, centre_y = 0.5 + rng.normal(0, 0.03, 2)
    body = ((columns - centre_x) / 0.42) ** 2 + ((rows - centre_y) / 0.48) ** 2 < 1
    lungs = sum(
        ((columns - centre_x - side * 0.17) / 0.13) ** 2 + ((rows - centre_y + 0.05) / 0.3) ** 2 < 1
        for side in (-1, 1)
    )
    # Smooth noise: upsampling a coarse random field is much cheaper than filtering a fine one.
    coarse = rng.normal(0, 20, (24, 24)).astype(np.float32)
    smooth = np.asarray(
        Image.fromarray(coarse, mode="F").resize((SIZE, SIZE), Image.Resampling.BICUBIC)
    )
    picture = 40 + 140 * body - 75 * lungs + smooth + rng.normal(0, 5, (SIZE, SIZE))
    return np.clip(picture, 0, 255).astype(np.uint8)


def write_image(path: Path) -> Path:
    seed = int(path.stem.rsplit("-", 1)[1])
    Image.fromarray(synthetic_radiograph(np.random.default_rng(seed))).save(path)
    return path


def write_images(folder: Path, count: int, processes: int) -> list[Path]:
    paths = [folder / f"image-{index}.png" for index in range(count)]
    with ProcessPoolExecutor(processes) as pool:
        return list(pool.map(write_image, paths, chunksize=64))


def hash_file(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """What ``data inspect`` / ``data split`` compute per image for duplicate detection."""
    image = read_image(path)
    return perceptual_hash(image), detail_signature(image)


def hashing_throughput(paths: list[Path], processes: int) -> tuple[float, float | None]:
    """Images per wall-clock second for decode + hash, and (one process only) per CPU second,
    which other work on the machine does not distort. Pool start-up is excluded."""
    if processes == 1:
        hash_file(paths[0])  # warm imports (scipy.fftpack) before timing
        start, start_cpu = time.perf_counter(), time.process_time()
        for path in paths:
            hash_file(path)
        cpu = time.process_time() - start_cpu
        return len(paths) / (time.perf_counter() - start), len(paths) / cpu
    with ProcessPoolExecutor(processes) as pool:
        list(pool.map(hash_file, paths[: 4 * processes]))
        start = time.perf_counter()
        list(pool.map(hash_file, paths, chunksize=64))
        return len(paths) / (time.perf_counter() - start), None


def planted_hashes(count: int, seed: int = 0) -> tuple[np.ndarray, int]:
    """``count`` random hashes in which ~2 % of rows are planted near-copies of another row."""
    rng = np.random.default_rng(seed)
    maximum = np.iinfo(np.uint64).max
    hashes = rng.integers(0, maximum, (count, HASH_WORDS), np.uint64, endpoint=True)
    copies = rng.choice(count, size=count // 50, replace=False)
    originals = rng.choice(np.setdiff1d(np.arange(count), copies), size=copies.size)
    for copy, original in zip(copies, originals, strict=True):
        bits = np.zeros(HASH_BITS, dtype=bool)
        bits[rng.choice(HASH_BITS, rng.integers(0, 9), replace=False)] = True
        flips = np.packbits(bits).view(">u8").astype(np.uint64)
        hashes[copy] = hashes[original] ^ flips
    return hashes, copies.size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000, help="synthetic PNG files to hash")
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--hashes", type=int, default=DATABASE_IMAGES, help="hashes to group")
    arguments = parser.parse_args()

    print(
        f"python {platform.python_version()}, numpy {np.__version__}, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f} (other work on the machine slows every figure)"
    )
    throughput: dict[int, float] = {}
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        paths = write_images(Path(folder), arguments.images, max(arguments.processes))
        print(f"wrote {len(paths)} synthetic {SIZE}x{SIZE} PNG files in ", end="")
        print(f"{time.perf_counter() - start:.1f} s")
        for processes in arguments.processes:
            throughput[processes], per_cpu_second = hashing_throughput(paths, processes)
            cpu_note = "" if per_cpu_second is None else f" ({per_cpu_second:.0f} per CPU second)"
            print(
                f"decode + hash, {processes} process(es): {throughput[processes]:7.0f} "
                f"images/s{cpu_note}"
            )

    hashes, planted = planted_hashes(arguments.hashes)
    start, start_cpu = time.perf_counter(), time.process_time()
    group_ids = group_near_duplicates(hashes)
    grouping = time.perf_counter() - start
    cpu = time.process_time() - start_cpu
    found = sum(len(members) - 1 for members in duplicate_groups(group_ids))
    print(
        f"group {len(hashes)} hashes: {grouping:.2f} s, CPU {cpu:.2f} s "
        f"({found} of {planted} planted copies joined a group)"
    )

    best_processes = max(throughput, key=throughput.__getitem__)
    hashing_time = DATABASE_IMAGES / throughput[best_processes]
    total = hashing_time + grouping
    print(
        f"full database ({DATABASE_IMAGES} images): hash {hashing_time:.0f} s with "
        f"{best_processes} process(es) + group {grouping:.1f} s = {total:.0f} s"
    )


if __name__ == "__main__":
    main()
