"""The one resize covidcxr uses for images and lung masks.

Training, caching and prediction must preprocess identically, so every resize goes through
:func:`resize_image` or :func:`resize_mask`; nothing else in covidcxr calls Pillow's ``resize``.

Both are a plain stretch to the target ``(height, width)``: the aspect ratio is not kept, as in the
paper (Keras resized every image straight to 100×100 or 224×224). Both use half-pixel-centre
alignment (output pixel ``i`` samples source position ``(i + 0.5) * H / h``), so an image and its
mask of a different size (the database's 299×299 images and 256×256 masks) resized to the same
target stay aligned.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

__all__ = ["check_grey_image", "resize_float_map", "resize_image", "resize_mask"]

# Values this far outside [0, 1] are float noise from arithmetic, not a wrong convention.
_RANGE_TOLERANCE = 1e-3


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a grey image to ``size`` and quantise it to 8 bits.

    Args:
        image: ``(H, W)`` float32 (float64 accepted) in ``[0, 1]``, covidcxr's image convention
            (see :mod:`covidcxr.io`).
        size: target ``(height, width)``, both positive.

    Returns:
        ``(height, width)`` uint8 array in ``[0, 255]``: ``round(x * 255)`` of the resized image.

    Anti-aliased bilinear (Pillow's ``BILINEAR``, whose triangle filter widens when shrinking, so
    shrinking 299 → 100 averages every source pixel instead of skipping two of three). The resize
    runs on the float image (Pillow mode ``"F"``, double-precision accumulation) and rounds once at
    the end. Going through 8-bit mode ``"L"`` instead is no faster (both ~0.5 ms for 299×299 →
    100×100) but rounds after each of its two passes, which leaves 10–20 % of pixels off by one.
    """
    check_grey_image(image)
    height, width = _check_size(size)
    source = Image.fromarray(np.ascontiguousarray(image, dtype=np.float32), mode="F")
    resized = np.asarray(source.resize((width, height), Image.Resampling.BILINEAR))
    # The triangle filter's weights are non-negative, so the result stays in range up to float
    # error; the clip only guards the rounding at the ends.
    return np.clip(np.rint(resized * np.float32(255.0)), 0, 255).astype(np.uint8)


def resize_float_map(values: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of any float map (a heatmap, lung probabilities, an image) to ``size``
    ``(height, width)``, as float32; values stay within the input's range (bilinear weights are
    non-negative and sum to one) up to float error. The same size comes back as it is."""
    if values.shape == tuple(size):
        return values.astype(np.float32, copy=False)
    height, width = size
    source = Image.fromarray(np.ascontiguousarray(values, dtype=np.float32), mode="F")
    return np.asarray(source.resize((width, height), Image.Resampling.BILINEAR), dtype=np.float32)


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a binary mask to ``size`` by nearest neighbour.

    Args:
        mask: ``(H, W)`` bool, True inside the lungs.
        size: target ``(height, width)``, both positive.

    Returns:
        ``(height, width)`` bool array.

    Output pixel ``(i, j)`` takes the source pixel containing its centre,
    row ``floor((i + 0.5) * H / height)``, computed in integers so that exact ties (e.g. row 149
    of 256 → 299) resolve the same way on every platform. This is Pillow's ``NEAREST`` except at
    such ties, where Pillow's float arithmetic may pick the neighbour.
    """
    _check_array(mask, "mask", kinds="b")
    height, width = _check_size(size)
    source_height, source_width = mask.shape
    rows = ((2 * np.arange(height) + 1) * source_height) // (2 * height)
    cols = ((2 * np.arange(width) + 1) * source_width) // (2 * width)
    return mask[np.ix_(rows, cols)]


def check_grey_image(image: np.ndarray, name: str = "image") -> None:
    """Raise ValueError, saying what is wrong and how to fix it, unless ``image`` follows the
    covidcxr convention: a non-empty float ``(H, W)`` numpy array with values in ``[0, 1]``
    (up to float noise; NaN fails)."""
    _check_array(image, name, kinds="f")
    low, high = float(image.min()), float(image.max())
    # Written so that NaN fails the test too.
    if not (low >= -_RANGE_TOLERANCE and high <= 1.0 + _RANGE_TOLERANCE):
        raise ValueError(
            f"{name} values should lie in [0, 1], got [{low:g}, {high:g}]; "
            "read images with covidcxr.io.read_image (or divide 8-bit values by 255)"
        )


def _check_array(array: np.ndarray, name: str, kinds: str) -> None:
    expected = {"f": "float32", "b": "bool"}[kinds]
    if not isinstance(array, np.ndarray):
        raise ValueError(
            f"{name} should be a numpy array of {expected}, got {type(array).__name__}"
        )
    if array.ndim != 2:
        raise ValueError(
            f"{name} should have 2 dims (height, width), got {array.ndim} with shape {array.shape}"
        )
    if array.dtype.kind not in kinds:
        if kinds == "f":
            raise ValueError(
                f"{name} should be a float array of dtype float32, got {array.dtype}; read it "
                "with covidcxr.io.read_image"
            )
        raise ValueError(f"{name} should have dtype {expected}, got {array.dtype}")
    if array.size == 0:
        raise ValueError(f"{name} should not be empty, got shape {array.shape}")


def _check_size(size: tuple[int, int]) -> tuple[int, int]:
    try:
        height, width = size
        valid = all(isinstance(v, int | np.integer) and not isinstance(v, bool) for v in size)
    except (TypeError, ValueError):
        valid = False
    if not valid or height < 1 or width < 1:
        raise ValueError(f"size should be (height, width) with two positive ints, got {size!r}")
    return int(height), int(width)
