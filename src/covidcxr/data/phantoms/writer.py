"""Writing a phantom dataset: :func:`write_phantoms` lays out rendered phantoms
(:func:`~covidcxr.data.phantoms.anatomy.render_phantom`) in the COVID-19 Radiography Database's
newest layout (``<Folder>/images``, ``<Folder>/masks``, ``<Folder>.metadata.xlsx``) with a
dataset card, atomically, so every reader, model and report can run without the real data.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
import time
import zipfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
from PIL import Image

from covidcxr.data.classes import class_names
from covidcxr.data.phantoms.anatomy import render_phantom

__all__ = ["FOLDER_NAMES", "PhantomSummary", "write_phantoms"]

#: Folder (and file-name prefix) of each canonical class in the database's newest layout.
FOLDER_NAMES: dict[str, str] = {
    "Normal": "Normal",
    "COVID": "COVID",
    "Viral Pneumonia": "Viral Pneumonia",
    "Lung Opacity": "Lung_Opacity",
}

# The real database writes Normal file names upper-case in its metadata sheet.
_METADATA_STEMS: dict[str, str] = {**FOLDER_NAMES, "Normal": "NORMAL"}

_METADATA_HEADER = ("FILE NAME", "FORMAT", "SIZE", "URL")
_FIXED_TIMESTAMP = datetime(2021, 1, 1)
_RGB_FRACTION = 0.05

# Fake public sources on reserved example domains. Two share one GitHub-like host, as several
# real sources do; each class draws from them in its own proportions (the database's source
# confound, visible in metadata only: the images themselves do not depend on the source).
_SOURCES: tuple[str, ...] = (
    "https://hospital-a.example/cxr/",
    "https://hospital-b.example/pacs/export/",
    "https://github.example/covid-imaging-a/chestxray/raw/main/images/",
    "https://github.example/open-cxr-b/dataset/blob/master/png/",
)
_SOURCE_WEIGHTS: dict[str, tuple[float, ...]] = {
    "Normal": (0.70, 0.22, 0.0, 0.08),
    "COVID": (0.10, 0.15, 0.45, 0.30),
    "Viral Pneumonia": (0.05, 0.90, 0.0, 0.05),
    "Lung Opacity": (0.80, 0.05, 0.05, 0.10),
}


@dataclass(frozen=True)
class PhantomSummary:
    """What :func:`write_phantoms` wrote: the dataset ``root``, images per canonical class name
    (``counts``), and the wall-clock ``seconds`` it took."""

    root: Path
    counts: dict[str, int]
    seconds: float

    @property
    def total(self) -> int:
        """Number of images written over all classes."""
        return sum(self.counts.values())


def _check_arguments(per_class: int, num_classes: int, image_size: int, mask_size: int) -> None:
    if isinstance(per_class, bool) or not isinstance(per_class, int) or per_class < 1:
        raise ValueError(f"per_class should be an integer >= 1, got {per_class!r}")
    if num_classes not in (3, 4):
        raise ValueError(
            f"num_classes should be 3 (Normal, COVID, Viral Pneumonia) or 4 (adds Lung Opacity), "
            f"got {num_classes!r}"
        )
    for name, value in (("image_size", image_size), ("mask_size", mask_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 32:
            raise ValueError(f"{name} should be an integer >= 32 pixels, got {value!r}")


def _prepare_destination(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise FileExistsError(f"{out_dir} exists and is not a directory; choose another out_dir")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not overwrite:
            raise FileExistsError(
                f"{out_dir} exists and is not empty; pass overwrite=True to replace it "
                f"or choose another out_dir"
            )
        resolved = out_dir.resolve()
        protected = {Path.cwd().resolve(), Path.home().resolve()}
        if any(resolved == p or resolved in p.parents for p in protected):
            raise ValueError(
                f"refusing to overwrite {out_dir}: it contains the working or home directory; "
                f"choose a dedicated out_dir"
            )


def _save_png(pixels: np.ndarray, path: Path, rgb: bool = False) -> None:
    """Save (H, W) uint8 ``pixels`` as a grey PNG, or as RGB with three equal channels."""
    image = Image.fromarray(pixels)
    if rgb:
        image = image.convert("RGB")
    image.save(path, format="PNG")


def _write_metadata(path: Path, rows: list[tuple[str, str, str, str]]) -> None:
    """Write a metadata sheet with fixed document properties and zip timestamps, so the same
    rows always give the same bytes (``openpyxl.save`` would stamp the current time)."""
    from openpyxl import Workbook
    from openpyxl.writer.excel import ExcelWriter

    workbook = Workbook()
    sheet = workbook.active
    sheet.title = "Sheet1"
    sheet.append(_METADATA_HEADER)
    for row in rows:
        sheet.append(row)
    workbook.properties.created = _FIXED_TIMESTAMP
    workbook.properties.modified = _FIXED_TIMESTAMP
    workbook.properties.creator = "covidcxr phantoms"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        ExcelWriter(workbook, archive).save()
    stamp = _FIXED_TIMESTAMP.timetuple()[:6]
    with (
        zipfile.ZipFile(io.BytesIO(buffer.getvalue())) as source,
        zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as target,
    ):
        for info in source.infolist():
            fixed = zipfile.ZipInfo(info.filename, date_time=stamp)
            fixed.compress_type = zipfile.ZIP_DEFLATED
            target.writestr(fixed, source.read(info.filename))


def _write_one(
    staging: Path, name: str, class_index: int, number: int, seed: int, sizes: tuple[int, int]
) -> tuple[str, str, str, str]:
    """Render and save image ``number`` of class ``name`` with its mask; returns its metadata
    row. Every choice comes from the image's own generator, so images can be made in any order."""
    image_size, mask_size = sizes
    rng = np.random.default_rng([seed, class_index, number])
    # File-level choices first; they do not depend on the class (only the source weights do).
    save_rgb = bool(rng.random() < _RGB_FRACTION)
    source = _SOURCES[int(rng.choice(len(_SOURCES), p=_SOURCE_WEIGHTS[name]))]
    source_id = f"{int(rng.integers(16**8)):08x}"
    image, lung_mask = render_phantom(name, rng, size=image_size)

    folder = FOLDER_NAMES[name]
    stem = f"{folder}-{number}"
    pixels = np.round(image * 255).astype(np.uint8)
    _save_png(pixels, staging / folder / "images" / f"{stem}.png", rgb=save_rgb)
    # Nearest-neighbour keeps the mask binary and aligned with the image.
    mask = Image.fromarray(lung_mask.astype(np.uint8) * 255).resize(
        (mask_size, mask_size), Image.Resampling.NEAREST
    )
    _save_png(np.asarray(mask), staging / folder / "masks" / f"{stem}.png", rgb=True)
    size_text = f"{image_size}*{image_size}"
    return f"{_METADATA_STEMS[name]}-{number}", "PNG", size_text, f"{source}{source_id}.png"


def write_phantoms(
    out_dir: Path,
    per_class: int,
    seed: int = 0,
    num_classes: int = 3,
    image_size: int = 299,
    mask_size: int = 256,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> PhantomSummary:
    """Write a synthetic dataset in the COVID-19 Radiography Database's newest layout.

    Creates ``out_dir/<Folder>/images/<Folder>-<i>.png`` (8-bit, image_size², mostly mode L and
    about 5 % RGB with equal channels), ``out_dir/<Folder>/masks/<Folder>-<i>.png`` (lung masks at
    mask_size², values {0, 255}, RGB with equal channels) and ``out_dir/<Folder>.metadata.xlsx``
    (``FILE NAME, FORMAT, SIZE, URL``; Normal names upper-case, as in the real database) for the
    first ``num_classes`` classes, ``i`` from 1 to ``per_class``. Folders are ``Normal``,
    ``COVID``, ``Viral Pneumonia`` and, with ``num_classes=4``, ``Lung_Opacity``.

    Image ``i`` of class ``c`` comes from ``numpy.random.default_rng([seed, c, i])``: a seed always
    gives the same bytes, and the first images do not depend on ``per_class``. The dataset is
    built in a temporary sibling directory and renamed into place, so an interrupted run leaves
    no half-written dataset. ``progress(done, total)`` is called after each image.

    Raises FileExistsError when ``out_dir`` is not empty and ``overwrite`` is false, ValueError
    for invalid arguments.
    """
    started = time.perf_counter()
    _check_arguments(per_class, num_classes, image_size, mask_size)
    out_dir = Path(out_dir)
    _prepare_destination(out_dir, overwrite)
    out_dir.parent.mkdir(parents=True, exist_ok=True)

    names = class_names(num_classes)
    jobs = [
        (name, index, number)
        for index, name in enumerate(names)
        for number in range(1, per_class + 1)
    ]
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    # numpy, scipy and Pillow release the GIL in their heavy loops, so a few threads give most
    # of a multi-process speed-up without its start-up cost.
    executor = ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1))
    try:
        staging.chmod(0o755)  # mkdtemp makes it private; a dataset should not be
        for name in names:
            (staging / FOLDER_NAMES[name] / "images").mkdir(parents=True)
            (staging / FOLDER_NAMES[name] / "masks").mkdir(parents=True)
        futures = [
            executor.submit(_write_one, staging, name, index, number, seed, (image_size, mask_size))
            for name, index, number in jobs
        ]
        rows: dict[str, list[tuple[str, str, str, str]]] = {name: [] for name in names}
        for done, ((name, _, _), future) in enumerate(zip(jobs, futures, strict=True), start=1):
            rows[name].append(future.result())
            if progress is not None:
                progress(done, len(jobs))
        for name in names:
            _write_metadata(staging / f"{FOLDER_NAMES[name]}.metadata.xlsx", rows[name])
        _write_dataset_card(staging, per_class, seed, names, (image_size, mask_size))
        _replace_directory(staging, out_dir)
    except BaseException:
        executor.shutdown(wait=True, cancel_futures=True)
        shutil.rmtree(staging, ignore_errors=True)
        raise
    executor.shutdown()
    counts = dict.fromkeys(names, per_class)
    return PhantomSummary(root=out_dir, counts=counts, seconds=time.perf_counter() - started)


def _write_dataset_card(
    folder: Path, per_class: int, seed: int, names: tuple[str, ...], sizes: tuple[int, int]
) -> None:
    """The dataset's card: these are phantoms, so every model trained on them says so."""
    import json

    from covidcxr import __version__
    from covidcxr.data.layouts import DATASET_CARD

    card = {
        "name": "covidcxr synthetic phantoms",
        "synthetic": True,
        "generator": f"covidcxr {__version__} data phantoms --per-class {per_class} --seed {seed}",
        "class_counts": dict.fromkeys(names, per_class),
        "image_size": sizes[0],
        "mask_size": sizes[1],
        "licence": "generated by covidcxr (Apache-2.0); no patient data",
    }
    (folder / DATASET_CARD).write_text(json.dumps(card, indent=2), encoding="utf-8")


def _replace_directory(staging: Path, out_dir: Path) -> None:
    """Move ``staging`` to ``out_dir``, replacing an existing ``out_dir`` only once the new
    dataset is complete."""
    if not out_dir.exists():
        os.replace(staging, out_dir)
        return
    retired = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
    retired.rmdir()
    os.replace(out_dir, retired)
    try:
        os.replace(staging, out_dir)
    except BaseException:
        os.replace(retired, out_dir)
        raise
    shutil.rmtree(retired, ignore_errors=True)
