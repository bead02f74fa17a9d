"""Clean up a predicted lung mask: keep the two lungs, drop specks, fill holes.

A U-Net's raw mask often has small false-positive islands (bowel gas, the other side of the
chest wall) and holes where dense consolidation looks like soft tissue. Lungs are two solid
regions, so :func:`postprocess_lungs` keeps the two largest connected components and fills their
holes. Every function takes and returns a bool ``(H, W)`` numpy array; an empty mask stays empty.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["fill_holes", "keep_largest_components", "postprocess_lungs"]

# 8-connectivity: pixels touching by a corner belong to one component. A lung's thin apex or
# costophrenic tip, after resizing, is often joined to the rest only diagonally; with
# 4-connectivity it would become a separate small component and be discarded. The price: two
# lungs touching at a corner count as one component (then the next-largest island is kept too).
_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def keep_largest_components(mask: np.ndarray, count: int = 2) -> np.ndarray:
    """Keep the ``count`` largest 8-connected components of a bool ``(H, W)`` mask.

    Components are compared by pixel count; equal sizes keep the component whose first pixel
    comes first in row-major order, so the result is deterministic. A mask with ``count`` or
    fewer components is returned unchanged (as a copy); an empty mask stays empty.
    """
    _check_mask(mask)
    if isinstance(count, bool) or not isinstance(count, int | np.integer) or count < 1:
        raise ValueError(f"count should be a positive int (2 for two lungs), got {count!r}")
    labels, num_components = ndimage.label(mask, structure=_EIGHT_CONNECTED)
    if num_components <= count:
        return mask.copy()
    sizes = np.bincount(labels.ravel())[1:]  # label 0 is the background
    # Stable sort on negated sizes: largest first, ties in label (row-major) order.
    kept_labels = np.argsort(-sizes, kind="stable")[:count] + 1
    return np.isin(labels, kept_labels)


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill the holes of a bool ``(H, W)`` mask: background regions not connected to the image
    border. Background connectivity is 4 (scipy's default), the usual partner of 8-connected
    foreground, so a hole closed only by diagonal steps still counts as a hole."""
    _check_mask(mask)
    return ndimage.binary_fill_holes(mask)


def postprocess_lungs(mask: np.ndarray) -> np.ndarray:
    """The two largest components of a bool ``(H, W)`` lung mask, with their holes filled."""
    return fill_holes(keep_largest_components(mask, count=2))


def _check_mask(mask: np.ndarray) -> None:
    if not isinstance(mask, np.ndarray):
        raise ValueError(f"mask should be a numpy array of bool, got {type(mask).__name__}")
    if mask.ndim != 2:
        raise ValueError(
            f"mask should have 2 dims (height, width), got {mask.ndim} with shape {mask.shape}"
        )
    if mask.dtype != bool:
        raise ValueError(
            f"mask should have dtype bool, got {mask.dtype}; threshold it first "
            "(e.g. probabilities >= 0.5)"
        )
