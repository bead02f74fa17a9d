"""Compare finished runs side by side, like the paper's table of its three models.

Each run folder holds the ``metrics.json`` the engine writes::

    {"model": str, "epochs_run": int, "best_epoch": int | null,
     "train_accuracy": float | null, "val_accuracy": float | null,   # fractions in [0, 1]
     "test": <classification_metrics dict> | null, "class_names": [str, ...]}

``model``, ``class_names`` and ``test`` are required. The training fields may be missing, as
in the ``metrics.json`` of ``covidcxr evaluate``, which scores a saved model without training
it; they then read as ``n/a``. Other keys (``val``, ``split_sizes``, ...) are ignored.

:func:`compare_runs` reads them into a :class:`ComparisonTable`; :func:`format_table` prints it
(percentages with 2 decimals, as in "test 91.55 %"), :func:`write_table` saves it as CSV and
:func:`plot_test_confusion_matrices` draws every run's test confusion matrix in one figure.
"""

from __future__ import annotations

import csv
import json
import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from numbers import Real
from pathlib import Path
from typing import Any

from covidcxr.analysis.plots import plot_confusion_matrices

METRICS_FILE = "metrics.json"

_MISSING = "n/a"
_FRACTION = "a fraction in [0, 1] or null"
_COUNT = "a non-negative integer or null"


@dataclass(frozen=True)
class RunSummary:
    """One run's row of the comparison. ``lungs`` is what the classifier saw (none, crop,
    mask; see ``covidcxr train --lungs``). Accuracies, recalls and macro-F1 are fractions in
    [0, 1]; ``None`` where the run did not record the value or it is undefined. The test
    fields (accuracy, recall per class, macro-F1, the (C, C) confusion matrix with rows = true
    class) are all ``None`` for a run without a test split."""

    run: str
    model: str
    lungs: str
    epochs_run: int | None
    best_epoch: int | None
    train_accuracy: float | None
    val_accuracy: float | None
    test_accuracy: float | None
    recall: dict[str, float | None]
    macro_f1: float | None
    confusion_matrix: tuple[tuple[int, ...], ...] | None
    path: Path


@dataclass(frozen=True)
class ComparisonTable:
    """Runs that share ``class_names``, one :class:`RunSummary` each, in the order given."""

    class_names: tuple[str, ...]
    rows: tuple[RunSummary, ...]


def read_run_summary(run_dir: Path, name: str | None = None) -> RunSummary:
    """Read ``run_dir/metrics.json`` into a :class:`RunSummary` named ``name`` (default: the
    folder's name). Raises ``FileNotFoundError`` when the folder or file is missing and
    ``ValueError`` naming the file when its content does not follow the layout."""
    run_dir = Path(run_dir)
    file = run_dir / METRICS_FILE
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run folder {run_dir} does not exist")
    if not file.is_file():
        raise FileNotFoundError(
            f"run folder {run_dir} has no {METRICS_FILE} (looked for {file}); train or evaluate "
            "the run first, or leave the folder out of the comparison"
        )
    try:
        content = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{file} (run folder {run_dir}) is not valid JSON: {error}") from None
    reader = _Fields(file, content)
    class_names = reader.get("class_names", _is_names, "a list of at least 2 class names")
    test = reader.get(
        "test",
        lambda value: value is None or isinstance(value, dict),
        "an object of test metrics, or null when the run had no test split",
    )
    return RunSummary(
        run=run_dir.name if name is None else name,
        model=reader.get("model", lambda value: isinstance(value, str), "a string"),
        lungs=content.get("lungs") or "none",
        epochs_run=reader.get("epochs_run", _is_count_or_none, _COUNT, required=False),
        best_epoch=reader.get("best_epoch", _is_count_or_none, _COUNT, required=False),
        train_accuracy=reader.get(
            "train_accuracy", _is_fraction_or_none, _FRACTION, required=False
        ),
        val_accuracy=reader.get("val_accuracy", _is_fraction_or_none, _FRACTION, required=False),
        path=run_dir,
        **_read_test(file, test, class_names),
    )


def _read_test(file: Path, test: dict | None, class_names: list[str]) -> dict[str, Any]:
    """The RunSummary fields taken from metrics.json's ``test`` object (all None without it)."""
    if test is None:
        return {
            "test_accuracy": None,
            "recall": dict.fromkeys(class_names),
            "macro_f1": None,
            "confusion_matrix": None,
        }
    reader = _Fields(file, test, prefix="test.")
    per_class = reader.get(
        "per_class",
        lambda value: isinstance(value, dict) and set(class_names) <= set(value),
        f"an object with an entry for each of {class_names}",
    )
    size = len(class_names)
    matrix = reader.get(
        "confusion_matrix",
        lambda value: _is_matrix(value, size),
        f"a {size}x{size} list of lists of non-negative integer counts",
    )
    return {
        "test_accuracy": reader.get(
            "accuracy", _is_fraction, "a fraction in [0, 1] (not a percentage)"
        ),
        "recall": {
            class_name: _Fields(file, per_class[class_name], f"test.per_class.{class_name}.").get(
                "recall", _is_fraction_or_none, _FRACTION
            )
            for class_name in class_names
        },
        "macro_f1": reader.get("macro_f1", _is_fraction_or_none, _FRACTION),
        "confusion_matrix": tuple(tuple(row) for row in matrix),
    }


def compare_runs(run_dirs: Sequence[Path]) -> ComparisonTable:
    """Read every run folder's ``metrics.json`` into one table, in the order given.

    Rows are named by folder; when two folders share a name, by ``parent/name``. All runs must
    have the same ``class_names`` (a 3-class and a 4-class run do not share columns)."""
    run_dirs = [Path(run_dir) for run_dir in run_dirs]
    if not run_dirs:
        raise ValueError("no run folders given: expected at least one folder with metrics.json")
    duplicated = {name for name, n in Counter(d.name for d in run_dirs).items() if n > 1}
    rows = [
        read_run_summary(d, name=f"{d.parent.name}/{d.name}" if d.name in duplicated else None)
        for d in run_dirs
    ]
    class_names = tuple(rows[0].recall)
    for row in rows[1:]:
        if tuple(row.recall) != class_names:
            raise ValueError(
                f"runs have different class_names: {rows[0].path} has {list(class_names)}, "
                f"{row.path} has {list(row.recall)}; compare runs of one class setting at a time"
            )
    return ComparisonTable(class_names=class_names, rows=tuple(rows))


def format_table(table: ComparisonTable) -> str:
    """The table as aligned text: names left-aligned, numbers right-aligned, accuracies,
    recalls and macro-F1 in percent with 2 decimals, ``n/a`` where a value is missing."""
    header = [text for text, _, _ in _columns(table)]
    body = [_row_cells(table, row) for row in table.rows]
    numeric = [is_number for _, _, is_number in _columns(table)]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]

    def join(cells: list[str]) -> str:
        return "  ".join(
            cell.rjust(width) if right else cell.ljust(width)
            for cell, width, right in zip(cells, widths, numeric, strict=True)
        ).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([join(header), rule, *(join(cells) for cells in body)]) + "\n"


def write_table(table: ComparisonTable, path_csv: Path) -> Path:
    """Write the table as CSV, one row per run; percentages with 2 decimals in the ``*_pct``
    columns, empty cells where a value is missing."""
    path_csv = Path(path_csv)
    path_csv.parent.mkdir(parents=True, exist_ok=True)
    with path_csv.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow([key for _, key, _ in _columns(table)])
        for row in table.rows:
            writer.writerow(["" if text == _MISSING else text for text in _row_cells(table, row)])
    return path_csv


def plot_test_confusion_matrices(table: ComparisonTable, path: Path) -> Path:
    """Every run's row-normalised test confusion matrix, one panel per run, in one PNG (runs
    without a test split are left out)."""
    matrices = {
        row.run: row.confusion_matrix for row in table.rows if row.confusion_matrix is not None
    }
    if not matrices:
        raise ValueError(
            "no run in the table has a test confusion matrix (every metrics.json has test: null)"
        )
    return plot_confusion_matrices(matrices, table.class_names, path)


def _columns(table: ComparisonTable) -> list[tuple[str, str, bool]]:
    """(text header, CSV header, right-aligned) per column."""
    return [
        ("run", "run", False),
        ("model", "model", False),
        ("lungs", "lungs", False),
        ("epochs", "epochs_run", True),
        ("best epoch", "best_epoch", True),
        ("train acc %", "train_accuracy_pct", True),
        ("val acc %", "val_accuracy_pct", True),
        ("test acc %", "test_accuracy_pct", True),
        *((f"recall {n} %", f"recall_{n}_pct", True) for n in table.class_names),
        ("macro-F1 %", "macro_f1_pct", True),
    ]


def _row_cells(table: ComparisonTable, row: RunSummary) -> list[str]:
    """Formatted text per column, in the order of :func:`_columns`."""
    return [
        row.run,
        row.model,
        row.lungs,
        _integer(row.epochs_run),
        _integer(row.best_epoch),
        _percent(row.train_accuracy),
        _percent(row.val_accuracy),
        _percent(row.test_accuracy),
        *(_percent(row.recall[name]) for name in table.class_names),
        _percent(row.macro_f1),
    ]


def _integer(value: int | None) -> str:
    return _MISSING if value is None else str(value)


def _percent(fraction: float | None) -> str:
    return _MISSING if fraction is None else f"{100 * fraction:.2f}"


class _Fields:
    """Reads required keys of one JSON object, naming the file and key in every error."""

    def __init__(self, file: Path, content: Any, prefix: str = "") -> None:
        self.file, self.prefix = file, prefix
        if not isinstance(content, dict):
            where = prefix.rstrip(".") or "the top level"
            raise ValueError(
                f"{file}: {where} should be a JSON object, got {type(content).__name__}"
            )
        self.content = content

    def get(
        self, key: str, is_valid: Callable[[Any], bool], expected: str, required: bool = True
    ) -> Any:
        """The value at ``key``; a missing optional key reads as None."""
        name = f"{self.prefix}{key}"
        if key not in self.content and not required:
            return None
        if key not in self.content:
            raise ValueError(
                f"{self.file} (run folder {self.file.parent}) has no {name!r} entry; expected "
                f"{expected}"
            )
        value = self.content[key]
        if not is_valid(value):
            raise ValueError(
                f"{self.file} (run folder {self.file.parent}): {name!r} should be {expected}, "
                f"got {value!r}"
            )
        return value


def _is_number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)


def _is_fraction(value: Any) -> bool:
    return _is_number(value) and 0 <= value <= 1


def _is_fraction_or_none(value: Any) -> bool:
    return value is None or _is_fraction(value)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_count_or_none(value: Any) -> bool:
    return value is None or _is_count(value)


def _is_names(value: Any) -> bool:
    return (
        isinstance(value, list)
        and len(value) >= 2
        and all(isinstance(name, str) for name in value)
        and len(set(value)) == len(value)
    )


def _is_matrix(value: Any, size: int) -> bool:
    return (
        isinstance(value, list)
        and len(value) == size
        and all(
            isinstance(row, list) and len(row) == size and all(_is_count(n) for n in row)
            for row in value
        )
    )
