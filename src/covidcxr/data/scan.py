"""One parallel pass over a dataset's images: header facts, intensity histograms, perceptual
hashes, and thumbnails for figures. Every image is decoded once; bad files (unreadable, of an
unsupported format, not regular files, holding NaN or infinite values...) are collected with
their reasons, never fatal."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from covidcxr.data.sample import Sample
from covidcxr.io import ImageInfo, ImageReadError, failure_reason, load_image
from covidcxr.pool import parallel_map

HISTOGRAM_BINS = 32
THUMBNAIL_SIZE = 128


@dataclass
class ImageScan:
    """Per-sample results of :func:`scan_images`, aligned with the samples passed in.

    ``ok[i]`` is False where the image could not be read; its ``infos[i]`` is None and its hash
    and histogram rows are zero. ``histograms`` (N, HISTOGRAM_BINS) hold the fraction of pixels
    per intensity bin over [0, 1]; ``hashes`` (N, words) are uint64 perceptual hashes and
    ``signatures`` (N, 4096) their int8 detail signatures (see :mod:`covidcxr.data.duplicates`),
    ``twins`` (N, 64, 64) their uint8 twin thumbnails (see :mod:`covidcxr.data.twins`).
    ``failures`` lists ``(path, reason)`` for unreadable images and masks.
    """

    infos: list[ImageInfo | None]
    mask_infos: list[ImageInfo | None]
    ok: np.ndarray
    histograms: np.ndarray
    hashes: np.ndarray
    signatures: np.ndarray
    twins: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 0), dtype=np.uint8))
    thumbnails: dict[int, np.ndarray] = field(default_factory=dict)
    failures: list[tuple[Path, str]] = field(default_factory=list)


def scan_images(
    samples: Sequence[Sample],
    *,
    hashes: bool = True,
    thumbnails: Iterable[int] = (),
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ImageScan:
    """Decode every sample's image (and mask) once and measure it.

    ``thumbnails`` are the indices of samples to keep a THUMBNAIL_SIZE² uint8 thumbnail of.
    """
    wanted = set(thumbnails)
    jobs = [(s.path, s.mask_path, i in wanted, hashes) for i, s in enumerate(samples)]
    count = len(samples)
    scan = ImageScan(
        infos=[None] * count,
        mask_infos=[None] * count,
        ok=np.zeros(count, dtype=bool),
        histograms=np.zeros((count, HISTOGRAM_BINS), dtype=np.float32),
        hashes=np.zeros((count, 0), dtype=np.uint64),
        signatures=np.zeros((count, 0), dtype=np.int8),
    )
    hash_rows: list[tuple[np.ndarray, np.ndarray, np.ndarray] | None] = [None] * count
    for index, result in enumerate(parallel_map(_scan_one, jobs, workers, progress)):
        if result["error"] is not None:
            scan.failures.append((samples[index].path, result["error"]))
        else:
            scan.ok[index] = True
            scan.infos[index] = result["info"]
            scan.histograms[index] = result["histogram"]
            hash_rows[index] = result["hash"]
            if result["thumbnail"] is not None:
                scan.thumbnails[index] = result["thumbnail"]
        if result["mask_error"] is not None:
            scan.failures.append((samples[index].mask_path, result["mask_error"]))
        scan.mask_infos[index] = result["mask_info"]
    present = [row for row in hash_rows if row is not None]
    if hashes and present:
        scan.hashes = np.zeros((count, present[0][0].size), dtype=np.uint64)
        scan.signatures = np.zeros((count, present[0][1].size), dtype=np.int8)
        scan.twins = np.zeros((count, *present[0][2].shape), dtype=np.uint8)
        for index, row in enumerate(hash_rows):
            if row is not None:
                scan.hashes[index], scan.signatures[index], scan.twins[index] = row
    return scan


def _scan_one(job: tuple[Path, Path | None, bool, bool]) -> dict[str, Any]:
    path, mask_path, want_thumbnail, want_hash = job
    result: dict[str, Any] = {
        "error": None,
        "info": None,
        "histogram": None,
        "hash": None,
        "thumbnail": None,
        "mask_info": None,
        "mask_error": None,
    }
    try:
        loaded = load_image(path)
    except (ImageReadError, OSError) as error:
        result["error"] = failure_reason(error)
    else:
        try:
            result.update(_measure(loaded.image, want_hash, want_thumbnail))
            result["info"] = loaded.info
        except ValueError as error:  # an image the measures refuse is one bad file, not fatal
            result["error"] = f"the image could not be measured ({error})"
    if mask_path is not None:
        try:
            result["mask_info"] = load_image(mask_path).info
        except (ImageReadError, OSError) as error:
            result["mask_error"] = failure_reason(error)
    return result


def _measure(image: np.ndarray, want_hash: bool, want_thumbnail: bool) -> dict[str, Any]:
    """Histogram, and hashes and thumbnail where wanted, of one image (H, W) in [0, 1]."""
    counts, _ = np.histogram(image, bins=HISTOGRAM_BINS, range=(0.0, 1.0))
    measured: dict[str, Any] = {"histogram": (counts / max(1, image.size)).astype(np.float32)}
    if want_hash:
        from covidcxr.data.duplicates import detail_signature, perceptual_hash
        from covidcxr.data.twins import twin_thumbnail

        measured["hash"] = (perceptual_hash(image), detail_signature(image), twin_thumbnail(image))
    if want_thumbnail:
        from covidcxr.data.transforms import resize_image

        measured["thumbnail"] = resize_image(image, (THUMBNAIL_SIZE, THUMBNAIL_SIZE))
    return measured
