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

import numpy as np

from covidcxr.data.transforms import check_grey_image, resize_mask

__all__ = ["LUNG_MODES", "focus_on_lungs", "lung_bounding_box"]

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
