"""The twin matcher on real films: the real sample's films against re-exports of themselves
(crop, scale, aspect, border, burnt-in letter, text, JPEG), and against each other."""

from __future__ import annotations

import numpy as np
import pytest

from covidcxr.data.duplicates import group_near_duplicates, perceptual_hash
from covidcxr.data.reexports import reexports
from covidcxr.data.twins import MIN_TWIN_SCORE, find_twins, twin_score, twin_thumbnail
from covidcxr.io import read_image
from helpers import REAL_DATASET, real_images


@pytest.fixture(scope="module")
def films() -> list[np.ndarray]:
    return [np.rint(read_image(p) * 255).astype(np.uint8) for p in real_images(REAL_DATASET)]


def _thumb(image: np.ndarray) -> np.ndarray:
    return twin_thumbnail(image.astype(np.float32) / 255.0)


def test_each_film_pairs_with_its_reexports_one_at_a_time(films) -> None:
    """Every film with one re-export of each kind, in turn (so a twin has no sibling to
    chain through): at least 95 % of the pairs are found, and no pair joins two films."""
    kinds = list(reexports(films[0]))
    found = total = 0
    for round_ in range(3):
        thumbs = [_thumb(f) for f in films]
        for index, film in enumerate(films):
            kind = kinds[(index + 4 * round_) % len(kinds)]
            thumbs.append(_thumb(reexports(film)[kind]))
        first, second, _ = find_twins(np.stack(thumbs), workers=1)
        pairs = set(zip(first.tolist(), second.tolist(), strict=True))
        count = len(films)
        found += sum((i, count + i) in pairs for i in range(count))
        total += count
        owner = list(range(count)) * 2
        assert all(owner[a] == owner[b] for a, b in pairs), "a pair joins two films"
    assert found / total >= 0.95, f"{found} of {total}"


def test_distinct_real_films_never_score_as_twins(films) -> None:
    thumbs = [_thumb(f) for f in films]
    scores = [
        twin_score(thumbs[i], thumbs[j])
        for i in range(len(thumbs))
        for j in range(len(thumbs))
        if i != j
    ]
    assert max(scores) < MIN_TWIN_SCORE - 0.15  # measured 0.657


def test_grouping_links_crops_that_the_hash_alone_misses(films) -> None:
    film = films[0]
    cropped = reexports(film)["crop 5 % of one side"]
    images = [film.astype(np.float32) / 255.0, cropped.astype(np.float32) / 255.0]
    images += [f.astype(np.float32) / 255.0 for f in films[1:6]]
    hashes = np.stack([perceptual_hash(i) for i in images])
    assert group_near_duplicates(hashes)[1] != group_near_duplicates(hashes)[0]
    twins = np.stack([twin_thumbnail(i) for i in images])
    ids = group_near_duplicates(hashes, twins=twins)
    assert ids[0] == ids[1] and len(set(ids.tolist())) == len(images) - 1


def test_borders_are_trimmed_and_flat_images_kept_whole() -> None:
    image = np.zeros((100, 120), dtype=np.float32)
    image[10:90, 20:100] = np.random.default_rng(0).random((80, 80), dtype=np.float32)
    assert twin_thumbnail(image).shape == (64, 64)
    inner = twin_thumbnail(np.ascontiguousarray(image[10:90, 20:100]))
    assert np.abs(twin_thumbnail(image).astype(int) - inner).max() <= 1
    flat = np.full((50, 50), 0.5, dtype=np.float32)
    assert (twin_thumbnail(flat) == 128).all()
    with pytest.raises(ValueError, match="2-D grey"):
        twin_thumbnail(np.zeros((3, 4, 4)))
    with pytest.raises(ValueError, match="twin_thumbnail"):
        find_twins(np.zeros((2, 32, 32), dtype=np.uint8))
