"""Lung-focused views of an X-ray, so that a classifier sees only the lungs.

Classifiers trained on whole chest X-rays learn shortcuts outside the lungs (text markers,
the shoulders, the hospital's collimation). :func:`focus_on_lungs` removes them in one of
:data:`LUNG_MODES`:

* ``"none"``: the image as it is;
* ``"crop"``: the image cropped to the lungs' bounding box plus a margin (smaller image);
* ``"mask"``: the image with every pixel outside the lungs set to 0 (black, air; same size).

The lung mask may have any size: the database's masks are 256×256 for 299×299 images. It is
first resized to the image's size with :func:`~covidcxr.data.transforms.resize_mask` (nearest
neighbour, pixel centres aligned), so both modes use exactly the mask pixels that the training
cache and the overlays use.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from covidcxr.data.sample import Sample
from covidcxr.data.transforms import check_grey_image, resize_mask

__all__ = ["LUNG_MODES", "FocusedBatch", "focus_on_lungs", "load_lung_focused", "lung_bounding_box"]

LUNG_MODES = ("none", "crop", "mask")


def lung_bounding_box(mask: np.ndarray, margin: float = 0.05) -> tuple[int, int, int, int] | None:
    """The bounding box of a bool ``(H, W)`` mask, enlarged by a margin.

    Returns ``(top, bottom, left, right)``, half-open (``mask[top:bottom, left:right]``), or
    ``None`` when the mask is empty. Each side moves out by ``margin`` × the box's own height
    (top and bottom) or width (left and right), rounded half up to whole pixels, and is clipped
    to the mask, so ``margin=0.05`` adds 5 % above, below, left and right.
    """
    _check_mask(mask)
    if not (isinstance(margin, int | float) and math.isfinite(margin) and margin >= 0):
        raise ValueError(f"margin should be a finite number ≥ 0 (e.g. 0.05), got {margin!r}")
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    top, bottom = int(rows[0]), int(rows[-1]) + 1
    left, right = int(cols[0]), int(cols[-1]) + 1
    pad_rows = math.floor(margin * (bottom - top) + 0.5)
    pad_cols = math.floor(margin * (right - left) + 0.5)
    height, width = mask.shape
    return (
        max(0, top - pad_rows),
        min(height, bottom + pad_rows),
        max(0, left - pad_cols),
        min(width, right + pad_cols),
    )


def focus_on_lungs(
    image: np.ndarray, lung_mask: np.ndarray, mode: str, margin: float = 0.05
) -> np.ndarray:
    """Crop or mask an X-ray to its lungs (see the module docstring for the modes).

    Args:
        image: ``(H, W)`` float in ``[0, 1]``, covidcxr's image convention (:mod:`covidcxr.io`).
        lung_mask: ``(h, w)`` bool, any size; resized to ``(H, W)`` first. Not read in mode
            ``"none"`` (it may then be ``None``).
        mode: one of :data:`LUNG_MODES`.
        margin: for ``"crop"``, the margin of :func:`lung_bounding_box`, as a fraction of the
            box's height and width (computed in image pixels).

    Returns:
        ``"none"``: ``image`` itself. ``"crop"``: a new ``(H', W')`` array, ``H' ≤ H``,
        ``W' ≤ W``. ``"mask"``: a new ``(H, W)`` array, 0 outside the lungs. Same dtype as
        ``image``.

    A mask that is empty once resized (no lungs found, or a few pixels lost in shrinking)
    returns ``image`` unchanged in every mode: cropping to nothing or blacking out the whole
    image would only feed the classifier noise. This function does not warn; callers count such
    images (``not lung_mask.any()``) and report them.
    """
    if mode not in LUNG_MODES:
        raise ValueError(f"mode should be one of {', '.join(map(repr, LUNG_MODES))}, got {mode!r}")
    check_grey_image(image)
    if mode == "none":
        return image
    resized_mask = resize_mask(lung_mask, image.shape)
    if mode == "crop":
        box = lung_bounding_box(resized_mask, margin=margin)
        if box is None:
            return image
        top, bottom, left, right = box
        return image[top:bottom, left:right].copy()
    if not resized_mask.any():
        return image
    return np.where(resized_mask, image, image.dtype.type(0))


def _check_mask(mask: np.ndarray) -> None:
    if not isinstance(mask, np.ndarray):
        raise ValueError(f"mask should be a numpy array of bool, got {type(mask).__name__}")
    if mask.ndim != 2 or mask.dtype != bool:
        raise ValueError(
            f"mask should be a bool array of shape (height, width), got {mask.dtype} with "
            f"shape {mask.shape}; read masks with covidcxr.io.read_mask"
        )


@dataclass
class FocusedBatch:
    """Lung-focused images (uint8 (N, S, S)), which could be made, and why not."""

    array: np.ndarray
    ok: np.ndarray
    failures: list[tuple[Path, str]]


def load_lung_focused(
    samples: Sequence[Sample],
    mode: str,
    margin: float,
    input_size: int,
    segmenter=None,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> FocusedBatch:
    """Every image cropped to its lungs or with everything outside them set to black
    (``mode``), then resized like the cache does. Lung masks come from ``segmenter`` (a
    :class:`covidcxr.inference.artifact.Segmenter`) when given, else from the dataset's own masks
    (every image then needs one). Not cached on disk: the masks decide the pixels."""
    from covidcxr.data.transforms import resize_image
    from covidcxr.io import ImageReadError, failure_reason, read_image
    from covidcxr.pool import parallel_map

    size = (input_size, input_size)
    array = np.zeros((len(samples), input_size, input_size), dtype=np.uint8)
    ok = np.zeros(len(samples), dtype=bool)
    failures: list[tuple[Path, str]] = []
    if segmenter is None:
        missing = [s.path for s in samples if s.mask_path is None]
        if missing:
            raise ValueError(
                f"--lungs {mode}: {len(missing)} images have no lung mask in the dataset "
                f"(e.g. {missing[0]}); pass --seg-model RUN to segment them"
            )
        jobs = [(s.path, s.mask_path, mode, margin, size) for s in samples]
        for index, (pixels, error) in enumerate(
            parallel_map(_focused_from_file_mask, jobs, workers, progress)
        ):
            if error is None:
                array[index], ok[index] = pixels, True
            else:
                failures.append((samples[index].path, error))
        return FocusedBatch(array, ok, failures)

    chunk = 32
    for start in range(0, len(samples), chunk):
        images, positions = [], []
        for index in range(start, min(len(samples), start + chunk)):
            try:
                images.append(read_image(samples[index].path))
                positions.append(index)
            except (ImageReadError, OSError) as error:
                failures.append((samples[index].path, failure_reason(error)))
        for index, image, mask in zip(
            positions, images, segmenter.predict_masks(images) if images else [], strict=True
        ):
            focused = focus_on_lungs(image, mask, mode, margin)
            array[index], ok[index] = resize_image(focused, size), True
        if progress is not None:
            progress(min(len(samples), start + chunk), len(samples))
    return FocusedBatch(array, ok, failures)


def _focused_from_file_mask(job) -> tuple[np.ndarray | None, str | None]:
    from covidcxr.data.transforms import resize_image
    from covidcxr.io import ImageReadError, failure_reason, read_image, read_mask

    path, mask_path, mode, margin, size = job
    try:
        focused = focus_on_lungs(read_image(path), read_mask(mask_path), mode, margin)
        return resize_image(focused, size), None
    except (ImageReadError, OSError) as error:
        return None, failure_reason(error)
