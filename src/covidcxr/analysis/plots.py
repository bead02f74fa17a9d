"""Figures of a training run and its evaluation: accuracy and loss curves, confusion matrices.

Drawn like :mod:`covidcxr.data.figures`: matplotlib's object API on the Agg canvas, no pyplot.

Epochs are numbered from 1, as in the paper ("stopped after 25 epochs") and in the engine's
``history.csv`` and ``metrics.json``; :func:`read_history_csv` converts Lightning's 0-based
``epoch`` column to that convention.
"""

from __future__ import annotations

import csv
import math
import textwrap
from collections.abc import Mapping, Sequence
from numbers import Real
from pathlib import Path
from typing import Any

import numpy as np

from covidcxr.analysis.metrics import row_normalised
from covidcxr.data.figures import _figure, _save

TRAIN_COLOUR = "#4c72b0"
VAL_COLOUR = "#dd8452"
BEST_COLOUR = "#55a868"

# Colour-bar tick format for fractions shown as percentages (matplotlib's "{x}" string form).
_PERCENT = "{x:.0%}"


def _curve_panels(score: str) -> tuple:
    """(panel title, y label, scale, [(history key, legend label, colour)]) per panel."""
    return (
        (
            score.capitalize(),
            f"{score} (%)",
            100.0,
            ((f"train_{score}", "train", TRAIN_COLOUR), (f"val_{score}", "validation", VAL_COLOUR)),
        ),
        (
            "Loss",
            "loss",
            1.0,
            (("train_loss", "train", TRAIN_COLOUR), ("val_loss", "validation", VAL_COLOUR)),
        ),
    )


def best_epoch(history: Sequence[Mapping[str, Any]], monitor: str = "val_loss") -> int | None:
    """The (1-based) epoch with the lowest finite ``monitor`` value (the first on a tie), or
    ``None`` when no epoch has one."""
    index = _best_index(history, monitor)
    return None if index is None else _epoch_number(history[index], index)


def plot_training_curves(
    history: Sequence[Mapping[str, Any]], path: Path, score: str = "accuracy"
) -> Path:
    """Two panels, ``score`` (accuracy; Dice for segmentation) and loss, each with train and
    validation curves against the epoch.

    ``history`` has one dict per epoch with keys ``epoch`` (1-based; the position in the list
    plus 1 when absent), ``train_loss``, ``val_loss``, ``train_<score>`` and ``val_<score>``
    (fractions in [0, 1]). Missing keys, ``None`` and NaN leave a gap: that epoch
    is simply not drawn for that curve. A vertical line marks the best epoch (lowest
    ``val_loss``).
    """
    if len(history) == 0:
        raise ValueError("history is empty: expected one dict per epoch, got none")
    epochs = [_epoch_number(entry, index) for index, entry in enumerate(history)]
    best_index = _best_index(history, "val_loss")

    figure = _figure(11, 4)
    for column, (title, y_label, scale, curves) in enumerate(_curve_panels(score)):
        axes = figure.add_subplot(1, 2, column + 1)
        for key, label, colour in curves:
            points = [
                (epoch, value * scale)
                for epoch, entry in zip(epochs, history, strict=True)
                if (value := _finite(entry.get(key))) is not None
            ]
            if points:
                xs, ys = zip(*points, strict=True)
                axes.plot(xs, ys, color=colour, marker="o", markersize=3, label=label)
        if best_index is not None:
            best_loss = _finite(history[best_index].get("val_loss"))
            axes.axvline(
                epochs[best_index],
                color=BEST_COLOUR,
                linestyle="--",
                label=f"best epoch {epochs[best_index]} (val loss {best_loss:.4f})",
            )
        axes.set_title(title)
        axes.set_xlabel("epoch")
        axes.set_ylabel(y_label)
        axes.xaxis.get_major_locator().set_params(integer=True)
        axes.grid(alpha=0.3)
        if axes.get_legend_handles_labels()[0]:
            axes.legend()
    return _save(figure, Path(path))


def read_history_csv(path: Path) -> list[dict[str, float | int]]:
    """Read Lightning's ``CSVLogger`` ``metrics.csv`` into one dict per epoch, sorted by epoch.

    The logger writes one row per logging call, with empty cells for metrics not logged in that
    call (train and validation metrics of one epoch land on separate rows). Rows are merged by
    their ``epoch`` value (a later non-empty cell wins). The ``step`` column and metrics logged
    per step (names ending in ``_step``) are dropped; ``<name>_epoch`` (what Lightning writes for
    ``on_step=True, on_epoch=True``) becomes ``<name>``. ``epoch`` becomes a 1-based int (the
    logger's 0-based value + 1, matching the engine's history), all else floats.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no such history file; expected the metrics.csv that Lightning's "
            "CSVLogger writes in the run's log folder"
        )
    merged: dict[int, dict[str, float | int]] = {}
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or "epoch" not in reader.fieldnames:
            raise ValueError(
                f"{path}: expected an 'epoch' column as in Lightning's CSVLogger metrics.csv, "
                f"got columns {reader.fieldnames}"
            )
        for line_number, row in enumerate(reader, start=2):
            epoch_cell = (row.pop("epoch") or "").strip()
            values = {
                _epoch_level_name(name): _parse_number(cell, path, line_number, name)
                for name, cell in row.items()
                if name not in (None, "step")
                and not name.endswith("_step")
                and cell is not None
                and cell.strip()
            }
            if not epoch_cell or not values:
                continue
            epoch = int(_parse_number(epoch_cell, path, line_number, "epoch")) + 1
            merged.setdefault(epoch, {"epoch": epoch}).update(values)
    return [merged[epoch] for epoch in sorted(merged)]


def plot_confusion_matrix(
    matrix: np.ndarray | Sequence[Sequence[int]],
    class_names: Sequence[str],
    path: Path,
    title: str = "Confusion matrix",
) -> Path:
    """Two panels of a (C, C) confusion matrix (rows = true class, columns = predicted): the
    counts, and the row-normalised fractions whose diagonal is each class's recall."""
    counts = _check_matrix(matrix, class_names)
    fractions = row_normalised(counts)
    size = _panel_size(len(class_names))
    figure = _figure(2 * size + 1.5, size + 0.6)
    figure.suptitle(title)
    count_axes = figure.add_subplot(1, 2, 1)
    image = _draw_matrix(
        count_axes,
        counts,
        [[f"{int(value):,}" for value in row] for row in counts],
        class_names,
        vmax=max(1.0, float(counts.max())),
        title="Counts",
    )
    figure.colorbar(image, ax=count_axes, shrink=0.8)
    fraction_axes = figure.add_subplot(1, 2, 2)
    image = _draw_matrix(
        fraction_axes,
        fractions,
        _percent_labels(fractions),
        class_names,
        vmax=1.0,
        title="Row-normalised (recall per true class)",
    )
    figure.colorbar(image, ax=fraction_axes, shrink=0.8, format=_PERCENT)
    return _save(figure, Path(path))


def plot_confusion_matrices(
    side_by_side: Mapping[str, np.ndarray | Sequence[Sequence[int]]],
    class_names: Sequence[str],
    path: Path,
    title: str = "Test confusion matrices (row-normalised: recall per true class)",
    columns: int = 3,
) -> Path:
    """One row-normalised (C, C) confusion-matrix panel per run, titled with the run's name, on
    one colour scale (0-100 %); ``columns`` panels per row."""
    if not side_by_side:
        raise ValueError("side_by_side is empty: expected at least one run name -> matrix")
    fractions = {
        name: row_normalised(_check_matrix(matrix, class_names, label=f"run {name!r}"))
        for name, matrix in side_by_side.items()
    }
    columns = max(1, min(columns, len(fractions)))
    rows = math.ceil(len(fractions) / columns)
    size = _panel_size(len(class_names))
    figure = _figure(columns * size + 1.0, rows * (size + 0.3) + 0.4)
    figure.suptitle(title)
    all_axes, image = [], None
    for index, (name, values) in enumerate(fractions.items()):
        axes = figure.add_subplot(rows, columns, index + 1)
        image = _draw_matrix(
            axes, values, _percent_labels(values), class_names, vmax=1.0, title=name
        )
        all_axes.append(axes)
    figure.colorbar(image, ax=all_axes, shrink=0.8, format=_PERCENT)
    return _save(figure, Path(path))


def _draw_matrix(axes, values, labels, class_names, vmax: float, title: str):
    """Heat map of a (C, C) matrix with a text label per cell; NaN cells are left blank."""
    import matplotlib as mpl

    colour_map = mpl.colormaps["Blues"].with_extremes(bad="#eeeeee")
    image = axes.imshow(
        np.ma.masked_invalid(np.asarray(values, dtype=float)),
        cmap=colour_map,
        vmin=0.0,
        vmax=vmax,
    )
    for row, row_labels in enumerate(labels):
        for column, text in enumerate(row_labels):
            value = values[row][column]
            dark = np.isfinite(value) and value > 0.55 * vmax
            axes.text(
                column,
                row,
                text,
                ha="center",
                va="center",
                fontsize=9,
                color="white" if dark else "black",
            )
    ticks = np.arange(len(class_names))
    readable = [textwrap.fill(name, 12) for name in class_names]
    axes.set_xticks(ticks, readable, rotation=30, ha="right", rotation_mode="anchor")
    axes.set_yticks(ticks, readable)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title)
    return image


def _percent_labels(fractions: np.ndarray) -> list[list[str]]:
    return [
        ["–" if np.isnan(value) else f"{100 * value:.1f}%" for value in row] for row in fractions
    ]


def _panel_size(num_classes: int) -> float:
    return max(3.5, 0.9 * num_classes + 1.8)


def _check_matrix(
    matrix: np.ndarray | Sequence[Sequence[int]],
    class_names: Sequence[str],
    label: str = "matrix",
) -> np.ndarray:
    counts = np.asarray(matrix, dtype=float)
    expected = (len(class_names), len(class_names))
    if counts.shape != expected:
        raise ValueError(
            f"{label} should be a (C, C) = {expected} confusion matrix for class_names "
            f"{list(class_names)}, got shape {counts.shape}"
        )
    if not np.isfinite(counts).all() or (counts < 0).any():
        raise ValueError(f"{label} should hold non-negative counts, got {counts.tolist()}")
    return counts


def _finite(value: Any) -> float | None:
    """``value`` as a float when it is a finite number (0-d tensors included), else None."""
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:
        value = value.item()
    if isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _epoch_number(entry: Mapping[str, Any], index: int) -> int:
    """The entry's 1-based epoch; its position in the history + 1 when it has none."""
    epoch = _finite(entry.get("epoch"))
    return index + 1 if epoch is None else int(epoch)


def _best_index(history: Sequence[Mapping[str, Any]], monitor: str) -> int | None:
    best_index, best_value = None, math.inf
    for index, entry in enumerate(history):
        value = _finite(entry.get(monitor))
        if value is not None and value < best_value:
            best_index, best_value = index, value
    return best_index


def _epoch_level_name(name: str) -> str:
    return name.removesuffix("_epoch")


def _parse_number(cell: str, path: Path, line_number: int, column: str) -> float:
    try:
        return float(cell)
    except ValueError:
        raise ValueError(
            f"{path}, line {line_number}: column {column!r} should hold a number, got {cell!r}"
        ) from None
