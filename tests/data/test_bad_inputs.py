"""Every batch path (scan, inspect, split, cache) skips, counts and lists the same bad inputs:
DICOMs with values that are not finite, other formats under a .png name, names that are not
UTF-8, FIFOs and broken symbolic links. None of them stops a run, and none blocks one."""

from __future__ import annotations

import json
import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from covidcxr.data.layouts import discover
from covidcxr.data.scan import scan_images
from helpers import write_dicom

# Writing NaN into a DICOM decimal string is the point here; pydicom rightly warns about it.
pytestmark = pytest.mark.filterwarnings("ignore:Invalid value for VR DS:UserWarning")

RAMP = (np.arange(40 * 50).reshape(40, 50) % 4096).astype(np.uint16)
NOT_UTF8 = os.fsdecode(b"Normal-\xff.png")
ESCAPED = "Normal-\\xff.png"

#: file name → what its reason must say
UNREADABLE = {
    "COVID-nan-slope.dcm": "RescaleSlope is nan",
    "COVID-gif.png": "GIF",
}
SKIPPED = {
    ESCAPED: "not valid UTF-8",
    "Normal-pipe.png": "FIFO",
    "Normal-gone.png": "broken symbolic link",
}


@pytest.fixture()
def bad_dataset(tmp_path: Path, real_dataset: Path) -> Path:
    """Real images in class folders, plus one of each bad input."""
    root = tmp_path / "dataset"
    for name in ("Normal", "COVID", "Viral Pneumonia"):
        (root / name).mkdir(parents=True)
        for image in sorted((real_dataset / name / "images").glob("*.png"))[:5]:
            shutil.copy(image, root / name / image.name)
    covid = root / "COVID"
    write_dicom(covid / "COVID-nan-window.dcm", RAMP, WindowCenter="NaN", WindowWidth=400)
    write_dicom(covid / "COVID-nan-slope.dcm", RAMP, RescaleSlope="NaN", RescaleIntercept=0)
    Image.fromarray((RAMP // 16).astype(np.uint8)).save(covid / "COVID-gif.png", format="GIF")
    normal = root / "Normal"
    shutil.copy(normal / "Normal-1.png", normal / NOT_UTF8)
    os.mkfifo(normal / "Normal-pipe.png")
    (normal / "Normal-gone.png").symlink_to(tmp_path / "deleted.png")
    return root


@pytest.fixture(autouse=True)
def never_block() -> Iterator[None]:
    """Fail (instead of hanging) if anything opens the FIFO."""

    def blocked(signum, frame):
        raise AssertionError("a FIFO was opened for reading and blocked")

    previous = signal.signal(signal.SIGALRM, blocked)
    signal.alarm(120)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def names_and_reasons(entries) -> dict[str, str]:
    return {Path(path).name: reason for path, reason in entries}


def assert_listed(listed: dict[str, str], expected: dict[str, str]) -> None:
    assert set(expected) <= set(listed), listed
    for name, words in expected.items():
        assert words in listed[name], (name, listed[name])


def test_discover_lists_what_it_leaves_out(bad_dataset: Path) -> None:
    index = discover(bad_dataset)
    assert_listed(names_and_reasons(index.problems), SKIPPED)
    found = {s.path.name for s in index.samples}
    assert {"COVID-nan-slope.dcm", "COVID-nan-window.dcm", "COVID-gif.png"} <= found
    assert not found & set(SKIPPED) and NOT_UTF8 not in found


def test_scan_skips_unreadable_files(bad_dataset: Path) -> None:
    index = discover(bad_dataset)
    scan = scan_images(index.samples, workers=0)
    assert_listed(names_and_reasons(scan.failures), UNREADABLE)
    assert len(scan.failures) == len(UNREADABLE)
    window = [s.path.name for s in index.samples].index("COVID-nan-window.dcm")
    assert scan.ok[window]  # read, min-max scaled, with a logged warning


def test_inspect_lists_unreadable_and_skipped(bad_dataset: Path) -> None:
    from covidcxr.data.inspect import format_report, inspect_dataset

    report = inspect_dataset(bad_dataset, workers=0)
    assert_listed(names_and_reasons(report.unreadable), UNREADABLE)
    assert_listed(names_and_reasons(report.problems), SKIPPED)
    text = format_report(report)
    text.encode("utf-8")  # printable: the name that is not UTF-8 shows as \xff
    assert f"Unreadable files: {len(UNREADABLE)}" in text and ESCAPED in text
    assert "Skipped or wrong before reading: 3" in text
    as_json = json.loads(json.dumps(report.to_dict(), ensure_ascii=False))
    assert len(as_json["problems"]) == 3


@pytest.mark.parametrize("workers", [0, 2])
def test_split_leaves_bad_files_out_and_says_so(
    bad_dataset: Path, tmp_path: Path, workers: int
) -> None:
    from covidcxr.data.splits import read_split_csv, split_dataset

    out = tmp_path / "splits.csv"
    result = split_dataset(bad_dataset, out, workers=workers)
    assert_listed(names_and_reasons(result.unreadable), UNREADABLE)
    assert_listed(names_and_reasons(result.problems), SKIPPED)
    assert len(result.left_out) == len(UNREADABLE) + len(SKIPPED)
    described = result.describe()
    described.encode("utf-8")
    assert "3 entries skipped or wrong before reading" in described and ESCAPED in described
    samples, _ = read_split_csv(out, bad_dataset)
    names = {s.path.name for s in samples}
    assert "COVID-nan-window.dcm" in names and len(samples) == 15 + 1
    assert not names & (set(UNREADABLE) | set(SKIPPED))


def test_cache_lists_bad_files_and_keeps_the_rest(bad_dataset: Path, tmp_path: Path) -> None:
    from covidcxr.data.cache import ImageCache

    paths = sorted(p for p in (bad_dataset / "COVID").iterdir()) + [
        bad_dataset / "Normal" / name
        for name in (NOT_UTF8, "Normal-pipe.png", "Normal-gone.png", "Normal-1.png")
    ]
    with ImageCache(tmp_path / "cache") as cache:
        batch = cache.get_many(paths, (32, 32), workers=0)
    reasons = {Path(path).name: reason for path, reason in batch.failures}
    assert "RescaleSlope is nan" in reasons["COVID-nan-slope.dcm"]
    assert "GIF" in reasons["COVID-gif.png"]
    assert "not valid UTF-8" in reasons[NOT_UTF8] and ESCAPED in reasons[NOT_UTF8]
    assert "FIFO" in reasons["Normal-pipe.png"]
    assert "broken symbolic link" in reasons["Normal-gone.png"]
    assert len(batch.failures) == 5 and batch.ok.sum() == len(paths) - 5
