"""resize_image / resize_mask: shapes, values, alignment between images and masks, errors."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from covidcxr.data.transforms import resize_image, resize_mask


def _smooth_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rows = np.linspace(0.0, 1.0, height)[:, None]
    cols = np.linspace(0.0, 1.0, width)[None, :]
    image = 0.4 * rows + 0.3 * cols + 0.3 * rng.random((height, width))
    return image.astype(np.float32)


def _pillow_bilinear_weights(source: int, target: int) -> np.ndarray:
    """(target, source) weights of an anti-aliased triangle filter with half-pixel centres."""
    scale = source / target
    filter_scale = max(scale, 1.0)
    centres = (np.arange(target) + 0.5) * scale
    positions = np.arange(source) + 0.5
    weights = np.clip(1.0 - np.abs(positions[None, :] - centres[:, None]) / filter_scale, 0, None)
    return weights / weights.sum(axis=1, keepdims=True)


@pytest.mark.parametrize(
    ("source", "target"),
    [((33, 47), (100, 100)), ((299, 299), (13, 7)), ((299, 299), (224, 224)), ((1, 1), (5, 3))],
)
def test_resize_image_shape_dtype_range(source, target):
    resized = resize_image(_smooth_image(*source), target)
    assert resized.shape == target
    assert resized.dtype == np.uint8
    assert resized.flags.c_contiguous


def test_resize_image_uses_the_full_8_bit_range():
    image = np.zeros((40, 30), dtype=np.float32)
    image[:, 15:] = 1.0
    resized = resize_image(image, (20, 60))
    assert resized.min() == 0
    assert resized.max() == 255


@pytest.mark.parametrize("value", [0.0, 37 / 255, 0.5, 1.0])
def test_constant_image_stays_constant(value):
    resized = resize_image(np.full((33, 47), value, dtype=np.float32), (100, 100))
    assert np.all(resized == round(value * 255))


def test_same_size_round_trips_8_bit_values():
    values = np.random.default_rng(1).integers(0, 256, size=(33, 47)).astype(np.uint8)
    image = (values / 255.0).astype(np.float32)
    np.testing.assert_array_equal(resize_image(image, (33, 47)), values)


def test_float64_input_gives_the_same_result():
    image = _smooth_image(33, 47)
    np.testing.assert_array_equal(
        resize_image(image.astype(np.float64), (20, 20)), resize_image(image, (20, 20))
    )


@pytest.mark.parametrize(("source", "target"), [((299, 299), (100, 100)), ((33, 47), (100, 61))])
def test_matches_a_float64_anti_aliased_bilinear_rounded_once(source, target):
    image = _smooth_image(*source, seed=3)
    reference = (
        _pillow_bilinear_weights(source[0], target[0])
        @ image.astype(np.float64)
        @ _pillow_bilinear_weights(source[1], target[1]).T
    )
    expected = np.rint(reference * 255)
    difference = np.abs(resize_image(image, target).astype(np.float64) - expected)
    assert difference.max() <= 1
    # Rounding twice (the 8-bit route) disagrees on 10-20 % of pixels; once only on float ties.
    assert np.mean(difference > 0) < 0.01


def test_downscaling_is_anti_aliased():
    # One-pixel stripes: a filter that samples without widening would alias them into bands.
    stripes = np.zeros((300, 300), dtype=np.float32)
    stripes[:, ::2] = 1.0
    resized = resize_image(stripes, (100, 100)).astype(np.int16)
    assert np.all(np.abs(resized - 128) <= 45)


def test_plain_stretch_keeps_relative_positions_and_orientation():
    image = np.zeros((33, 47), dtype=np.float32)
    image[:11, :] = 1.0  # top third bright
    resized = resize_image(image, (100, 100))
    column = resized[:, 50]
    assert column[0] == 255 and column[-1] == 0
    # The edge sits at a third of the height whatever the aspect ratio.
    first_dark = int(np.argmax(column < 128))
    assert abs(first_dark - 100 / 3) <= 1.5


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.zeros((10, 10, 3), dtype=np.float32), "should have 2 dims"),
        (np.zeros(10, dtype=np.float32), "should have 2 dims"),
        (np.zeros((10, 10), dtype=np.uint8), "dtype float32, got uint8"),
        (np.zeros((10, 10), dtype=bool), "dtype float32, got bool"),
        (np.full((10, 10), 255.0, dtype=np.float32), r"\[0, 1\], got \[255, 255\]"),
        (np.full((10, 10), -0.5, dtype=np.float32), r"\[0, 1\]"),
        (np.full((10, 10), np.nan, dtype=np.float32), r"\[0, 1\]"),
        (np.zeros((0, 10), dtype=np.float32), "should not be empty"),
        ([[0.0, 1.0]], "numpy array"),
    ],
)
def test_resize_image_rejects_wrong_input(image, message):
    with pytest.raises(ValueError, match=message):
        resize_image(image, (8, 8))


@pytest.mark.parametrize("size", [(0, 10), (10, -1), (10,), (10.0, 10), (True, 10), "ab", None])
def test_resize_rejects_bad_sizes(size):
    with pytest.raises(ValueError, match=r"\(height, width\)"):
        resize_image(np.zeros((4, 4), dtype=np.float32), size)
    with pytest.raises(ValueError, match=r"\(height, width\)"):
        resize_mask(np.zeros((4, 4), dtype=bool), size)


@pytest.mark.parametrize(
    ("source", "target"), [((256, 256), (299, 299)), ((33, 47), (100, 100)), ((299, 299), (13, 7))]
)
def test_resize_mask_shape_and_dtype(source, target):
    mask = np.random.default_rng(0).random(source) > 0.5
    resized = resize_mask(mask, target)
    assert resized.shape == target
    assert resized.dtype == bool


def test_mask_rectangle_covers_the_same_relative_region():
    mask = np.zeros((256, 256), dtype=bool)
    mask[64:192, 32:160] = True
    resized = resize_mask(mask, (299, 299))
    rows = np.flatnonzero(resized.any(axis=1))
    cols = np.flatnonzero(resized.any(axis=0))
    scale = 299 / 256
    assert abs(rows[0] - 64 * scale) <= 1 and abs(rows[-1] + 1 - 192 * scale) <= 1
    assert abs(cols[0] - 32 * scale) <= 1 and abs(cols[-1] + 1 - 160 * scale) <= 1
    # A solid rectangle stays a solid rectangle.
    assert resized.sum() == len(rows) * len(cols)


def test_mask_aligns_with_the_image_resized_from_another_size():
    # The database pairs 299x299 images with 256x256 masks; both resized to 100x100 must agree.
    image = np.zeros((299, 299), dtype=np.float32)
    image[int(299 * 0.25) : int(299 * 0.75), int(299 * 0.125) : int(299 * 0.625)] = 1.0
    mask = np.zeros((256, 256), dtype=bool)
    mask[64:192, 32:160] = True
    image_region = resize_image(image, (100, 100)) >= 128
    mask_region = resize_mask(mask, (100, 100))
    # Only the rectangle's one-pixel rim may differ between the two routes.
    assert np.sum(image_region != mask_region) <= 2 * (50 + 50)
    assert mask_region.sum() == pytest.approx(image_region.sum(), rel=0.05)


def test_mask_integer_upscale_then_downscale_round_trips():
    mask = np.random.default_rng(2).random((33, 47)) > 0.5
    up = resize_mask(mask, (66, 141))
    np.testing.assert_array_equal(up[::2, ::3], mask)
    np.testing.assert_array_equal(resize_mask(up, (33, 47)), mask)


def test_mask_matches_pillow_nearest_away_from_ties():
    mask = np.random.default_rng(4).random((33, 47)) > 0.5
    pillow = Image.fromarray(mask.astype(np.uint8) * 255).resize(
        (100, 100), Image.Resampling.NEAREST
    )
    np.testing.assert_array_equal(resize_mask(mask, (100, 100)), np.asarray(pillow) > 0)


@pytest.mark.parametrize(
    ("mask", "message"),
    [
        (np.zeros((10, 10), dtype=np.uint8), "dtype bool, got uint8"),
        (np.zeros((10, 10), dtype=np.float32), "dtype bool, got float32"),
        (np.zeros((10, 10, 3), dtype=bool), "should have 2 dims"),
    ],
)
def test_resize_mask_rejects_wrong_input(mask, message):
    with pytest.raises(ValueError, match=message):
        resize_mask(mask, (8, 8))


def test_resize_float_map_is_bilinear_and_stays_in_range() -> None:
    from covidcxr.data.transforms import resize_float_map

    ramp = np.tile(np.linspace(0.0, 1.0, 8, dtype=np.float32), (4, 1))
    wide = resize_float_map(ramp, (4, 16))
    assert wide.shape == (4, 16) and wide.dtype == np.float32
    assert wide.min() >= 0.0 and wide.max() <= 1.0 + 1e-6
    assert np.all(np.diff(wide[0]) >= -1e-6)  # a ramp stays a ramp
    assert resize_float_map(ramp, (4, 8)) is not None
    np.testing.assert_array_equal(resize_float_map(ramp, (4, 8)), ramp)
