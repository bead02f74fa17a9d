"""Mask clean-up: two lungs kept, specks dropped, holes filled, nothing else changed."""

from __future__ import annotations

import numpy as np
import pytest

from covidcxr.data.postprocess import (
    fill_holes,
    keep_largest_components,
    postprocess_lungs,
)

SHAPE = (41, 63)


def two_lungs() -> tuple[np.ndarray, np.ndarray]:
    """A raw mask (two blobs, one with a hole, plus specks) and the expected clean mask."""
    right_lung = np.zeros(SHAPE, dtype=bool)
    right_lung[4:36, 5:25] = True
    right_lung[6:33, 24:27] = True  # ragged edge: not a rectangle
    left_lung = np.zeros(SHAPE, dtype=bool)
    rows, cols = np.mgrid[: SHAPE[0], : SHAPE[1]]
    left_lung[((rows - 20) / 15) ** 2 + ((cols - 46) / 10) ** 2 <= 1] = True

    raw = right_lung | left_lung
    raw[12:20, 10:16] = False  # a hole (consolidation read as soft tissue)
    raw[38, 1] = True  # single-pixel speck
    raw[0:2, 30:32] = True  # 2×2 speck
    raw[37:40, 58] = True  # 3-pixel speck
    raw[39, 59] = True  # joined diagonally to the speck above
    return raw, right_lung | left_lung


def test_two_blobs_kept_specks_dropped_hole_filled():
    raw, expected = two_lungs()
    cleaned = postprocess_lungs(raw)
    assert cleaned.dtype == bool
    assert cleaned.shape == SHAPE
    assert np.array_equal(cleaned, expected)


def test_input_is_not_modified():
    raw, _ = two_lungs()
    before = raw.copy()
    postprocess_lungs(raw)
    assert np.array_equal(raw, before)


def test_empty_mask_stays_empty():
    empty = np.zeros(SHAPE, dtype=bool)
    for clean in (postprocess_lungs, fill_holes, keep_largest_components):
        result = clean(empty)
        assert result.dtype == bool
        assert result.shape == SHAPE
        assert not result.any()


def test_components_are_eight_connected():
    mask = np.zeros((9, 9), dtype=bool)
    mask[np.arange(5), np.arange(5)] = True  # 5 pixels touching only at corners
    mask[8, 0:4] = True  # a 4-pixel bar
    kept = keep_largest_components(mask, count=1)
    expected = np.zeros_like(mask)
    expected[np.arange(5), np.arange(5)] = True
    assert np.array_equal(kept, expected)


def test_keep_largest_components_keeps_the_requested_count():
    mask = np.zeros((10, 30), dtype=bool)
    mask[1:9, 1:9] = True  # 64 px
    mask[1:5, 12:16] = True  # 16 px
    mask[1:3, 20:22] = True  # 4 px
    assert keep_largest_components(mask, count=1).sum() == 64
    assert keep_largest_components(mask, count=2).sum() == 80
    assert np.array_equal(keep_largest_components(mask, count=5), mask)


def test_fill_holes_fills_a_ring_but_not_an_open_cup():
    ring = np.zeros((11, 11), dtype=bool)
    ring[2:9, 2:9] = True
    ring[4:7, 4:7] = False
    assert fill_holes(ring).sum() == 49

    cup = ring.copy()
    cup[4:7, 6:9] = False  # opened to the right: no longer a hole
    assert np.array_equal(fill_holes(cup), cup)


def test_bad_input_raises():
    with pytest.raises(ValueError, match="dtype bool, got uint8"):
        postprocess_lungs(np.ones(SHAPE, dtype=np.uint8))
    with pytest.raises(ValueError, match=r"2 dims \(height, width\), got 3"):
        fill_holes(np.ones((1, *SHAPE), dtype=bool))
    with pytest.raises(ValueError, match="positive int"):
        keep_largest_components(np.ones(SHAPE, dtype=bool), count=0)
