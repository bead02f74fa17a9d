"""What an archive run reads: image files, folders, and lists of them (CSV or Parquet).

A source is an image file, a folder (walked as :func:`covidcxr.inference.predict.iter_image_files`
walks it: sorted, hidden entries and ``masks/`` folders left out), or a ``.csv`` / ``.parquet``
file with a ``path`` column (a covidcxr CSV manifest is one) naming image files or folders,
relative to the list's own folder or absolute. Every file is named by its absolute path
(symbolic links kept, as the local engine compares them): workers on other machines read the
files by that name, so on a cluster the archive must be mounted at the same path on every node.
A file reached twice (two folders that overlap, a list that repeats a row) is predicted once.
A file whose name is not valid UTF-8 is listed as a failure (Parquet holds UTF-8 text only;
the failure shows its bytes as ``\\xNN``): rename it.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

LIST_SUFFIXES = (".csv", ".parquet")
"""A source with one of these suffixes is a list of files, not an image."""
PATH_COLUMN = "path"


def iter_sources(sources: Iterable[str | Path]) -> Iterator[tuple[Path, str | None]]:
    """``(absolute path, None)`` for every image file the ``sources`` name, in order, each
    once; ``(path, reason)`` for an input that does not exist or a list row without a path.
    Raises ``ValueError`` for a list without a ``path`` column."""
    from covidcxr.inference.predict import iter_image_files
    from covidcxr.io import NOT_UTF8_REASON, is_utf8_path

    seen: set[str] = set()
    for source, entry in _entries(sources):
        if entry is None:
            yield source, "no path"
            continue
        for path, reason in iter_image_files([entry]):
            key = os.path.abspath(path)
            if key not in seen:
                seen.add(key)
                yield Path(key), reason if reason or is_utf8_path(key) else NOT_UTF8_REASON


def _entries(sources: Iterable[str | Path]) -> Iterator[tuple[Path, Path | None]]:
    """``(source, entry)`` for each file or folder named, a list's rows in order; ``entry``
    is None for a list row without a path (``source`` then says which list and row)."""
    for source in sources:
        source = Path(source).expanduser()
        if not (source.is_file() and source.suffix.lower() in LIST_SUFFIXES):
            yield source, source
            continue
        for row, entry in enumerate(read_path_list(source), start=2):
            if entry:
                yield source, source.parent / Path(entry).expanduser()
            else:
                yield Path(f"{source}, row {row}"), None


def read_path_list(source: Path) -> list[str]:
    """The ``path`` column of a CSV or Parquet list of files, as written (empty cells as "")."""
    if source.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        schema = pq.read_schema(source)
        _check_column(source, schema.names)
        column = pq.read_table(source, columns=[PATH_COLUMN]).column(PATH_COLUMN)
        return ["" if value is None else str(value) for value in column.to_pylist()]
    with source.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        _check_column(source, reader.fieldnames or [])
        return [(row[PATH_COLUMN] or "").strip() for row in reader]


def _check_column(source: Path, columns: list[str]) -> None:
    if PATH_COLUMN not in columns:
        raise ValueError(
            f"{source}: a list of files needs a {PATH_COLUMN!r} column (one file or folder per "
            f"row); its columns are {', '.join(map(repr, columns)) or 'none'}"
        )
