"""ImageCache: hits and misses, invalidation, bad files, real files, workers, concurrency."""

from __future__ import annotations

import multiprocessing
import os
import pickle
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import covidcxr.io
from covidcxr.data import cache as cache_module
from covidcxr.data.cache import CacheBatch, ImageCache, default_cache_dir
from covidcxr.data.transforms import resize_image, resize_mask

REAL_SAMPLE = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "real-sample"
REAL_DATASET = REAL_SAMPLE / "COVID-19_Radiography_Dataset"


def _write_png(path: Path, height: int, width: int, seed: int, mode: str = "L") -> Path:
    rng = np.random.default_rng(seed)
    rows = np.linspace(0, 200, height)[:, None]
    pixels = (rows + rng.integers(0, 56, size=(height, width))).astype(np.uint8)
    if mode == "RGB":
        pixels = np.repeat(pixels[..., None], 3, axis=2)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels, mode=mode).save(path)
    return path


def _write_mask_png(path: Path, size: int, box: tuple[int, int, int, int]) -> Path:
    pixels = np.zeros((size, size, 3), dtype=np.uint8)
    top, bottom, left, right = box
    pixels[top:bottom, left:right] = 255
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels, mode="RGB").save(path)
    return path


@pytest.fixture
def images(tmp_path: Path) -> list[Path]:
    """Five grey PNGs of odd sizes (and one RGB)."""
    sizes = [(33, 47), (60, 50), (47, 33), (20, 90), (64, 64)]
    paths = [
        _write_png(tmp_path / "images" / f"img-{i}.png", h, w, seed=i)
        for i, (h, w) in enumerate(sizes)
    ]
    paths.append(_write_png(tmp_path / "images" / "rgb.png", 40, 41, seed=9, mode="RGB"))
    return paths


@pytest.fixture
def cache(tmp_path: Path) -> ImageCache:
    with ImageCache(tmp_path / "cache") as image_cache:
        yield image_cache


def _direct(path: Path, size: tuple[int, int], kind: str = "image") -> np.ndarray:
    if kind == "image":
        return resize_image(covidcxr.io.read_image(path), size)
    return resize_mask(covidcxr.io.read_mask(path), size).astype(np.uint8)


def _forbid_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError(f"a cache hit must not read the file: {args}")

    monkeypatch.setattr(covidcxr.io, "read_image", refuse)
    monkeypatch.setattr(covidcxr.io, "read_mask", refuse)
    monkeypatch.setattr(Image, "open", refuse)


def _bump_mtime(path: Path) -> None:
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))


# ------------------------------------------------------------------------------------------------
# Hits and misses


def test_first_pass_misses_then_second_pass_hits_without_reading(images, cache, monkeypatch):
    first = cache.get_many(images, (100, 100), workers=0)
    assert isinstance(first, CacheBatch)
    assert (first.hits, first.misses) == (0, len(images))
    assert first.array.shape == (len(images), 100, 100) and first.array.dtype == np.uint8
    assert first.ok.all() and first.failures == []
    for row, path in zip(first.array, images, strict=True):
        np.testing.assert_array_equal(row, _direct(path, (100, 100)))

    _forbid_decoding(monkeypatch)
    second = cache.get_many(images, (100, 100), workers=0)
    assert (second.hits, second.misses) == (len(images), 0)
    assert second.ok.all() and second.failures == []
    np.testing.assert_array_equal(second.array, first.array)


def test_a_fresh_cache_object_on_the_same_directory_hits(images, tmp_path, monkeypatch):
    ImageCache(tmp_path / "cache").get_many(images, (32, 32), workers=0)
    _forbid_decoding(monkeypatch)
    batch = ImageCache(tmp_path / "cache").get_many(images, (32, 32), workers=0)
    assert batch.hits == len(images)


def test_modified_file_is_decoded_again(images, cache, monkeypatch):
    cache.get_many(images, (50, 50), workers=0)
    changed = _write_png(images[0], 70, 30, seed=100)  # new content, size and mtime
    _bump_mtime(changed)
    touched = images[1]  # same bytes, only the mtime moves
    _bump_mtime(touched)

    batch = cache.get_many(images, (50, 50), workers=0)
    assert (batch.hits, batch.misses) == (len(images) - 2, 2)
    np.testing.assert_array_equal(batch.array[0], _direct(changed, (50, 50)))
    # The stale rows were replaced, not kept beside the new ones.
    assert cache.stats().entries == len(images)

    _forbid_decoding(monkeypatch)
    assert cache.get_many(images, (50, 50), workers=0).hits == len(images)


def test_sizes_and_kinds_are_separate_entries(tmp_path, cache):
    mask_file = _write_mask_png(tmp_path / "mask.png", 64, (10, 50, 5, 30))
    as_image_wide = cache.get_many([mask_file], (20, 30), kind="image", workers=0)
    as_image_tall = cache.get_many([mask_file], (30, 20), kind="image", workers=0)
    as_mask = cache.get_many([mask_file], (20, 30), kind="mask", workers=0)
    assert [b.misses for b in (as_image_wide, as_image_tall, as_mask)] == [1, 1, 1]
    assert as_image_tall.array.shape == (1, 30, 20)
    assert cache.stats().entries == 3
    # Images hold 0..255, masks 0/1.
    assert as_image_wide.array.max() == 255
    assert set(np.unique(as_mask.array)) == {0, 1}
    np.testing.assert_array_equal(as_mask.array[0], _direct(mask_file, (20, 30), "mask"))
    assert cache.get_many([mask_file], (20, 30), kind="mask", workers=0).hits == 1


def test_format_version_change_invalidates(images, cache, monkeypatch):
    cache.get_many(images, (16, 16), workers=0)
    monkeypatch.setattr(cache_module, "CACHE_FORMAT_VERSION", cache_module.CACHE_FORMAT_VERSION + 1)
    batch = cache.get_many(images, (16, 16), workers=0)
    assert batch.misses == len(images)
    assert cache.stats().entries == len(images)


def test_duplicate_paths_are_decoded_once(images, cache, monkeypatch):
    calls: list[str] = []
    real_read = covidcxr.io.read_image

    def counting_read(path, **kwargs):
        calls.append(str(path))
        return real_read(path, **kwargs)

    monkeypatch.setattr(covidcxr.io, "read_image", counting_read)
    batch = cache.get_many([images[0], images[1], images[0]], (24, 24), workers=0)
    assert len(calls) == 2
    assert batch.ok.all()
    np.testing.assert_array_equal(batch.array[0], batch.array[2])


def test_symlinks_and_relative_paths_share_the_resolved_entry(images, cache, tmp_path, monkeypatch):
    cache.get_many([images[0]], (24, 24), workers=0)
    file_link = tmp_path / "link.png"
    file_link.symlink_to(images[0])
    directory_link = tmp_path / "linked-images"
    directory_link.symlink_to(images[0].parent, target_is_directory=True)
    monkeypatch.chdir(images[0].parent)

    _forbid_decoding(monkeypatch)
    batch = cache.get_many(
        [file_link, directory_link / images[0].name, Path(images[0].name)], (24, 24), workers=0
    )
    assert batch.hits == 3
    assert cache.stats().entries == 1


def test_empty_path_list(cache):
    batch = cache.get_many([], (10, 12), workers=0)
    assert batch.array.shape == (0, 10, 12)
    assert batch.ok.shape == (0,)
    assert (batch.hits, batch.misses, batch.failures) == (0, 0, [])


# ------------------------------------------------------------------------------------------------
# Bad files


@pytest.mark.parametrize("workers", [0, 2])
def test_bad_files_are_reported_and_good_files_carry_on(images, cache, tmp_path, workers):
    empty = tmp_path / "bad" / "empty.png"
    empty.parent.mkdir()
    empty.write_bytes(b"")
    text = tmp_path / "bad" / "notes.png"
    text.write_text("not an image at all\n")
    truncated = tmp_path / "bad" / "truncated.png"
    truncated.write_bytes(images[0].read_bytes()[:120])
    missing = tmp_path / "bad" / "missing.png"
    paths = [empty, images[0], text, missing, images[1], truncated]

    batch = cache.get_many(paths, (40, 40), workers=workers)

    assert batch.ok.tolist() == [False, True, False, False, True, False]
    assert [path for path, _ in batch.failures] == [empty, text, missing, truncated]
    reasons = dict(batch.failures)
    assert "empty" in reasons[empty]
    assert "not a PNG, JPEG or DICOM" in reasons[text]
    assert reasons[missing] == "is missing"  # listed as "PATH: is missing"
    assert "truncated" in reasons[truncated] or "corrupt" in reasons[truncated]
    np.testing.assert_array_equal(batch.array[1], _direct(images[0], (40, 40)))
    np.testing.assert_array_equal(batch.array[4], _direct(images[1], (40, 40)))
    assert not batch.array[~batch.ok].any()

    # Failures are not cached: they are tried (and fail) again; the good files hit.
    again = cache.get_many(paths, (40, 40), workers=0)
    assert (again.hits, again.misses) == (2, 4)
    assert [path for path, _ in again.failures] == [empty, text, missing, truncated]


def test_a_reader_crash_on_one_file_does_not_stop_the_batch(images, cache, monkeypatch):
    real_read = covidcxr.io.read_image

    def flaky_read(path, **kwargs):
        if Path(path).name == images[2].name:
            raise RuntimeError("decoder exploded")
        return real_read(path, **kwargs)

    monkeypatch.setattr(covidcxr.io, "read_image", flaky_read)
    batch = cache.get_many(images, (20, 20), workers=0)
    assert batch.ok.sum() == len(images) - 1
    assert batch.failures == [(images[2], "RuntimeError: decoder exploded")]


def test_get_returns_one_array_and_raises_for_bad_files(images, cache, tmp_path, monkeypatch):
    pixels = cache.get(images[0], (30, 20))
    assert pixels.shape == (30, 20) and pixels.dtype == np.uint8
    np.testing.assert_array_equal(pixels, _direct(images[0], (30, 20)))
    pixels[:] = 0  # the result is the caller's to modify

    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(covidcxr.io.ImageReadError, match="empty"):
        cache.get(empty, (30, 20))
    with pytest.raises(FileNotFoundError):
        cache.get(tmp_path / "missing.png", (30, 20))

    expected = _direct(images[0], (30, 20))
    _forbid_decoding(monkeypatch)
    np.testing.assert_array_equal(cache.get(images[0], (30, 20)), expected)
    assert cache.get_many([images[0]], (30, 20), workers=0).hits == 1


# ------------------------------------------------------------------------------------------------
# Real files


def test_real_sample_images_and_masks_go_through(cache):
    image_paths = sorted(REAL_DATASET.glob("*/images/*.png"))
    mask_paths = sorted((REAL_DATASET / "Viral Pneumonia" / "masks").glob("*.png"))
    assert len(image_paths) == 44 and len(mask_paths) == 15

    images = cache.get_many(image_paths, (100, 100), workers=0)
    assert images.failures == [] and images.ok.all()
    for row, path in zip(images.array, image_paths, strict=True):
        np.testing.assert_array_equal(row, _direct(path, (100, 100)))
        assert row.std() > 10  # a real radiograph, not a blank

    masks = cache.get_many(mask_paths, (299, 299), kind="mask", workers=0)
    assert masks.failures == [] and masks.ok.all()
    for row, path in zip(masks.array, mask_paths, strict=True):
        np.testing.assert_array_equal(row, _direct(path, (299, 299), "mask"))
    lung_fraction = masks.array.reshape(len(mask_paths), -1).mean(axis=1)
    assert np.all((lung_fraction > 0.1) & (lung_fraction < 0.7))
    assert masks.array.view(bool).shape == (15, 299, 299)

    assert cache.get_many(image_paths, (100, 100), workers=0).hits == len(image_paths)


def test_workers_give_the_same_result_as_in_process(tmp_path):
    paths = sorted((REAL_DATASET / "Viral Pneumonia" / "images").glob("*.png"))
    in_process = ImageCache(tmp_path / "a").get_many(paths, (64, 48), workers=0)
    with_workers = ImageCache(tmp_path / "b").get_many(paths, (64, 48), workers=2)
    assert with_workers.misses == len(paths) and with_workers.failures == []
    np.testing.assert_array_equal(with_workers.array, in_process.array)
    np.testing.assert_array_equal(with_workers.ok, in_process.ok)
    # What the workers stored is served back.
    assert ImageCache(tmp_path / "b").get_many(paths, (64, 48), workers=0).hits == len(paths)


# ------------------------------------------------------------------------------------------------
# Progress, interruption, maintenance


def test_progress_counts_up_to_the_total(images, cache):
    calls: list[tuple[int, int]] = []
    cache.get_many(
        images, (10, 10), workers=0, progress=lambda done, total: calls.append((done, total))
    )
    assert calls[-1] == (len(images), len(images))
    assert all(total == len(images) for _, total in calls)
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)
    assert len(calls) >= len(images)

    calls.clear()
    cache.get_many(
        images, (10, 10), workers=0, progress=lambda done, total: calls.append((done, total))
    )
    assert calls == [(len(images), len(images))]


class _Killed(BaseException):
    """Stands in for a kill: escapes every ``except Exception``."""


def test_an_interrupted_run_keeps_the_finished_chunks(tmp_path, monkeypatch):
    chunk = cache_module._DECODE_CHUNK
    paths = [_write_png(tmp_path / "many" / f"{i}.png", 8, 8, seed=i) for i in range(chunk + 10)]
    real_read = covidcxr.io.read_image
    calls = []

    def dying_read(path, **kwargs):
        calls.append(path)
        if len(calls) > chunk + 5:
            raise _Killed
        return real_read(path, **kwargs)

    monkeypatch.setattr(covidcxr.io, "read_image", dying_read)
    cache = ImageCache(tmp_path / "cache")
    with pytest.raises(_Killed):
        cache.get_many(paths, (8, 8), workers=0)
    cache.close()

    monkeypatch.setattr(covidcxr.io, "read_image", real_read)
    reopened = ImageCache(tmp_path / "cache")
    assert reopened.stats().entries == chunk
    with sqlite3.connect(reopened.db_path) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    batch = reopened.get_many(paths, (8, 8), workers=0)
    assert (batch.hits, batch.misses) == (chunk, 10)


def test_stats_prune_and_clear(images, cache):
    assert cache.stats().entries == 0
    cache.get_many(images, (20, 10), workers=0)
    stats = cache.stats()
    assert stats.entries == len(images)
    assert stats.payload_bytes == len(images) * 20 * 10
    assert stats.disk_bytes >= stats.payload_bytes

    images[0].unlink()
    _bump_mtime(images[1])
    assert cache.prune() == 2
    assert cache.stats().entries == len(images) - 2

    cache.clear()
    assert cache.stats().entries == 0
    assert cache.get_many(images[2:], (20, 10), workers=0).misses == len(images) - 2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "rgb"}, "kind should be one of"),
        ({"size": (0, 10)}, r"\(height, width\)"),
        ({"size": 100}, r"\(height, width\)"),
        ({"workers": -1}, "workers should be"),
    ],
)
def test_invalid_arguments(images, cache, kwargs, message):
    arguments = {"size": (10, 10), "workers": 0, **kwargs}
    with pytest.raises(ValueError, match=message):
        cache.get_many(images, **arguments)


# ------------------------------------------------------------------------------------------------
# Location and concurrency


def test_cache_dir_honours_covidcxr_cache_dir(images, tmp_path, monkeypatch):
    monkeypatch.setenv("COVIDCXR_CACHE_DIR", str(tmp_path / "from-env"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    image_cache = ImageCache()
    assert image_cache.cache_dir == tmp_path / "from-env"
    image_cache.get_many(images[:1], (10, 10), workers=0)
    assert (tmp_path / "from-env" / cache_module.DB_FILENAME).is_file()
    assert not (tmp_path / "xdg").exists()


def test_cache_dir_falls_back_to_xdg_then_home(tmp_path, monkeypatch):
    monkeypatch.delenv("COVIDCXR_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "covidcxr"
    monkeypatch.setenv("XDG_CACHE_HOME", "")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "covidcxr"


def test_pickled_cache_reopens_its_own_connection(images, cache):
    cache.get_many(images, (12, 12), workers=0)  # opens a connection
    clone = pickle.loads(pickle.dumps(cache))
    assert clone.cache_dir == cache.cache_dir
    assert clone.get_many(images, (12, 12), workers=0).hits == len(images)


# Set before forking, so children inherit the very object (with the parent's open connection)
# the way DataLoader workers inherit a dataset, instead of receiving a pickled copy.
_INHERITED: dict[str, ImageCache] = {}


def _read_in_child(args: tuple[list[Path], tuple[int, int]]) -> tuple[int, bytes, int]:
    paths, size = args
    image_cache = _INHERITED["cache"]
    batch = image_cache.get_many(paths, size, workers=0)
    return batch.hits, batch.array.tobytes(), id(image_cache._local.connection)


def test_forked_processes_read_and_write_concurrently(images, cache, monkeypatch):
    expected = cache.get_many(images, (30, 30), workers=0)  # the parent holds a connection
    parent_connection = id(cache._local.connection)
    monkeypatch.setitem(_INHERITED, "cache", cache)
    jobs = [(images, (30, 30))] * 6 + [(images, (31, 29))] * 2
    with multiprocessing.get_context("fork").Pool(4) as pool:
        results = pool.map(_read_in_child, jobs, chunksize=1)
    # Every child opened its own connection instead of using the one it inherited.
    assert parent_connection not in {connection for _, _, connection in results}
    for hits, pixels, _ in results[:6]:
        assert hits == len(images)
        assert pixels == expected.array.tobytes()
    # The two writers of the new size raced; both got correct pixels and one row per file stays.
    resized = cache.get_many(images, (31, 29), workers=0)
    assert resized.hits == len(images)
    for _, pixels, _ in results[6:]:
        assert pixels == resized.array.tobytes()
    assert cache.stats().entries == 2 * len(images)
    # The parent's own connection still works after the children used theirs.
    assert cache.get_many(images, (30, 30), workers=0).hits == len(images)
