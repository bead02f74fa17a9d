"""The output folder of an archive run: Parquet (and CSV) predictions and failures, written so
that a run killed at any point is resumed without losing or repeating a row.

``OUT/`` holds, once a run has finished:

* ``predictions.parquet`` and ``predictions.csv``: one row per image, the local engine's
  columns (``path, predicted, confidence, p_<class>...`` and, for a model with a feature
  reference, ``ood_score, unfamiliar``), in the order the sources were listed; ``path`` is
  absolute;
* ``failures.parquet`` and ``failures.csv``: ``path, reason`` for every file that could not be
  read in the last run (an empty table when none); failed files are tried again on a resume;
* ``predictions.parquet.model.json``: which model wrote the rows
  (:meth:`covidcxr.inference.artifact.Classifier.identity`), checked on resume.

While a run goes, predictions are kept in ``OUT/.parts/part-NNNNNN.parquet``, each written whole
or not at all (:func:`covidcxr.atomic.replacing`) every :data:`PART_ROWS` rows or
:data:`PART_SECONDS` seconds; the end of the run merges them into the two files above. A resume
counts the rows of both as done, so a kill loses at most the rows not yet in a part.
"""

from __future__ import annotations

import csv
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from covidcxr.inference.predict import TEXT_OPTIONS, prediction_columns

PREDICTIONS = "predictions.parquet"
FAILURES = "failures.parquet"
PARTS = ".parts"
PART_ROWS = 2048
PART_SECONDS = 30.0
_PART_GLOB = "part-*.parquet"


def prediction_schema(class_names: Sequence[str], checked: bool) -> Any:
    """The ``pyarrow.Schema`` of prediction rows (probabilities as float64, as the local
    engine's Python floats)."""
    import pyarrow as pa

    kinds = {"path": pa.string(), "predicted": pa.string(), "unfamiliar": pa.bool_()}
    return pa.schema(
        [(name, kinds.get(name, pa.float64())) for name in prediction_columns(class_names, checked)]
    )


def failure_schema() -> Any:
    import pyarrow as pa

    return pa.schema([("path", pa.string()), ("reason", pa.string())])


class ArchiveOutput:
    """``OUT/`` for one run of one model: refuses an existing output unless ``resume`` (keep and
    extend it) or ``force`` (replace it), collects rows into parts, and merges them at the end.

    Raises ``ValueError`` for a folder that is a file, for ``resume`` with ``force``, and for
    rows written with other columns; ``FileExistsError`` for an output neither resumed nor
    forced."""

    def __init__(
        self,
        folder: str | Path,
        class_names: Sequence[str],
        checked: bool,
        *,
        resume: bool = False,
        force: bool = False,
    ) -> None:
        self.folder = Path(folder).expanduser()
        self.schema = prediction_schema(class_names, checked)
        if self.folder.exists() and not self.folder.is_dir():
            raise ValueError(f"{self.folder}: is a file; --out names a folder for the tables")
        if resume and force:
            raise ValueError(
                "--resume and --force contradict each other: keep the output, or replace it"
            )
        if self._written() and not (resume or force):
            raise FileExistsError(
                f"{self.folder}: already holds predictions; pass --resume to continue them, "
                "--force to replace them, or choose another folder"
            )
        if force:
            self._remove_outputs()
        self.folder.mkdir(parents=True, exist_ok=True)
        self.done: set[str] = set(self._read_paths()) if resume else set()
        self._rows: list[dict[str, Any]] = []
        self._last_flush = time.monotonic()

    @property
    def predictions(self) -> Path:
        return self.folder / PREDICTIONS

    @property
    def failures(self) -> Path:
        return self.folder / FAILURES

    @property
    def parts(self) -> Path:
        return self.folder / PARTS

    def add(self, rows: list[dict[str, Any]]) -> None:
        """Keep prediction rows; they reach disk in the next part."""
        self._rows.extend(rows)
        if len(self._rows) >= PART_ROWS or time.monotonic() - self._last_flush >= PART_SECONDS:
            self.flush()

    def flush(self) -> None:
        """Write the rows kept so far as one part."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        from covidcxr.atomic import replacing

        self._last_flush = time.monotonic()
        if not self._rows:
            return
        table = pa.Table.from_pylist(self._rows, schema=self.schema)
        numbers = [int(part.stem.split("-")[1]) for part in self._part_files()]
        with replacing(self.parts / f"part-{max(numbers, default=-1) + 1:06d}.parquet") as partial:
            pq.write_table(table, partial)
        self._rows = []

    def finish(self, failures: list[tuple[Path, str]], order: dict[str, int]) -> int:
        """Merge every part into ``predictions.parquet`` (rows sorted by ``order``: path ->
        listing position; rows of paths not listed this time keep their place after the
        others), write the CSV copies and the failures; returns the number of rows."""
        import numpy as np
        import pyarrow as pa
        import pyarrow.parquet as pq

        from covidcxr.atomic import replacing
        from covidcxr.io import escape_path

        self.flush()
        tables = [pq.read_table(path, schema=self.schema) for path in self._row_files()]
        table = pa.concat_tables(tables) if tables else self.schema.empty_table()
        last = len(order)
        positions = [order.get(path, last) for path in table.column("path").to_pylist()]
        table = table.take(np.argsort(np.array(positions, dtype=np.int64), kind="stable"))
        with replacing(self.predictions) as partial:
            pq.write_table(table, partial)
        _write_csv(self.folder / "predictions.csv", table)
        failed = sorted(failures, key=lambda item: order.get(str(item[0]), last))
        failed_table = pa.Table.from_pylist(
            [{"path": escape_path(path), "reason": reason} for path, reason in failed],
            schema=failure_schema(),
        )
        with replacing(self.failures) as partial:
            pq.write_table(failed_table, partial)
        _write_csv(self.folder / "failures.csv", failed_table)
        shutil.rmtree(self.parts, ignore_errors=True)
        return table.num_rows

    # ----------------------------------------------------------------------------------------

    def _part_files(self) -> list[Path]:
        return sorted(self.parts.glob(_PART_GLOB)) if self.parts.is_dir() else []

    def _row_files(self) -> list[Path]:
        merged = [self.predictions] if self.predictions.is_file() else []
        return merged + self._part_files()

    def _written(self) -> bool:
        return bool(self._row_files())

    def _read_paths(self) -> list[str]:
        import pyarrow.parquet as pq

        paths: list[str] = []
        expected = self.schema.names
        for file in self._row_files():
            names = pq.read_schema(file).names
            if names != expected:
                raise ValueError(
                    f"{file}: holds rows that are not this model's predictions (columns {names}, "
                    f"expected {expected}); write to a new folder instead of resuming"
                )
            paths.extend(pq.read_table(file, columns=["path"]).column("path").to_pylist())
        return paths

    def _remove_outputs(self) -> None:
        from covidcxr.inference.predict import identity_path

        shutil.rmtree(self.parts, ignore_errors=True)
        for path in (self.predictions, self.failures):
            path.unlink(missing_ok=True)
            path.with_suffix(".csv").unlink(missing_ok=True)
        identity_path(self.predictions).unlink(missing_ok=True)


def _write_csv(path: Path, table: Any) -> None:
    """``table`` as CSV, formatted as the local engine writes it (Python's ``csv``, floats in
    full), replaced whole."""
    from covidcxr.atomic import replacing

    with replacing(path) as partial, partial.open("w", **TEXT_OPTIONS) as handle:
        writer = csv.DictWriter(handle, fieldnames=table.schema.names)
        writer.writeheader()
        for batch in table.to_batches(max_chunksize=PART_ROWS):
            writer.writerows(batch.to_pylist())
