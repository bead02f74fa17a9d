"""How fast ImageCache fills and serves, on synthetic 299×299 8-bit PNGs like the database's.

    .venv/bin/python benchmarks/bench_cache.py [--count 3000] [--size 100]

Writes the PNGs and the caches to a temporary directory (deleted afterwards) and prints images/s
for a direct decode + resize (no cache), cold passes (every file a miss) in process and with 1 and
2 worker processes, warm passes (all hits) and the bytes the cache takes per image. The PNGs are
in the OS page cache throughout, so "cold" measures decoding, not the disk. Takes ~1 minute for
3000 images on 2 cores. Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter

from covidcxr.data.cache import ImageCache
from covidcxr.data.transforms import resize_image
from covidcxr.io import read_image

SIDE = 299


def make_pngs(directory: Path, count: int, processes: int = 2) -> list[Path]:
    """``count`` chest-like 299×299 grey PNGs: smooth texture, two dark lung ellipses, grain.

    Their size (~48 KB) and decode time are close to the database's Viral Pneumonia PNGs
    (~40 KB, ~2.5 ms decode + resize here). PNG encoding dominates, so it runs in processes.
    """
    directory.mkdir(parents=True, exist_ok=True)
    parts = [range(start, count, processes) for start in range(processes)]
    with ProcessPoolExecutor(processes) as executor:
        written = executor.map(_write_pngs, [directory] * processes, parts)
    return sorted(path for part in written for path in part)


def _write_pngs(directory: Path, indices: range) -> list[Path]:
    texture_rng = np.random.default_rng(0)
    textures = [gaussian_filter(texture_rng.random((SIDE, SIDE)), sigma=4) for _ in range(8)]
    textures = [(t - t.min()) / (t.max() - t.min()) for t in textures]
    rows, cols = np.mgrid[0:SIDE, 0:SIDE]
    paths = []
    for index in indices:
        rng = np.random.default_rng(index + 1)
        texture = np.roll(textures[index % len(textures)], rng.integers(0, SIDE, 2), axis=(0, 1))
        image = 0.35 + 0.3 * texture + 0.2 * (rows / SIDE)
        for centre_col in (0.32, 0.68):
            centre = rng.normal([0.5 * SIDE, centre_col * SIDE], 6)
            radii = rng.normal([0.32 * SIDE, 0.14 * SIDE], 4)
            inside = ((rows - centre[0]) / radii[0]) ** 2 + ((cols - centre[1]) / radii[1]) ** 2
            image -= 0.25 * (inside < 1)
        image += rng.normal(0, 0.012, image.shape)
        pixels = np.clip(np.rint(image * 255), 0, 255).astype(np.uint8)
        path = directory / f"synthetic-{index:05d}.png"
        Image.fromarray(pixels, mode="L").save(path)
        paths.append(path)
    return paths


def timed(function) -> tuple[float, object]:
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=3000, help="synthetic PNGs to write")
    parser.add_argument("--size", type=int, default=100, help="cached side length (square)")
    args = parser.parse_args()
    size = (args.size, args.size)

    with tempfile.TemporaryDirectory(prefix="bench-cache-") as temporary:
        root = Path(temporary)
        seconds, paths = timed(lambda: make_pngs(root / "pngs", args.count))
        png_bytes = sum(path.stat().st_size for path in paths) / len(paths)
        print(
            f"wrote {len(paths)} PNGs ({SIDE}×{SIDE}, mean {png_bytes / 1024:.1f} KiB) "
            f"in {seconds:.1f} s; cpu_count={os.cpu_count()}; target {size[0]}×{size[1]}"
        )

        # Flush the new files and read them once, so that every pass below reads PNGs from the
        # OS page cache ("cold" = not in ImageCache) and none competes with writeback.
        os.sync()
        for path in paths:
            path.read_bytes()

        # Other work on the machine skews every figure; the load average says how much.
        print("load average (1, 5, 15 min): " + ", ".join(f"{v:.2f}" for v in os.getloadavg()))
        print()

        rows: list[tuple[str, float, int]] = []
        sample = paths[: min(500, len(paths))]
        seconds, _ = timed(lambda: [resize_image(read_image(path), size) for path in sample])
        rows.append(("direct read_image + resize_image, no cache", seconds, len(sample)))

        # Best of two runs (each into an empty cache): this machine is shared and noisy.
        for workers in (0, 1, 2):
            best = float("inf")
            for repeat in range(2):
                cache = ImageCache(root / f"cache-workers-{workers}-{repeat}")
                seconds, batch = timed(
                    lambda c=cache, w=workers: c.get_many(paths, size, workers=w)
                )
                assert batch.misses == len(paths) and not batch.failures
                best = min(best, seconds)
            label = "in process" if workers == 0 else f"workers={workers}"
            rows.append((f"cold pass, {label}", best, len(paths)))

        # The warm pass reads the cache filled by workers=2, from a new object (new connection).
        warm_cache = ImageCache(root / "cache-workers-2-1")
        seconds, batch = timed(lambda: warm_cache.get_many(paths, size, workers=0))
        assert batch.hits == len(paths)
        rows.append(("warm pass (all hits)", seconds, len(paths)))
        seconds, batch = timed(lambda: warm_cache.get_many(paths, size, workers=0))
        rows.append(("warm pass again", seconds, len(paths)))
        one = paths[len(paths) // 2]
        seconds, _ = timed(lambda: [warm_cache.get(one, size) for _ in range(1000)])
        rows.append(("get() of one cached file, 1000 times", seconds, 1000))

        width = max(len(name) for name, *_ in rows)
        print(f"{'pass':<{width}}  {'images/s':>10}  {'ms/image':>9}")
        print("-" * (width + 23))
        for name, seconds, count in rows:
            print(f"{name:<{width}}  {count / seconds:>10,.0f}  {1000 * seconds / count:>9.3f}")

        stats = warm_cache.stats()
        print(
            f"\non disk: {stats.disk_bytes / stats.entries:,.0f} bytes/image "
            f"(pixels {stats.payload_bytes / stats.entries:,.0f}); "
            f"{stats.entries} entries, {stats.disk_bytes / 2**20:.1f} MiB"
        )


if __name__ == "__main__":
    main()
