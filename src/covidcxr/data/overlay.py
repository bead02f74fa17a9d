"""Pictures of lung masks: the outline drawn on the X-ray, and a mask as a PNG.

:func:`lung_outline_overlay` is what ``covidcxr segment predict`` saves beside each mask, and the
base that Grad-CAM overlays draw their heat map on.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from covidcxr.data.transforms import check_grey_image, resize_mask

__all__ = ["lung_outline_overlay", "mask_to_png", "outline_width", "save_overlay"]

#: Outline pixels per pixel of the image's shorter side: about 1/150 of it, so that a film shown
#: at ~300 px (a page, a thumbnail) still shows a line of two screen pixels.
OUTLINE_FRACTION = 1 / 150


def outline_width(shape: tuple[int, ...]) -> int:
    """The outline width (pixels) for an image of ``shape`` ``(H, W, ...)``: 2 up to 375 px,
    then 1/150 of the shorter side (20 px on a 3,000-pixel film), so it survives scaling down."""
    return max(2, round(min(shape[:2]) * OUTLINE_FRACTION))


def lung_outline_overlay(
    image: np.ndarray,
    mask: np.ndarray,
    colour: Sequence[int] = (255, 64, 64),
    thickness: int | None = None,
) -> np.ndarray:
    """The X-ray in grey with the lung outline drawn in ``colour``.

    Args:
        image: ``(H, W)`` float in ``[0, 1]``, covidcxr's image convention (:mod:`covidcxr.io`).
        mask: ``(h, w)`` bool lung mask of any size; it is resized to ``(H, W)`` with
            :func:`~covidcxr.data.transforms.resize_mask` (nearest neighbour, pixel centres
            aligned), so the database's 256×256 masks fit their 299×299 images.
        colour: ``(red, green, blue)``, each an int in ``[0, 255]``.
        thickness: outline width in pixels (≥ 1); by default :func:`outline_width` of the
            image, so the line stays visible when a large film is shown small.

    Returns:
        ``(H, W, 3)`` uint8 RGB: grey ``round(255 × image)`` in all three channels, except the
        outline pixels, which are ``colour``.

    The outline is the mask's inner boundary (the mask minus its 3×3 erosion: a 1-pixel line,
    including mask pixels on the image border) dilated by a ``thickness`` × ``thickness``
    square, so it straddles the boundary (for even widths one pixel more falls on one side).
    """
    check_grey_image(image)
    colour = _check_colour(colour)
    if thickness is None:
        thickness = outline_width(image.shape)
    if isinstance(thickness, bool) or not isinstance(thickness, int | np.integer) or thickness < 1:
        raise ValueError(f"thickness should be a positive int (pixels), got {thickness!r}")
    lung_mask = resize_mask(mask, image.shape)
    boundary = lung_mask & ~ndimage.binary_erosion(lung_mask, structure=np.ones((3, 3), bool))
    if thickness > 1:
        boundary = ndimage.binary_dilation(
            boundary, structure=np.ones((thickness, thickness), dtype=bool)
        )
    grey = np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)
    rgb = np.repeat(grey[:, :, None], 3, axis=2)
    rgb[boundary] = colour
    return rgb


def save_overlay(path: str | Path, rgb: np.ndarray) -> Path:
    """Write an ``(H, W, 3)`` uint8 RGB array (e.g. from :func:`lung_outline_overlay`) as a PNG
    at ``path`` (suffix ``.png``), creating its folder. Returns the path."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"{path}: overlays are written as PNG; use a .png file name")
    if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3:
        shape = rgb.shape if isinstance(rgb, np.ndarray) else type(rgb).__name__
        raise ValueError(f"rgb should be a numpy array of shape (H, W, 3), got {shape}")
    if rgb.dtype != np.uint8:
        raise ValueError(f"rgb should have dtype uint8, got {rgb.dtype}")
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(rgb)).save(path, format="PNG")
    return path


def mask_to_png(mask: np.ndarray) -> Image.Image:
    """A bool ``(H, W)`` mask as a Pillow image of mode ``"L"``: 255 inside, 0 outside (the
    database's own mask format, which :func:`covidcxr.io.read_mask` reads back exactly)."""
    if not isinstance(mask, np.ndarray) or mask.ndim != 2 or mask.dtype != bool:
        description = (
            f"{mask.dtype} array of shape {mask.shape}"
            if isinstance(mask, np.ndarray)
            else type(mask).__name__
        )
        raise ValueError(f"mask should be a bool numpy array (H, W), got {description}")
    # uint8 (H, W) arrays become mode "L".
    return Image.fromarray(np.where(mask, np.uint8(255), np.uint8(0)))


def _check_colour(colour: Sequence[int]) -> tuple[int, int, int]:
    try:
        values = tuple(colour)
        valid = len(values) == 3 and all(
            isinstance(v, int | np.integer) and not isinstance(v, bool) and 0 <= v <= 255
            for v in values
        )
    except TypeError:
        valid = False
    if not valid:
        raise ValueError(f"colour should be (red, green, blue) ints in [0, 255], got {colour!r}")
    return tuple(int(v) for v in values)
