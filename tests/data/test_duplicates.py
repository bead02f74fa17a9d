"""Near-duplicate detection: real X-rays vs their re-encoded variants, grouping, validation."""

from __future__ import annotations

import itertools
from pathlib import Path

import imagehash
import numpy as np
import pytest
from PIL import Image

from covidcxr.data.duplicates import (
    DEFAULT_MAX_DISTANCE,
    HASH_BITS,
    HASH_WORDS,
    detail_signature,
    duplicate_groups,
    group_near_duplicates,
    perceptual_hash,
)
from covidcxr.io import read_image

REAL_SAMPLE = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "real-sample"
REAL_IMAGES = sorted((REAL_SAMPLE / "COVID-19_Radiography_Dataset").glob("*/images/*.png"))

VARIANT_KINDS = (
    "resize256",
    "resize224",
    "resize512",
    "resize1024",
    "jpeg75",
    "jpeg95",
    "rgb",
    "16bit",
    "contrast",
)


def write_variants(source: Path, folder: Path) -> list[Path]:
    """Write the variants of ``source`` named in VARIANT_KINDS into ``folder``, in that order."""
    image = Image.open(source).convert("L")
    width, height = image.size
    stem = source.stem.replace(" ", "_")
    paths = []
    for kind in VARIANT_KINDS:
        if kind.startswith("resize"):
            longest = int(kind.removeprefix("resize"))
            scale = longest / max(width, height)
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            variant = image.resize(size, Image.Resampling.LANCZOS)
        elif kind == "rgb":
            variant = image.convert("RGB")
        elif kind == "16bit":
            variant = Image.fromarray(np.asarray(image).astype(np.uint16) * 257)
        elif kind == "contrast":
            grey = np.asarray(image, np.float64) / 255
            stretched = np.clip((grey - 0.5) * 1.1 + 0.5, 0, 1) ** 0.9
            variant = Image.fromarray(np.rint(stretched * 255).astype(np.uint8))
        else:
            variant = image
        if kind.startswith("jpeg"):
            path = folder / f"{stem}_{kind}.jpg"
            variant.save(path, quality=int(kind.removeprefix("jpeg")))
        else:
            path = folder / f"{stem}_{kind}.png"
            variant.save(path, compress_level=1)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def real_family_data(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per real image, the hashes (1 + len(VARIANT_KINDS), words) and detail signatures of it
    and its variants, all read back from files."""
    assert len(REAL_IMAGES) == 44, f"expected the 44 real-sample images in {REAL_SAMPLE}"
    folder = tmp_path_factory.mktemp("variants")
    hash_families, signature_families = [], []
    for source in REAL_IMAGES:
        images = [read_image(path) for path in [source, *write_variants(source, folder)]]
        hash_families.append(np.stack([perceptual_hash(image) for image in images]))
        signature_families.append(np.stack([detail_signature(image) for image in images]))
    return hash_families, signature_families


@pytest.fixture(scope="module")
def real_families(real_family_data: tuple[list, list]) -> list[np.ndarray]:
    return real_family_data[0]


def hamming(first: np.ndarray, second: np.ndarray) -> int:
    return int(np.bitwise_count(first ^ second).sum())


def test_variants_of_real_images_are_read_as_what_they_claim(tmp_path: Path) -> None:
    paths = dict(zip(VARIANT_KINDS, write_variants(REAL_IMAGES[0], tmp_path), strict=True))
    assert Image.open(paths["16bit"]).mode.startswith("I")
    assert Image.open(paths["rgb"]).mode == "RGB"
    assert max(Image.open(paths["resize1024"]).size) == 1024
    original = read_image(REAL_IMAGES[0])
    np.testing.assert_allclose(read_image(paths["16bit"]), original, atol=1e-6)


def test_every_real_image_is_grouped_with_its_variants_and_only_them(
    real_families: list[np.ndarray],
) -> None:
    hashes = np.concatenate(real_families)
    family = np.repeat(np.arange(len(real_families)), [len(f) for f in real_families])
    group_ids = group_near_duplicates(hashes)
    for index, source in enumerate(REAL_IMAGES):
        assert len(set(group_ids[family == index])) == 1, f"{source.name} split from a variant"
    assert group_ids.max() + 1 == len(REAL_IMAGES), "two distinct real images were grouped"
    assert len(duplicate_groups(group_ids)) == len(REAL_IMAGES)


def test_detail_confirmation_keeps_every_real_family(
    real_family_data: tuple[list[np.ndarray], list[np.ndarray]],
) -> None:
    hash_families, signature_families = real_family_data
    hashes, signatures = np.concatenate(hash_families), np.concatenate(signature_families)
    family = np.repeat(np.arange(len(hash_families)), [len(f) for f in hash_families])
    group_ids = group_near_duplicates(hashes, signatures=signatures)
    for index in range(len(hash_families)):
        assert len(set(group_ids[family == index])) == 1
    assert group_ids.max() + 1 == len(hash_families)


def test_detail_confirmation_separates_lookalikes_with_their_own_detail() -> None:
    """Two radiographs with the same overall layout (what phantoms, or two films of one patient
    posed alike, look like to a hash) but their own fine detail are not duplicates."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(0)
    with Image.open(REAL_IMAGES[-1]) as picture:  # a real film, its detail blurred away
        base = np.asarray(picture.convert("L").resize((256, 256)), np.float32) / 255
    layout = gaussian_filter(base, 3)

    def lookalike() -> np.ndarray:
        texture = gaussian_filter(rng.normal(0, 1, (256, 256)), 0.7)
        return np.clip(layout + 0.04 * texture / texture.std(), 0, 1).astype(np.float32)

    first, second = lookalike(), lookalike()
    copy = (
        np.asarray(
            Image.fromarray(np.rint(first * 255).astype(np.uint8)).resize((200, 200)), np.float32
        )
        / 255
    )
    images = [first, second, copy]
    hashes = np.stack([perceptual_hash(image) for image in images])
    signatures = np.stack([detail_signature(image) for image in images])
    assert group_near_duplicates(hashes).tolist() == [0, 0, 0]  # the hash alone is fooled
    assert group_near_duplicates(hashes, signatures=signatures).tolist() == [0, 1, 0]
    with pytest.raises(ValueError, match="signatures should be a 2-D array with 3 rows"):
        group_near_duplicates(hashes, signatures=signatures[:2])


def test_calibration_margins_hold_on_real_images(real_families: list[np.ndarray]) -> None:
    """The threshold keeps a wide margin on both sides (numbers in the duplicates docstring)."""
    within = max(
        hamming(a, b) for hashes in real_families for a, b in itertools.combinations(hashes, 2)
    )
    between = min(
        hamming(a, b)
        for first, second in itertools.combinations(real_families, 2)
        for a in first
        for b in second
    )
    assert within <= DEFAULT_MAX_DISTANCE // 2, f"variants differ by up to {within} bits"
    assert between >= 2 * DEFAULT_MAX_DISTANCE, f"distinct images only {between} bits apart"


def test_distinct_real_images_stay_apart_even_with_a_loose_threshold() -> None:
    hashes = np.stack([perceptual_hash(read_image(path)) for path in REAL_IMAGES])
    group_ids = group_near_duplicates(hashes, max_distance=2 * DEFAULT_MAX_DISTANCE)
    np.testing.assert_array_equal(group_ids, np.arange(len(REAL_IMAGES)))
    assert duplicate_groups(group_ids) == []


def test_perceptual_hash_packs_imagehash_bits_in_order() -> None:
    image = np.random.default_rng(3).random((33, 47), dtype=np.float32)
    hashed = perceptual_hash(image)
    assert hashed.shape == (HASH_WORDS,)
    assert hashed.dtype == np.uint64
    reference = imagehash.phash(Image.fromarray(np.rint(image * 255).astype(np.uint8)), 16)
    assert "".join(f"{word:016x}" for word in hashed) == str(reference)
    np.testing.assert_array_equal(perceptual_hash(image.astype(np.float64)), hashed)
    assert hamming(hashed, perceptual_hash(1 - image)) > HASH_BITS // 2


def random_hashes(count: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, np.iinfo(np.uint64).max, (count, HASH_WORDS), np.uint64, endpoint=True)


def flip_bits(hashed: np.ndarray, bits: list[int]) -> np.ndarray:
    flipped = hashed.copy()
    for bit in bits:
        flipped[bit // 64] ^= np.uint64(1) << np.uint64(bit % 64)
    return flipped


def test_group_ids_are_numbered_by_first_appearance() -> None:
    a, b, c = random_hashes(3, seed=1)
    hashes = np.stack([b, a, flip_bits(b, [0, 100]), c, a, flip_bits(c, [7])])
    group_ids = group_near_duplicates(hashes)
    assert group_ids.dtype == np.int64
    np.testing.assert_array_equal(group_ids, [0, 1, 0, 2, 1, 2])
    assert duplicate_groups(group_ids) == [[0, 2], [1, 4], [3, 5]]


def test_threshold_is_inclusive_and_links_chain() -> None:
    base = random_hashes(1, seed=2)[0]
    middle = flip_bits(base, list(range(20)))
    far = flip_bits(middle, list(range(20, 40)))  # 40 bits from base, 20 from middle
    hashes = np.stack([base, far, middle])
    np.testing.assert_array_equal(group_near_duplicates(hashes, max_distance=20), [0, 0, 0])
    np.testing.assert_array_equal(group_near_duplicates(hashes, max_distance=19), [0, 1, 2])
    np.testing.assert_array_equal(group_near_duplicates(hashes, max_distance=0), [0, 1, 2])
    assert group_near_duplicates(np.stack([base, base]), max_distance=0).tolist() == [0, 0]


def test_planted_duplicates_among_5000_random_hashes_are_found_exactly() -> None:
    rng = np.random.default_rng(4)
    hashes = random_hashes(5000, seed=5)
    planted: list[list[int]] = []
    free = rng.permutation(5000)
    position = 0
    for size in [2] * 60 + [3] * 25 + [4] * 10 + [7] * 5:
        members = sorted(free[position : position + size].tolist())
        position += size
        base = hashes[members[0]]
        for member in members[1:]:
            # At most DEFAULT_MAX_DISTANCE / 2 bits from the base: within the threshold of it
            # and of each other.
            flips = rng.choice(HASH_BITS, rng.integers(0, DEFAULT_MAX_DISTANCE // 2 + 1), False)
            hashes[member] = flip_bits(base, flips.tolist())
        planted.append(members)
    planted.sort(key=lambda members: (-len(members), members[0]))

    group_ids = group_near_duplicates(hashes)
    assert duplicate_groups(group_ids) == planted
    assert group_ids.max() + 1 == 5000 - sum(len(members) - 1 for members in planted)


def test_many_identical_hashes_form_one_group() -> None:
    hashes = np.repeat(random_hashes(1, seed=6), 3000, axis=0)
    hashes[1500] = ~hashes[1500]
    group_ids = group_near_duplicates(hashes)
    assert group_ids.max() == 1
    assert group_ids[1500] == 1
    assert (np.delete(group_ids, 1500) == 0).all()


def test_empty_and_single_inputs() -> None:
    empty = group_near_duplicates(np.empty((0, HASH_WORDS), np.uint64))
    assert empty.shape == (0,)
    assert empty.dtype == np.int64
    assert group_near_duplicates(random_hashes(1, seed=7)).tolist() == [0]
    assert duplicate_groups(np.array([], dtype=np.int64)) == []


def test_duplicate_groups_orders_largest_first_then_by_first_member() -> None:
    group_ids = np.array([5, 1, 1, 5, 2, 9, 9, 9, 3])
    assert duplicate_groups(group_ids) == [[5, 6, 7], [0, 3], [1, 2]]


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.zeros((8, 8), np.uint8), "dtype uint8"),
        (np.zeros((8, 8, 3), np.float32), r"shape \(8, 8, 3\)"),
        (np.zeros((0, 8), np.float32), r"shape \(0, 8\)"),
        (np.full((8, 8), 1.5, np.float32), r"range \[1.5, 1.5\]"),
        (np.full((8, 8), np.nan, np.float32), "nan"),
        ([[0.0, 1.0]], "got list"),
    ],
)
def test_perceptual_hash_rejects_other_conventions(image: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        perceptual_hash(image)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("hashes", "keywords", "message"),
    [
        (np.zeros(5, np.uint64), {}, r"2-D uint64 array \(N, words\), got shape \(5,\)"),
        (np.zeros((5, 4), np.int64), {}, "dtype int64"),
        ([[1, 2]], {}, "got list"),
        (np.zeros((5, 0), np.uint64), {}, r"at least one word.*\(5, 0\)"),
        (np.zeros((5, 4), np.uint64), {"max_distance": -1}, "between 0 and 256.*got -1"),
        (np.zeros((5, 1), np.uint64), {"max_distance": 65}, "between 0 and 64.*got 65"),
        (np.zeros((5, 4), np.uint64), {"max_distance": 2.5}, "integer, got 2.5"),
    ],
)
def test_group_near_duplicates_rejects_bad_input(
    hashes: object, keywords: dict, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        group_near_duplicates(hashes, **keywords)  # type: ignore[arg-type]


@pytest.mark.parametrize("group_ids", [np.zeros((2, 2), np.int64), np.array([0.5, 1.0])])
def test_duplicate_groups_rejects_non_integer_or_2d_ids(group_ids: np.ndarray) -> None:
    with pytest.raises(ValueError, match="1-D integer array"):
        duplicate_groups(group_ids)
