"""Lung-focused views: bounding boxes, crop and mask modes, image/mask alignment on odd sizes."""

from __future__ import annotations

import numpy as np
import pytest

from covidcxr.data.lungs import LUNG_MODES, focus_on_lungs, lung_bounding_box
from covidcxr.data.transforms import resize_mask
from covidcxr.io import read_image, read_mask


def rectangle(shape, top, bottom, left, right) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[top:bottom, left:right] = True
    return mask


# ---------------------------------------------------------------------------------------------
# lung_bounding_box


def test_bounding_box_is_half_open_and_tight_without_margin():
    mask = rectangle((50, 80), 10, 30, 20, 60)
    mask[12, 5] = True  # a stray pixel widens the box to the left
    assert lung_bounding_box(mask, margin=0) == (10, 30, 5, 60)


def test_margin_is_a_fraction_of_the_box_on_each_side():
    mask = rectangle((50, 80), 10, 30, 20, 60)  # box 20 × 40
    assert lung_bounding_box(mask, margin=0.1) == (8, 32, 16, 64)
    assert lung_bounding_box(mask) == (9, 31, 18, 62)  # default 5 %: 1 and 2 pixels


def test_margin_is_clipped_to_the_mask():
    mask = rectangle((50, 80), 0, 45, 70, 80)
    assert lung_bounding_box(mask, margin=0.5) == (0, 50, 65, 80)


def test_empty_mask_has_no_box():
    assert lung_bounding_box(np.zeros((50, 80), dtype=bool)) is None


def test_bounding_box_rejects_bad_arguments():
    with pytest.raises(ValueError, match="margin should be a finite number"):
        lung_bounding_box(rectangle((5, 5), 1, 3, 1, 3), margin=-0.1)
    with pytest.raises(ValueError, match="bool array"):
        lung_bounding_box(np.ones((5, 5), dtype=np.uint8))


# ---------------------------------------------------------------------------------------------
# focus_on_lungs on constructed images


def bright_lungs(shape, top, bottom, left, right) -> np.ndarray:
    """A dark image whose 'lungs' are the bright rectangle [top:bottom, left:right]."""
    image = np.full(shape, 0.1, dtype=np.float32)
    image[top:bottom, left:right] = 0.9
    return image


def test_none_returns_the_image_itself():
    image = bright_lungs((33, 47), 5, 20, 7, 30)
    assert focus_on_lungs(image, np.ones((16, 16), dtype=bool), "none") is image
    assert focus_on_lungs(image, None, "none") is image


def test_crop_returns_the_bright_rectangle_plus_the_margin():
    image = bright_lungs((120, 90), 30, 70, 20, 60)  # lungs 40 × 40
    mask = rectangle((120, 90), 30, 70, 20, 60)
    cropped = focus_on_lungs(image, mask, "crop", margin=0.1)  # 4 pixels each side
    assert cropped.shape == (48, 48)
    assert cropped.dtype == np.float32
    assert np.all(cropped[4:44, 4:44] == np.float32(0.9))
    border = np.ones(cropped.shape, dtype=bool)
    border[4:44, 4:44] = False
    assert np.all(cropped[border] == np.float32(0.1))


# A 256×256 mask on a 299×299 image (the database's sizes). Mask rows 64:192 cover the image
# rows whose centres (i + 0.5) × 256/299 fall in [64, 192): i = 75..223; mask cols 32:128 cover
# cols 37..148 (col 149's centre falls exactly on 128.0, outside). Scaled by 299/256 the box is
# rows 74.75–224.25 and cols 37.4–149.5, as expected.
MASK_256 = rectangle((256, 256), 64, 192, 32, 128)
IMAGE_ROWS, IMAGE_COLS = slice(75, 224), slice(37, 149)

# A 16×16 mask on a 33×47 image: mask rows 4:12 → image rows 8..24 (centres × 16/33 in [4, 12)),
# mask cols 4:12 → image cols 12..34 (centres × 16/47 in [4, 12)).
MASK_16 = rectangle((16, 16), 4, 12, 4, 12)
ODD_ROWS, ODD_COLS = slice(8, 25), slice(12, 35)


@pytest.mark.parametrize(
    ("image_shape", "mask", "rows", "cols"),
    [((299, 299), MASK_256, IMAGE_ROWS, IMAGE_COLS), ((33, 47), MASK_16, ODD_ROWS, ODD_COLS)],
    ids=["299-with-256-mask", "33x47-with-16-mask"],
)
def test_crop_and_mask_stay_aligned_when_sizes_differ(image_shape, mask, rows, cols):
    image = bright_lungs(image_shape, rows.start, rows.stop, cols.start, cols.stop)

    cropped = focus_on_lungs(image, mask, "crop", margin=0)
    assert cropped.shape == (rows.stop - rows.start, cols.stop - cols.start)
    assert np.all(cropped == np.float32(0.9))  # exactly the bright lungs, nothing around them

    masked = focus_on_lungs(image, mask, "mask")
    assert masked.shape == image_shape
    expected = np.zeros(image_shape, dtype=np.float32)
    expected[rows, cols] = 0.9
    assert np.array_equal(masked, expected)


def test_crop_margin_is_measured_in_image_pixels():
    image = bright_lungs((299, 299), 75, 224, 37, 149)
    cropped = focus_on_lungs(image, MASK_256, "crop", margin=0.1)
    # Box 149 × 112 image pixels: 15 rows and 11 columns added on each side.
    assert cropped.shape == (149 + 30, 112 + 22)
    assert np.all(cropped[15:-15, 11:-11] == np.float32(0.9))


@pytest.mark.parametrize("mode", ["crop", "mask"])
def test_empty_mask_returns_the_image_unchanged(mode):
    image = bright_lungs((33, 47), 5, 20, 7, 30)
    result = focus_on_lungs(image, np.zeros((16, 16), dtype=bool), mode)
    assert np.array_equal(result, image)
    # A single mask pixel can vanish when shrunk: it counts as empty too.
    tiny = np.zeros((200, 200), dtype=bool)
    tiny[0, 0] = True
    assert np.array_equal(focus_on_lungs(image, tiny, mode), image)


def test_unknown_mode_lists_the_modes():
    image = bright_lungs((33, 47), 5, 20, 7, 30)
    with pytest.raises(ValueError, match="'none', 'crop', 'mask', got 'lungs'"):
        focus_on_lungs(image, MASK_16, "lungs")
    assert LUNG_MODES == ("none", "crop", "mask")


def test_bad_image_or_mask_raises():
    with pytest.raises(ValueError, match=r"image values should lie in \[0, 1\]"):
        focus_on_lungs(np.full((33, 47), 255.0, dtype=np.float32), MASK_16, "crop")
    with pytest.raises(ValueError, match="float array"):
        focus_on_lungs(np.zeros((33, 47), dtype=np.uint8), MASK_16, "mask")
    with pytest.raises(ValueError, match="dtype bool"):
        focus_on_lungs(np.zeros((33, 47), dtype=np.float32), MASK_16.astype(np.uint8), "mask")


# ---------------------------------------------------------------------------------------------
# The real sample: a 299×299 Viral Pneumonia image with its 256×256 RGB mask


def test_real_299_image_with_its_256_rgb_mask(real_dataset):
    folder = real_dataset / "Viral Pneumonia"
    image = read_image(folder / "images" / "Viral Pneumonia-1.png")
    mask = read_mask(folder / "masks" / "Viral Pneumonia-1.png")
    assert image.shape == (299, 299)
    assert mask.shape == (256, 256)
    scale = 299 / 256

    top, bottom, left, right = lung_bounding_box(mask, margin=0)
    tight = focus_on_lungs(image, mask, "crop", margin=0)
    assert tight.shape[0] < 299 and tight.shape[1] < 299
    assert tight.shape[0] == pytest.approx((bottom - top) * scale, abs=1.5)
    assert tight.shape[1] == pytest.approx((right - left) * scale, abs=1.5)
    # The crop is the image region at the scaled box (within a pixel of rounding).
    image_top, image_left = round(top * scale), round(left * scale)
    assert any(
        np.array_equal(
            tight,
            image[
                image_top + dr : image_top + dr + tight.shape[0],
                image_left + dc : image_left + dc + tight.shape[1],
            ],
        )
        for dr in (-1, 0, 1)
        for dc in (-1, 0, 1)
    )

    cropped = focus_on_lungs(image, mask, "crop")  # default margin 5 %
    height, width = tight.shape
    assert height < cropped.shape[0] <= height + 2 * round(0.05 * height)
    assert width < cropped.shape[1] <= width + 2 * round(0.05 * width)
    assert cropped.shape[0] < 299 or cropped.shape[1] < 299

    masked = focus_on_lungs(image, mask, "mask")
    assert masked.shape == (299, 299)
    lungs = resize_mask(mask, (299, 299))
    assert lungs.mean() == pytest.approx(mask.mean(), abs=0.01)
    assert np.all(masked[~lungs] == 0)
    assert np.array_equal(masked[lungs], image[lungs])
    assert image[~lungs].max() > 0.2  # the test means something: there was anatomy outside


def test_real_mask_the_same_size_as_its_image(real_dataset):
    folder = real_dataset / "COVID"
    image = read_image(folder / "images" / "COVID-2.png")
    mask = read_mask(folder / "masks" / "COVID-2.png")
    assert image.shape == mask.shape
    top, bottom, left, right = lung_bounding_box(mask)
    cropped = focus_on_lungs(image, mask, "crop")
    assert np.array_equal(cropped, image[top:bottom, left:right])
    masked = focus_on_lungs(image, mask, "mask")
    assert np.array_equal(masked, np.where(mask, image, 0))
