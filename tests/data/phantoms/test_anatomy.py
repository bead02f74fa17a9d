"""One phantom: deterministic per random generator, the right shapes and ranges, two lungs."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from covidcxr.data.phantoms.anatomy import render_phantom


def test_render_phantom_is_deterministic_per_generator() -> None:
    image_a, mask_a = render_phantom("COVID", np.random.default_rng([5, 1, 1]))
    image_b, mask_b = render_phantom("COVID", np.random.default_rng([5, 1, 1]))
    image_c, _ = render_phantom("COVID", np.random.default_rng([5, 1, 2]))
    assert np.array_equal(image_a, image_b) and np.array_equal(mask_a, mask_b)
    assert not np.array_equal(image_a, image_c)


@pytest.mark.parametrize("size", [33, 47, 299])
@pytest.mark.parametrize("class_name", ["Normal", "COVID", "Viral Pneumonia", "Lung Opacity"])
def test_render_phantom_shapes_and_ranges(class_name: str, size: int) -> None:
    image, lung_mask = render_phantom(class_name, np.random.default_rng([2, size]), size=size)
    assert image.shape == lung_mask.shape == (size, size)
    assert image.dtype == np.float32 and lung_mask.dtype == bool
    assert image.min() >= 0.0 and image.max() <= 1.0
    assert 0.1 < lung_mask.mean() < 0.5
    _, lungs = ndimage.label(lung_mask)
    assert lungs == 2
