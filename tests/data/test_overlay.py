"""Lung outline overlays and mask PNGs: shapes, where the colour goes, mask/image size mismatch."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from covidcxr.data.overlay import lung_outline_overlay, mask_to_png, save_overlay
from covidcxr.io import read_mask
from helpers import gradient

RED = (255, 64, 64)


def ring(shape, top, bottom, left, right) -> np.ndarray:
    """The 1-pixel outermost ring of the rectangle [top:bottom, left:right]."""
    outline = np.zeros(shape, dtype=bool)
    outline[top:bottom, left:right] = True
    outline[top + 1 : bottom - 1, left + 1 : right - 1] = False
    return outline


def image_33x47() -> np.ndarray:
    return gradient(33, 47).astype(np.float32) / 255.0


def assert_grey_except(rgb: np.ndarray, image: np.ndarray, coloured: np.ndarray, colour):
    grey = np.rint(image * 255).astype(np.uint8)
    assert np.array_equal(rgb[~coloured], np.repeat(grey[~coloured][:, None], 3, axis=1))
    assert np.all(rgb[coloured] == np.array(colour, dtype=np.uint8))


def test_shape_dtype_and_one_pixel_outline_on_the_mask_border():
    image = image_33x47()
    mask = np.zeros(image.shape, dtype=bool)
    mask[8:25, 12:35] = True
    rgb = lung_outline_overlay(image, mask, colour=RED, thickness=1)
    assert rgb.shape == (33, 47, 3)
    assert rgb.dtype == np.uint8
    assert_grey_except(rgb, image, ring(image.shape, 8, 25, 12, 35), RED)


def test_thick_outline_straddles_the_border_and_leaves_the_interior_grey():
    image = image_33x47()
    mask = np.zeros(image.shape, dtype=bool)
    mask[8:25, 12:35] = True
    rgb = lung_outline_overlay(image, mask, colour=(0, 255, 0), thickness=3)
    coloured = np.all(rgb == (0, 255, 0), axis=2)
    # A 3×3 dilation of the ring covers exactly the band one pixel either side of it.
    band = np.zeros(image.shape, dtype=bool)
    band[7:26, 11:36] = True
    band[10:23, 14:33] = False
    assert np.array_equal(coloured, band)
    grey = np.rint(image * 255).astype(np.uint8)
    assert np.all(rgb[12:21, 16:31] == grey[12:21, 16:31, None])  # lung interior
    assert np.all(rgb[0:5] == grey[0:5, :, None])  # far outside


def test_default_thickness_is_two_pixels_wide():
    image = np.full((40, 40), 0.5, dtype=np.float32)
    mask = np.zeros(image.shape, dtype=bool)
    mask[10:30, 10:30] = True
    rgb = lung_outline_overlay(image, mask)
    coloured = np.all(rgb == RED, axis=2)
    middle_row = coloured[20]
    assert middle_row.sum() == 4  # two pixels at each side of the lung
    assert middle_row[10] and middle_row[29]  # the mask's own border pixels
    assert not coloured[15:25, 15:25].any()


def test_default_outline_grows_with_the_film_so_it_survives_scaling_down():
    from PIL import Image

    from covidcxr.data.overlay import outline_width

    assert [outline_width((s, s)) for s in (40, 299, 450, 1500, 3000)] == [2, 2, 3, 10, 20]
    side = 3000
    image = np.full((side, side), 0.5, dtype=np.float32)
    mask = np.zeros((256, 256), dtype=bool)
    mask[40:220, 40:220] = True
    rgb = lung_outline_overlay(image, mask)
    shown = np.asarray(Image.fromarray(rgb).resize((300, 300), Image.Resampling.LANCZOS))
    # at a tenth of its size the outline is still a red line, not a faint tint
    reddest = (shown[..., 0].astype(int) - shown[..., 1]).max(axis=1)
    assert reddest.max() > 150


def test_one_pixel_outline_is_every_lung_pixel_with_a_neighbour_outside():
    image = np.full((45, 51), 0.25, dtype=np.float32)
    rows, cols = np.mgrid[:45, :51]
    mask = (rows - 22) ** 2 + (cols - 25) ** 2 <= 15**2
    padded = np.pad(mask, 1)
    neighbours_all_inside = np.ones(mask.shape, dtype=bool)
    for dr in (-1, 0, 1):
        for dc in (-1, 0, 1):
            neighbours_all_inside &= padded[1 + dr : 46 + dr, 1 + dc : 52 + dc]
    rgb = lung_outline_overlay(image, mask, thickness=1)
    assert_grey_except(rgb, image, mask & ~neighbours_all_inside, RED)


@pytest.mark.parametrize(
    ("image_shape", "mask_shape", "mask_box", "image_box"),
    [
        # Rows 4:12 of 16 cover image rows whose centres (i + 0.5) × 16/33 fall in [4, 12):
        # rows 8..24; cols 4:12 of 16 cover cols whose centres × 16/47 fall in [4, 12): 12..34.
        ((33, 47), (16, 16), (4, 12, 4, 12), (8, 25, 12, 35)),
        ((33, 47), (66, 94), (16, 50, 24, 70), (8, 25, 12, 35)),  # exactly twice the size
        # The database's 256 → 299: col 149's centre lands exactly on mask col 128 (outside).
        ((299, 299), (256, 256), (64, 192, 32, 128), (75, 224, 37, 149)),
    ],
)
def test_mask_of_another_size_is_resized_onto_the_image(
    image_shape, mask_shape, mask_box, image_box
):
    image = np.linspace(0, 1, image_shape[0] * image_shape[1], dtype=np.float32).reshape(
        image_shape
    )
    mask = np.zeros(mask_shape, dtype=bool)
    top, bottom, left, right = mask_box
    mask[top:bottom, left:right] = True
    rgb = lung_outline_overlay(image, mask, thickness=1)
    assert rgb.shape == (*image_shape, 3)
    assert_grey_except(rgb, image, ring(image_shape, *image_box), RED)


def test_empty_mask_gives_the_grey_image():
    image = image_33x47()
    rgb = lung_outline_overlay(image, np.zeros((16, 16), dtype=bool))
    assert_grey_except(rgb, image, np.zeros(image.shape, dtype=bool), RED)


def test_save_overlay_round_trips(tmp_path):
    image = image_33x47()
    mask = np.zeros((16, 16), dtype=bool)
    mask[3:13, 2:14] = True
    rgb = lung_outline_overlay(image, mask)
    path = save_overlay(tmp_path / "nested" / "overlay.png", rgb)
    with Image.open(path) as saved:
        assert saved.format == "PNG"
        assert saved.mode == "RGB"
        assert np.array_equal(np.asarray(saved), rgb)
    with pytest.raises(ValueError, match=r"use a \.png file name"):
        save_overlay(tmp_path / "overlay.jpg", rgb)
    with pytest.raises(ValueError, match=r"\(H, W, 3\), got \(33, 47\)"):
        save_overlay(tmp_path / "grey.png", rgb[:, :, 0])


def test_mask_to_png_is_a_zero_255_grey_image_that_reads_back(tmp_path):
    mask = np.zeros((33, 47), dtype=bool)
    mask[5:20, 7:40] = True
    png = mask_to_png(mask)
    assert png.mode == "L"
    assert png.size == (47, 33)
    assert set(np.unique(np.asarray(png)).tolist()) == {0, 255}
    png.save(tmp_path / "mask.png")
    assert np.array_equal(read_mask(tmp_path / "mask.png"), mask)
    with pytest.raises(ValueError, match="bool numpy array"):
        mask_to_png(mask.astype(np.uint8))


def test_bad_arguments_raise():
    image = image_33x47()
    mask = np.ones((16, 16), dtype=bool)
    with pytest.raises(ValueError, match=r"image values should lie in \[0, 1\]"):
        lung_outline_overlay(image * 255, mask)
    with pytest.raises(ValueError, match=r"2 dims \(height, width\), got 3"):
        lung_outline_overlay(np.stack([image] * 3, axis=2), mask)
    with pytest.raises(ValueError, match="colour should be"):
        lung_outline_overlay(image, mask, colour=(255, 0))
    with pytest.raises(ValueError, match="thickness should be"):
        lung_outline_overlay(image, mask, thickness=0)
    with pytest.raises(ValueError, match="mask should have dtype bool"):
        lung_outline_overlay(image, mask.astype(np.uint8))
