"""Fuzzing covidcxr.io: any bytes give a finite [0, 1] float32 image or ImageReadError/ValueError.

The bounded run (``slow``) drives ``tests/fuzz_io.py`` in a subprocess from small seeds made of
real X-ray pixels (PNG 8/16-bit, palette, JPEG, DICOM with windows, LUTs, RLE...) and a few files
of refused formats. With atheris installed the search is coverage guided; without it the harness
mutates the seeds at random. The inputs the fuzzer found that broke the property are kept below
as regression tests.
"""

from __future__ import annotations

import os
import re
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from covidcxr.io import ImageReadError, load_image_bytes, read_image
from helpers import REPO, write_dicom, write_png

HARNESS = REPO / "tests" / "fuzz_io.py"
FUZZ_SECONDS = 40
RSS_BUDGET_MB = 3072
"""Memory the harness may use beyond what it inherits (a decompression bomb goes past it)."""


def real_pixels(real_dataset: Path, size: tuple[int, int] = (40, 48)) -> np.ndarray:
    """A real chest X-ray, grey uint8, shrunk to ``size`` (W, H) so that the fuzzer runs fast."""
    with Image.open(real_dataset / "COVID" / "images" / "COVID-1.png") as image:
        return np.asarray(image.convert("L").resize(size))


def write_seeds(folder: Path, real_dataset: Path) -> list[Path]:
    """Small valid files of every kind the reader handles or refuses, from real pixels."""
    folder.mkdir(parents=True, exist_ok=True)
    grey = real_pixels(real_dataset)
    twelve = (grey.astype(np.uint16) * 16).astype(np.uint16)
    picture = Image.fromarray(grey)
    seeds = [
        write_png(folder / "grey.png", grey),
        write_png(folder / "palette.png", grey, mode="P"),
        write_png(folder / "rgba.png", grey, mode="RGBA"),
        write_png(folder / "sixteen.png", twelve * 16),
        write_dicom(folder / "plain.dcm", twelve),
        write_dicom(folder / "window.dcm", twelve, WindowCenter=2048, WindowWidth=1024),
        write_dicom(
            folder / "rescale.dcm",
            twelve,
            RescaleSlope=2,
            RescaleIntercept=-1024,
            WindowCenter=0,
            WindowWidth=400,
        ),
        write_dicom(folder / "mono1.dcm", twelve, photometric="MONOCHROME1"),
        write_dicom(folder / "bare", twelve[:8, :8], preamble=False),
        write_dicom(folder / "frames.dcm", np.stack([twelve[:8, :8], twelve[8:16, :8]])),
    ]
    from pydicom.dataset import Dataset

    lut = Dataset()
    lut.LUTDescriptor = [4, 0, 16]
    lut.add_new(0x00283006, "US", [0, 1000, 3000, 4000])
    seeds.append(write_dicom(folder / "lut.dcm", twelve // 1024, VOILUTSequence=[lut]))

    import pydicom
    from pydicom.uid import RLELossless

    dataset = pydicom.dcmread(seeds[4])
    dataset.compress(RLELossless)
    dataset.save_as(folder / "rle.dcm")
    seeds.append(folder / "rle.dcm")
    for name, options in {
        "baseline.jpg": {"quality": 90},
        "progressive.jpg": {"quality": 80, "progressive": True},
        "picture.gif": {},
        "picture.tiff": {},
        "picture.bmp": {},
        "picture.webp": {},
    }.items():
        picture.save(folder / name, **options)
        seeds.append(folder / name)
    return seeds


def inherited_peak_mb() -> int:
    """The peak RSS the harness starts with. libFuzzer reads its memory with getrusage, and on
    Linux a child's peak starts at the RSS of the process that forked it: this test process,
    which may hold gigabytes of the models earlier tests loaded (a full `make test` once made a
    harness that never used a tenth of that report 3,322 MB and stop as out of memory)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024


def harness_environment(tmp_path: Path) -> dict[str, str]:
    """The harness imports this checkout's covidcxr and writes its scratch files in tmp_path."""
    return {**os.environ, "PYTHONPATH": str(REPO / "src"), "COVIDCXR_FUZZ_TMP": str(tmp_path)}


def assert_property(data: bytes) -> None:
    """The fuzzed property, for one input held in a test."""
    try:
        image = load_image_bytes(data, "regression").image
    except (ImageReadError, ValueError):
        return
    assert image.dtype == np.float32 and image.ndim == 2
    assert np.isfinite(image).all() and image.min() >= 0.0 and image.max() <= 1.0


def test_seeds_read_or_are_refused_clearly(tmp_path: Path, real_dataset: Path) -> None:
    """The corpus itself: the supported formats read, the others name their format."""
    for seed in write_seeds(tmp_path / "corpus", real_dataset):
        if seed.suffix in (".gif", ".tiff", ".bmp", ".webp"):
            with pytest.raises(ImageReadError, match="not a PNG, JPEG or DICOM"):
                read_image(seed)
        else:
            image = read_image(seed)
            assert image.dtype == np.float32 and np.isfinite(image).all(), seed.name
        assert_property(seed.read_bytes())


@pytest.mark.slow
def test_fuzz_readers_never_crash_or_hang(tmp_path: Path, real_dataset: Path) -> None:
    corpus = tmp_path / "corpus"
    write_seeds(corpus, real_dataset)
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    command = [
        sys.executable,
        str(HARNESS),
        str(corpus),
        f"-max_total_time={FUZZ_SECONDS}",
        "-timeout=10",  # seconds on one input before it counts as a hang
        f"-rss_limit_mb={inherited_peak_mb() + RSS_BUDGET_MB}",
        "-max_len=65536",
        "-seed=1",
        f"-artifact_prefix={artifacts}/",
    ]
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=FUZZ_SECONDS + 120,
        env=harness_environment(tmp_path),
        cwd=tmp_path,
    )
    output = result.stdout + result.stderr
    found = sorted(artifacts.iterdir())
    assert result.returncode == 0 and not found, (
        f"the fuzzer found {len(found)} failing input(s) in {artifacts}: "
        f"{[p.name for p in found]}\n{output[-6000:]}"
    )
    runs = re.findall(r"Done (\d+) runs", output)
    assert runs and int(runs[-1]) > 100, output[-3000:]
    guided = "INFO: Seed:" in output or "INFO: Using built-in libfuzzer" in output
    print(f"fuzzed {runs[-1]} inputs in {FUZZ_SECONDS} s ({'atheris' if guided else 'plain'})")


def test_harness_runs_without_atheris(tmp_path: Path, real_dataset: Path) -> None:
    """The plain mutation loop, briefly: the fallback where atheris does not install."""
    corpus = tmp_path / "corpus"
    write_seeds(corpus, real_dataset)
    result = subprocess.run(
        [sys.executable, str(HARNESS), "--plain", str(corpus), "-max_total_time=3"],
        capture_output=True,
        text=True,
        timeout=120,
        env=harness_environment(tmp_path),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"Done \d+ runs", result.stdout)


# --------------------------------------------------------------------------- found by fuzzing


def test_jpeg_reads_in_a_fresh_interpreter() -> None:
    """Regression (found by the fuzz harness): restricting Pillow to ["JPEG", "MPO"] raised
    KeyError 'MPO' in a process where Pillow had not registered its MPO plugin yet."""
    script = (
        "import io, numpy as np\n"
        "from PIL import Image\n"
        "buffer = io.BytesIO()\n"
        "Image.fromarray(np.zeros((8, 8), np.uint8)).save(buffer, format='JPEG')\n"
        "from covidcxr.io import load_image_bytes\n"
        "print(load_image_bytes(buffer.getvalue()).info.format)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "JPEG"


@pytest.mark.parametrize(
    "data",
    [
        b"\x89PNG\r\n\x1a\n",  # the signature alone
        b"\xff\xd8\xff",  # a JPEG start marker alone
        bytes(128) + b"DICM",  # a preamble and nothing after it
        b"\x08\x00\x05\x00CS\x0a\x00ISO_IR 100",  # a bare DICOM header without pixels
        b"GIF89a" + bytes(10),
    ],
)
def test_edge_inputs_meet_the_property(data: bytes) -> None:
    assert_property(data)
    with pytest.raises(ImageReadError):
        load_image_bytes(data, "edge")


def test_dicom_with_zero_rows_is_refused(tmp_path: Path) -> None:
    import pydicom

    path = write_dicom(tmp_path / "rows.dcm", np.ones((4, 4), np.uint16))
    dataset = pydicom.dcmread(path)
    dataset.Rows = 0
    dataset.save_as(path)
    with pytest.raises(ImageReadError):
        read_image(path)
