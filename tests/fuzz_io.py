"""Fuzz harness for covidcxr.io's readers (run by ``tests/test_io_fuzz.py``, or by hand).

The property: for any bytes, :func:`covidcxr.io.load_image_bytes` and :func:`read_image` on a
file holding them either return a finite float32 ``(H, W)`` array in ``[0, 1]`` or raise
``ImageReadError`` / ``ValueError``. Any other exception is a bug; so is an input that runs for
longer than the per-input time limit.

    python tests/fuzz_io.py CORPUS_DIR [libFuzzer flags, e.g. -max_total_time=40]

With atheris installed (``pip install atheris``; Linux, CPython 3.11+) the search is coverage
guided, over covidcxr, Pillow's and pydicom's Python code. Without it, ``--plain`` (or a missing
atheris) runs seeded random mutations of the corpus files for ``-max_total_time`` seconds. Both
end by printing ``Done N runs in S second(s)``; a failing input is written to
``-artifact_prefix`` (default: the working folder) as ``crash-*`` and the process exits non-zero.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import os
import random
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

#: Small enough that no fuzzed header makes one input slow or large, large enough for the seeds.
MAX_PIXELS = 1024 * 1024
# Suffixes a fuzzed file is given (the first byte picks one): the name must never matter more
# than the rule in covidcxr.io says (a .dcm name lets unknown content be tried as DICOM).
SUFFIXES = (".png", ".dcm", ".jpg", "")
# Where each input is written for read_image (one file at a time, removed after each input).
# libFuzzer ends the process without Python's atexit: $COVIDCXR_FUZZ_TMP puts it somewhere
# that is cleaned anyway (the test's tmp_path).
_scratch = Path(tempfile.mkdtemp(prefix="covidcxr-fuzz-", dir=os.environ.get("COVIDCXR_FUZZ_TMP")))
atexit.register(shutil.rmtree, _scratch, True)


def check(data: bytes) -> None:
    """Raise AssertionError (or the unexpected exception) unless ``data`` meets the property."""
    from covidcxr.io import ImageReadError, load_image_bytes, read_image

    results = []
    with contextlib.suppress(ImageReadError, ValueError):
        results.append(load_image_bytes(data, "fuzz-input", max_pixels=MAX_PIXELS).image)
    path = _scratch / f"input{SUFFIXES[data[0] % len(SUFFIXES)] if data else ''}"
    path.write_bytes(data)
    try:
        with contextlib.suppress(ImageReadError, ValueError):
            results.append(read_image(path, max_pixels=MAX_PIXELS))
    finally:
        path.unlink()
    for image in results:
        assert isinstance(image, np.ndarray), type(image)
        shape = image.shape
        assert image.dtype == np.float32 and image.ndim == 2 and image.size > 0, (
            image.dtype,
            shape,
        )
        assert np.isfinite(image).all(), "non-finite pixels"
        assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0, (image.min(), image.max())


def _flags(argv: list[str]) -> tuple[list[Path], dict[str, str]]:
    folders = [Path(arg) for arg in argv if not arg.startswith("-")]
    flags = dict(
        arg.lstrip("-").split("=", 1) for arg in argv if arg.startswith("-") and "=" in arg
    )
    return folders, flags


def _mutate(data: bytes, rng: random.Random, corpus: list[bytes]) -> bytes:
    """One to eight random edits: bit flips, byte overwrites (often 0, 0xFF or a boundary
    number), inserted or deleted runs, truncation, or a splice with another seed."""
    buffer = bytearray(data or b"\0")
    for _ in range(rng.randint(1, 8)):
        choice = rng.random()
        position = rng.randrange(len(buffer)) if buffer else 0
        if choice < 0.3 and buffer:
            buffer[position] ^= 1 << rng.randrange(8)
        elif choice < 0.55 and buffer:
            buffer[position] = rng.choice((0, 0xFF, 0x7F, 0x80, 1, rng.randrange(256)))
        elif choice < 0.65:
            buffer[position:position] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        elif choice < 0.75 and len(buffer) > 1:
            del buffer[position : position + rng.randint(1, 64)]
        elif choice < 0.85 and len(buffer) > 1:
            del buffer[rng.randrange(1, len(buffer)) :]
        elif choice < 0.95 and len(buffer) >= 4:
            number = rng.choice((0, 1, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF, 2**16, rng.getrandbits(32)))
            width = rng.choice((2, 4))
            order = rng.choice(("little", "big"))
            buffer[position : position + width] = (number % 2 ** (8 * width)).to_bytes(width, order)
        else:
            other = rng.choice(corpus)
            cut = rng.randrange(len(other) + 1)
            buffer = buffer[:position] + bytearray(other[cut:])
    return bytes(buffer)


def _plain(argv: list[str]) -> int:
    """Seeded random mutation of the corpus, without coverage guidance."""
    folders, flags = _flags(argv)
    budget = float(flags.get("max_total_time", 30))
    prefix = flags.get("artifact_prefix", "")
    corpus = [p.read_bytes() for folder in folders for p in sorted(folder.iterdir()) if p.is_file()]
    corpus = corpus or [b""]
    rng = random.Random(int(flags.get("seed", 0)))
    started, runs = time.monotonic(), 0
    while time.monotonic() - started < budget:
        data = _mutate(rng.choice(corpus), rng, corpus) if runs >= len(corpus) else corpus[runs]
        runs += 1
        try:
            check(data)
        except BaseException:
            crash = Path(f"{prefix}crash-{hashlib.sha1(data).hexdigest()}")
            crash.write_bytes(data)
            print(f"Test unit written to {crash}", flush=True)
            raise
    print(f"Done {runs} runs in {round(time.monotonic() - started)} second(s)", flush=True)
    return 0


def main(argv: list[str]) -> int:
    try:
        if "--plain" in argv:
            raise ImportError
        import atheris
    except ImportError:
        return _plain([arg for arg in argv[1:] if arg != "--plain"])
    # Everything the readers import lazily is imported here, so that it is instrumented too.
    with atheris.instrument_imports(include=["covidcxr", "PIL", "pydicom"]):
        import PIL.Image
        import PIL.ImageOps
        import PIL.JpegImagePlugin
        import PIL.MpoImagePlugin
        import PIL.PngImagePlugin  # noqa: F401  (importing is what instruments a module)
        import pydicom
        import pydicom.pixels  # noqa: F401

        import covidcxr.dicom
        import covidcxr.io  # noqa: F401
    atheris.Setup(argv, check)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    warnings.simplefilter("ignore")  # pydicom warns about every odd value a mutation makes
    sys.exit(main(sys.argv))
