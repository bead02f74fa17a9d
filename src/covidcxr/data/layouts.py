"""Find the images of a dataset, whatever layout it was downloaded in.

:func:`discover` accepts

* the COVID-19 Radiography Database's newest layout: ``<Class>/images/*.png``,
  ``<Class>/masks/*.png`` and ``<Class>.metadata.xlsx`` (``radiography-database``);
* its older flat layout: ``COVID-19/COVID-19 (1).png``, ``NORMAL/NORMAL (1).png``,
  ``Viral Pneumonia/...`` with the file-name case varying between releases
  (``radiography-database-flat``);
* any class-per-folder tree of PNG, JPEG or DICOM files, nested as deep as you like, with an
  optional ``masks/`` folder per class (``class-folders``);
* a CSV manifest with columns ``path,label[,group,source,mask]`` (``csv-manifest``), paths relative
  to the CSV's folder;
* a folder above any of these (e.g. the one that holds ``COVID-19_Radiography_Dataset/``).

Folder and label names are matched through the aliases in :mod:`covidcxr.data.classes`.

What is left out, and said so
-----------------------------
Nothing is dropped silently: every entry that cannot be used goes into
:attr:`DatasetIndex.problems` with its reason, for the commands to list. Left out are broken
symbolic links, FIFOs, sockets and devices (never opened: a FIFO would block), files whose name
is not valid UTF-8 (listed with ``\\xNN`` escapes; they cannot be written into covidcxr's UTF-8
split and report files, so rename them), and, in a manifest, rows naming a missing file, rows
with an unknown label or an empty path, and repeated rows. A manifest that lists one file under
two labels is refused (``ValueError`` naming the rows), and so is one naming files outside its
own folder (``../``, or an absolute path elsewhere) unless ``allow_outside=True``.
"""

from __future__ import annotations

import csv
import os
import re
import zipfile
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from covidcxr.data.classes import ALL_CLASS_NAMES, canonical_class_name, class_names
from covidcxr.data.sample import Sample
from covidcxr.io import (
    NOT_UTF8_REASON,
    SUPPORTED_SUFFIXES,
    escape_path,
    file_problem,
    is_dicom,
    is_utf8_path,
)

LAYOUT_RADIOGRAPHY = "radiography-database"
LAYOUT_RADIOGRAPHY_FLAT = "radiography-database-flat"
LAYOUT_CLASS_FOLDERS = "class-folders"
LAYOUT_MANIFEST = "csv-manifest"

#: Hosts that serve many unrelated collections: their first path segment(s) name the source, so
#: that e.g. RSNA's adult and Kermany's paediatric images (both on kaggle.com) stay distinct.
SHARED_HOSTS = frozenset({"github.com", "gitlab.com", "kaggle.com", "github.example"})

_MASK_FOLDER_NAMES = frozenset({"masks", "mask", "lung masks", "lung_masks"})
_IGNORED_NAMES = frozenset({".ds_store", "thumbs.db", "desktop.ini"})
_FLAT_FILE_NAME = re.compile(r"^.+ \(\d+\)$")


@dataclass(frozen=True)
class DatasetIndex:
    """Every labelled image found under ``root`` and what could not be used.

    ``excluded`` counts images of known classes outside this class setting (Lung Opacity with
    three classes). ``problems`` lists ``(path, reason)`` for the entries left out or found
    wrong before any image is read: broken symbolic links, FIFOs and devices, names that are
    not UTF-8 (the path then shown with ``\\xNN`` escapes), manifest rows naming a missing file
    or an unknown label, an unreadable metadata sheet... ``ignored`` lists files and folders
    that are not images of a known class.
    """

    root: Path
    layout: str
    class_names: tuple[str, ...]
    samples: tuple[Sample, ...]
    excluded: dict[str, int] = field(default_factory=dict)
    problems: tuple[tuple[Path, str], ...] = ()
    ignored: tuple[Path, ...] = ()

    def counts(self) -> dict[str, int]:
        """Number of images per class, in label order (zero for classes with none)."""
        found = Counter(sample.class_name for sample in self.samples)
        return {name: found.get(name, 0) for name in self.class_names}

    def __len__(self) -> int:
        return len(self.samples)


def discover(
    path: str | Path, num_classes: int = 3, *, allow_outside: bool = False
) -> DatasetIndex:
    """Index the dataset at ``path`` (a folder in any supported layout, or a CSV manifest).

    ``num_classes`` is 3 (Normal, COVID, Viral Pneumonia; the paper's setting) or 4 (adds Lung
    Opacity). ``allow_outside`` lets a manifest name files outside its own folder. Raises
    ``FileNotFoundError`` when ``path`` does not exist and ``ValueError`` when no supported
    layout is found there, or for a manifest that lists one file under two labels or (without
    ``allow_outside``) names a file outside its folder. Entries left out are listed in
    :attr:`DatasetIndex.problems`.
    """
    names = class_names(num_classes)
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    if path.is_file():
        if zipfile.is_zipfile(path):
            raise ValueError(
                f"{path}: is a zip archive; covidcxr reads the folder inside it. Unpack it "
                f"once (`python -m zipfile -e {path} DEST` or `unzip {path} -d DEST`), then "
                "point covidcxr at the folder it holds (the Kaggle download's is "
                "DEST/COVID-19_Radiography_Dataset)"
            )
        if path.suffix.lower() != ".csv":
            raise ValueError(
                f"{path}: expected a dataset folder or a CSV manifest (path,label[,group,source]),"
                f" got a {path.suffix or 'suffix-less'} file"
            )
        return _read_manifest(path.resolve(), names, allow_outside)
    root = _locate_root(path.resolve())
    if root.is_file():
        return _read_manifest(root, names, allow_outside)
    return _read_class_folders(root, names)


DATASET_CARD = "covidcxr-dataset.json"
"""A dataset's own card, beside its class folders: where its images came from (``sources``),
what was left out (``excluded_counts``), its ``licence`` and whether it is ``synthetic``.
``covidcxr data phantoms`` and ``recipes/real_data.py`` write one; training copies it into the
model card so that a saved model says what it has seen."""


def dataset_card(root: str | Path) -> dict | None:
    """The dataset card (:data:`DATASET_CARD`) in ``root`` or the folder above it, or None.

    Raises ValueError for a card that is not a JSON object."""
    import json

    root = Path(root)
    folder = root.parent if root.is_file() else root
    for candidate in (folder / DATASET_CARD, folder.parent / DATASET_CARD):
        if candidate.is_file():
            try:
                card = json.loads(candidate.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
                raise ValueError(f"{candidate}: not a readable dataset card ({error})") from None
            if not isinstance(card, dict):
                raise ValueError(f"{candidate}: a dataset card should be a JSON object")
            return card
    return None


# --------------------------------------------------------------------------------------------
# Locating the dataset inside what the user pointed at


def _class_folders(folder: Path) -> dict[str, list[Path]]:
    found: dict[str, list[Path]] = {}
    for child in sorted(folder.iterdir()):
        if child.is_dir() and not child.name.startswith("."):
            name = canonical_class_name(child.name)
            if name is not None:
                found.setdefault(name, []).append(child)
    return found


def _locate_root(folder: Path, depth: int = 0) -> Path:
    if _class_folders(folder):
        return folder
    manifest = folder / "manifest.csv"
    if manifest.is_file():
        return manifest
    children = [c for c in sorted(folder.iterdir()) if c.is_dir() and not c.name.startswith(".")]
    preferred = [c for c in children if "radiography" in c.name.lower()]
    candidates = preferred or (children if len(children) == 1 else [])
    if depth < 2:
        for child in candidates:
            try:
                return _locate_root(child, depth + 1)
            except ValueError:
                continue
    shown = ", ".join(c.name for c in children[:8]) or "none"
    raise ValueError(
        f"{folder}: no dataset found. Expected class folders (e.g. COVID/, Normal/, "
        f"Viral Pneumonia/ — each with images/ and masks/ as in the COVID-19 Radiography "
        f"Database, or holding images directly), a manifest.csv, or a folder holding "
        f"COVID-19_Radiography_Dataset/. Sub-folders found: {shown}."
    )


# --------------------------------------------------------------------------------------------
# Folder layouts


def is_image_file(path: Path) -> bool:
    """True for a PNG / JPEG / DICOM file name, or a suffix-less file with the DICOM preamble."""
    suffix = path.suffix.lower()
    if suffix in SUPPORTED_SUFFIXES:
        return True
    return suffix == "" and is_dicom(path)


def is_mask_path(relative: Path) -> bool:
    """True when a path (relative to a dataset folder) lies in a ``masks/`` folder."""
    return any(part.lower() in _MASK_FOLDER_NAMES for part in relative.parts[:-1])


def _walk_files(folder: Path) -> tuple[list[Path], list[tuple[Path, str]]]:
    """The regular files under ``folder`` (hidden ones left out), sorted, and ``(path, reason)``
    for the entries that are neither a file nor a folder (broken links, FIFOs, devices)."""
    files: list[Path] = []
    unusable: list[tuple[Path, str]] = []
    for path in sorted(folder.rglob("*")):
        if path.name.startswith(".") or path.is_dir():
            continue
        problem = file_problem(path)
        if problem is None:
            files.append(path)
        else:
            unusable.append(
                (_shown(path), f"left out: it {problem}; replace it with the image or remove it")
            )
    return files, unusable


def _shown(path: Path) -> Path:
    """``path`` fit to print: a name that is not UTF-8 with its bytes as ``\\xNN``."""
    return path if is_utf8_path(path) else Path(escape_path(path))


def _read_class_folders(root: Path, names: tuple[str, ...]) -> DatasetIndex:
    folders = _class_folders(root)
    newest = any((f / "images").is_dir() for group in folders.values() for f in group)
    samples: list[Sample] = []
    excluded: Counter[str] = Counter()
    problems: list[tuple[Path, str]] = []
    ignored: list[Path] = [
        child
        for child in sorted(root.iterdir())
        if child.is_dir() and not child.name.startswith(".") and child not in _flatten(folders)
    ]
    flat_names = 0
    for class_name, class_dirs in folders.items():
        for class_dir in class_dirs:
            images, masks, other, unusable = _split_images_and_masks(class_dir, newest)
            ignored.extend(other)
            if class_name not in names:
                excluded[class_name] += len(images)
                continue
            problems.extend(unusable)
            sources, sheet_problem = _read_metadata_sheet(root, class_dir.name)
            if sheet_problem:
                problems.append(sheet_problem)
            mask_by_key = {_name_key(m.stem): m for m in masks}
            for image in images:
                key = _name_key(image.stem)
                flat_names += bool(_FLAT_FILE_NAME.match(image.stem))
                samples.append(
                    Sample(
                        path=image,
                        label=names.index(class_name),
                        class_name=class_name,
                        mask_path=mask_by_key.pop(key, None),
                        source=sources.get(key),
                    )
                )
            problems.extend((m, "mask without a matching image") for m in mask_by_key.values())

    if newest:
        layout = LAYOUT_RADIOGRAPHY
    elif samples and flat_names * 2 >= len(samples):
        layout = LAYOUT_RADIOGRAPHY_FLAT
    else:
        layout = LAYOUT_CLASS_FOLDERS
    samples.sort(key=lambda s: (s.label, _natural_key(s.path.relative_to(root).as_posix())))
    return DatasetIndex(
        root=root,
        layout=layout,
        class_names=names,
        samples=tuple(samples),
        excluded=dict(excluded),
        problems=tuple(problems),
        ignored=tuple(ignored),
    )


def _flatten(folders: dict[str, list[Path]]) -> list[Path]:
    return [folder for group in folders.values() for folder in group]


def _split_images_and_masks(
    class_dir: Path, newest: bool
) -> tuple[list[Path], list[Path], list[Path], list[tuple[Path, str]]]:
    """Images, masks, ignored (non-image) files and unusable entries (with their reasons)
    under one class folder."""
    images: list[Path] = []
    masks: list[Path] = []
    other: list[Path] = []
    image_dir = class_dir / "images" if newest and (class_dir / "images").is_dir() else class_dir
    files, unusable = _walk_files(class_dir)
    for path in files:
        if path.name.lower() in _IGNORED_NAMES:
            continue
        in_mask_folder = is_mask_path(path.relative_to(class_dir))
        if not is_image_file(path):
            other.append(path)
        elif not is_utf8_path(path):
            unusable.append((_shown(path), NOT_UTF8_REASON))
        elif in_mask_folder:
            masks.append(path)
        elif path.is_relative_to(image_dir):
            images.append(path)
        else:
            other.append(path)
    return images, masks, other, unusable


def _read_metadata_sheet(
    root: Path, folder_name: str
) -> tuple[dict[str, str], tuple[Path, str] | None]:
    """Map image-name keys to sources from ``<folder>.metadata.xlsx`` (any case), if present."""
    wanted = f"{folder_name}.metadata.xlsx".lower()
    sheets = [p for p in root.iterdir() if p.is_file() and p.name.lower() == wanted]
    if not sheets:
        return {}, None
    sheet = sheets[0]
    try:
        from openpyxl import load_workbook

        workbook = load_workbook(sheet, read_only=True, data_only=True)
        try:
            rows = workbook.worksheets[0].iter_rows(values_only=True)
            header = [str(cell or "").strip().upper() for cell in next(rows, ())]
            if "FILE NAME" not in header or "URL" not in header:
                return {}, (sheet, f"metadata sheet lacks FILE NAME / URL columns (has {header})")
            name_col, url_col = header.index("FILE NAME"), header.index("URL")
            sources = {}
            for row in rows:
                if row is None or len(row) <= max(name_col, url_col) or not row[name_col]:
                    continue
                source = source_from_url(str(row[url_col] or ""))
                if source:
                    sources[_name_key(Path(str(row[name_col])).stem)] = source
            return sources, None
        finally:
            workbook.close()
    except Exception as error:  # a damaged sheet must not stop discovery; it is reported
        return {}, (sheet, f"metadata sheet could not be read ({type(error).__name__}: {error})")


def source_from_url(url: str) -> str | None:
    """The source an image came from, from its metadata URL: the host without ``www.``, plus the
    owner (and collection for ``kaggle.com/c/...`` or ``/datasets/...``) on shared hosts.

    >>> source_from_url("https://www.kaggle.com/c/rsna-pneumonia-detection-challenge/data")
    'kaggle.com/c/rsna-pneumonia-detection-challenge'
    >>> source_from_url("https://sirm.org/category/senza-categoria/covid-19/")
    'sirm.org'
    """
    url = url.strip()
    if not url:
        return None
    parsed = urlparse(url if "//" in url else f"//{url}")
    host = (parsed.hostname or "").lower().removeprefix("www.")
    if not host:
        return None
    if host in SHARED_HOSTS:
        parts = [part for part in parsed.path.split("/") if part]
        keep = 2 if parts and parts[0] in ("c", "datasets") else 1
        if parts[:keep]:
            return "/".join([host, *parts[:keep]])
    return host


def _name_key(stem: str) -> str:
    """Image names compared across folders and sheets: case and spaces ignored."""
    return re.sub(r"\s+", "", stem).lower()


def _natural_key(text: str) -> tuple:
    return tuple(int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", text))


# --------------------------------------------------------------------------------------------
# CSV manifest


#: Most rows quoted in one error about a manifest (the rest are counted).
MAX_ROWS_QUOTED = 10


@dataclass(frozen=True)
class _Row:
    line: int
    path: Path
    class_name: str


def _read_manifest(manifest: Path, names: tuple[str, ...], allow_outside: bool) -> DatasetIndex:
    base = manifest.parent
    samples: list[Sample] = []
    excluded: Counter[str] = Counter()
    problems: list[tuple[Path, str]] = []
    first_row: dict[Path, _Row] = {}
    conflicts: list[tuple[_Row, _Row]] = []
    outside: list[tuple[int, str]] = []
    for line, cells in _manifest_rows(manifest):
        raw_path, raw_label = cells.get("path", ""), cells.get("label", "")
        class_name = _manifest_class(raw_label)
        if class_name is None:
            problems.append(
                (
                    manifest,
                    f"line {line}: unknown label {raw_label!r} (expected one of "
                    f"{', '.join(ALL_CLASS_NAMES)}, an alias, or 0-3); the row is skipped",
                )
            )
            continue
        if not raw_path:
            problems.append((manifest, f"line {line}: empty path; the row is skipped"))
            continue
        image = _manifest_path(base, raw_path)
        row = _Row(line, image.path, class_name)
        earlier = first_row.setdefault(image.resolved, row)
        if earlier is not row:
            if earlier.class_name != class_name:
                conflicts.append((earlier, row))
            else:
                problems.append(
                    (
                        manifest,
                        f"line {line}: {raw_path} is listed again (first on line "
                        f"{earlier.line}); the repeat is skipped",
                    )
                )
            continue
        if class_name not in names:
            excluded[class_name] += 1
            continue
        mask_text = cells.get("mask") or cells.get("mask_path") or ""
        mask = _manifest_path(base, mask_text) if mask_text else None
        if not allow_outside and not (image.inside and (mask is None or mask.inside)):
            outside.append((line, raw_path if not image.inside else mask_text))
            continue
        problem = file_problem(image.path)
        if problem is not None:
            # Said of the path as written, so that a broken link is called one.
            problem = file_problem(image.as_written) or problem
            problems.append(
                (
                    _shown(image.as_written),
                    f"listed on line {line} of {manifest.name}, but it {problem}; skipped",
                )
            )
            continue
        samples.append(
            Sample(
                path=image.path,
                label=names.index(class_name),
                class_name=class_name,
                mask_path=None if mask is None else mask.path,
                source=cells.get("source") or None,
                group=cells.get("group") or None,
            )
        )
    if conflicts:
        quoted = _listed(
            f"{escape_path(first.path)} on line {first.line} ({first.class_name}) and line "
            f"{second.line} ({second.class_name})"
            for first, second in conflicts
        )
        raise ValueError(
            f"{manifest}: {len(conflicts)} file(s) listed under two labels: {quoted}. An image "
            "has one label: remove or correct the wrong rows."
        )
    if outside:
        quoted = _listed(f"line {line}: {text}" for line, text in outside)
        raise ValueError(
            f"{manifest}: {len(outside)} row(s) name files outside the manifest's folder "
            f"{base} ({quoted}). Move the manifest to a folder that holds all its images, or, "
            "if those paths are meant, allow them: allow_outside=True (command line: "
            "--allow-outside)."
        )
    return DatasetIndex(
        root=base,
        layout=LAYOUT_MANIFEST,
        class_names=names,
        samples=tuple(samples),
        excluded=dict(excluded),
        problems=tuple(problems),
    )


def _listed(items: Iterable[str]) -> str:
    """The first :data:`MAX_ROWS_QUOTED` of ``items``, joined, then how many more there are."""
    items = list(items)
    shown = "; ".join(items[:MAX_ROWS_QUOTED])
    more = len(items) - MAX_ROWS_QUOTED
    return shown + (f"; and {more} more" if more > 0 else "")


def _manifest_rows(manifest: Path) -> list[tuple[int, dict[str, str]]]:
    """``(line number, cells)`` per data row, ``cells`` keyed by lower-case column name, values
    stripped. Raises ValueError naming the manifest for missing columns, text that is not
    UTF-8, or a malformed CSV."""
    try:
        with manifest.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = {(name or "").strip().lower(): name for name in reader.fieldnames or []}
            missing = [c for c in ("path", "label") if c not in columns]
            if missing:
                raise ValueError(
                    f"{manifest}: a manifest needs the columns path,label (optional group, "
                    f"source, mask); missing {', '.join(missing)} (found: "
                    f"{', '.join(columns) or 'nothing'})"
                )
            return [
                (
                    reader.line_num,
                    {column: (row.get(key) or "").strip() for column, key in columns.items()},
                )
                for row in reader
            ]
    except UnicodeDecodeError as error:
        raise ValueError(
            f"{manifest}: not UTF-8 text ({error.reason} at byte {error.object[error.start]:#04x});"
            ' save it as UTF-8 (a spreadsheet\'s "CSV UTF-8") and try again'
        ) from None
    except csv.Error as error:
        raise ValueError(f"{manifest}: not a readable CSV file ({error})") from None


def _manifest_class(label: str) -> str | None:
    if label.isdigit():
        index = int(label)
        return ALL_CLASS_NAMES[index] if index < len(ALL_CLASS_NAMES) else None
    return canonical_class_name(label)


@dataclass(frozen=True)
class _CellPath:
    """A path in a manifest cell: ``path`` for the sample (relative ones resolved against the
    manifest's folder, absolute ones as written), ``resolved`` (links followed: one file, one
    key), ``as_written`` (``..`` collapsed, links not followed) and whether it is ``inside`` the
    folder, as written or once resolved."""

    path: Path
    resolved: Path
    as_written: Path
    inside: bool


def _manifest_path(base: Path, text: str) -> _CellPath:
    written = Path(text).expanduser()
    resolved = (base / written).resolve()
    as_written = Path(os.path.normpath(base / written))
    return _CellPath(
        path=written if written.is_absolute() else resolved,
        resolved=resolved,
        as_written=as_written,
        inside=as_written.is_relative_to(base) or resolved.is_relative_to(base),
    )
