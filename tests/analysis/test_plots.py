"""Training curves, the history reader and confusion-matrix figures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from covidcxr.analysis.plots import (
    best_epoch,
    plot_confusion_matrices,
    plot_confusion_matrix,
    plot_training_curves,
    read_history_csv,
)
from covidcxr.data.classes import class_names


def assert_png(path: Path, min_width: int = 400, max_side: int = 3000) -> np.ndarray:
    """The file decodes as a PNG of a sensible size with more than one colour."""
    assert path.is_file()
    with Image.open(path) as image:
        assert image.format == "PNG"
        pixels = np.asarray(image.convert("RGB"))
    height, width = pixels.shape[:2]
    assert min_width <= width <= max_side, width
    assert 200 <= height <= max_side, height
    assert pixels.std() > 10  # not a blank canvas
    return pixels


HISTORY = [
    {"epoch": 1, "train_loss": 1.0, "val_loss": 0.9, "train_accuracy": 0.5, "val_accuracy": 0.55},
    {"epoch": 2, "train_loss": 0.7, "val_loss": 0.6, "train_accuracy": 0.7, "val_accuracy": 0.72},
    {"epoch": 3, "train_loss": 0.5, "val_loss": float("nan"), "train_accuracy": 0.8},
    {"epoch": 4, "train_loss": 0.4, "val_loss": 0.65, "train_accuracy": 0.85, "val_accuracy": 0.7},
]


def test_best_epoch_is_lowest_finite_val_loss():
    assert best_epoch(HISTORY) == 2
    assert best_epoch(HISTORY, monitor="train_loss") == 4
    assert best_epoch([{"epoch": 1, "train_loss": 1.0}]) is None
    # Without "epoch" keys the position counts, from 1.
    assert best_epoch([{"val_loss": 0.5}, {"val_loss": 0.4}, {"val_loss": 0.6}]) == 2


def test_training_curves_png_with_gaps(tmp_path):
    path = plot_training_curves(HISTORY, tmp_path / "figures" / "curves.png")
    assert path == tmp_path / "figures" / "curves.png"
    pixels = assert_png(path, min_width=800)
    assert pixels.shape[1] > pixels.shape[0]  # two panels side by side


def test_training_curves_without_validation_or_epoch_keys(tmp_path):
    history = [{"train_loss": 1.0 / (index + 1)} for index in range(3)]
    assert_png(plot_training_curves(history, tmp_path / "train_only.png"))


def test_training_curves_reject_empty_history(tmp_path):
    with pytest.raises(ValueError, match="history is empty"):
        plot_training_curves([], tmp_path / "empty.png")


def test_read_history_csv_merges_lightning_rows_per_epoch(tmp_path):
    # As CSVLogger writes it: train and validation metrics of one epoch on separate rows,
    # empty cells for what a row did not log, a step-level row, and an unfinished epoch.
    # Lightning counts epochs from 0; the history from 1, like the engine and the paper.
    path = tmp_path / "metrics.csv"
    path.write_text(
        "epoch,step,train_loss,train_accuracy,val_loss,val_accuracy,train_loss_step\n"
        "0,9,,,,,1.3\n"
        "0,10,,,0.90,0.55,\n"
        "0,10,1.10,0.50,,,\n"
        "1,21,,,0.60,0.72,\n"
        "1,21,0.70,0.70,,,\n"
        "2,31,,,,,0.5\n",
        encoding="utf-8",
    )
    history = read_history_csv(path)
    assert history == [
        {
            "epoch": 1,
            "val_loss": 0.9,
            "val_accuracy": 0.55,
            "train_loss": 1.1,
            "train_accuracy": 0.5,
        },
        {
            "epoch": 2,
            "val_loss": 0.6,
            "val_accuracy": 0.72,
            "train_loss": 0.7,
            "train_accuracy": 0.7,
        },
    ]
    assert all(isinstance(entry["epoch"], int) for entry in history)
    assert_png(plot_training_curves(history, tmp_path / "curves.png"))


def test_read_history_csv_maps_epoch_suffix_and_sorts(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text(
        "epoch,step,train_loss_epoch,train_loss_step,val_loss\n"
        "1,20,0.5,,\n"
        "0,10,0.8,,\n"
        "0,10,,,0.9\n",
        encoding="utf-8",
    )
    assert read_history_csv(path) == [
        {"epoch": 1, "train_loss": 0.8, "val_loss": 0.9},
        {"epoch": 2, "train_loss": 0.5},
    ]


def test_read_history_csv_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"missing\.csv"):
        read_history_csv(tmp_path / "missing.csv")
    no_epoch = tmp_path / "no_epoch.csv"
    no_epoch.write_text("step,val_loss\n1,0.5\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"no_epoch.csv: expected an 'epoch' column"):
        read_history_csv(no_epoch)
    garbage = tmp_path / "garbage.csv"
    garbage.write_text("epoch,val_loss\n0,lots\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"garbage.csv, line 2: column 'val_loss'.*'lots'"):
        read_history_csv(garbage)


@pytest.mark.parametrize("num_classes", [3, 4])
def test_confusion_matrix_png(tmp_path, num_classes):
    rng = np.random.default_rng(num_classes)
    matrix = (
        rng.integers(0, 50, size=(num_classes, num_classes)) + np.eye(num_classes, dtype=int) * 200
    )
    matrix[-1] = 0  # a class without test samples
    path = plot_confusion_matrix(
        matrix, class_names(num_classes), tmp_path / f"cm{num_classes}.png", title="Test"
    )
    pixels = assert_png(path, min_width=700)
    assert pixels.shape[1] > pixels.shape[0]


@pytest.mark.parametrize("num_classes", [3, 4])
def test_confusion_matrices_side_by_side_png(tmp_path, num_classes):
    names = class_names(num_classes)
    runs = {f"run-{index}": np.eye(num_classes, dtype=int) * (10 + index) + 1 for index in range(4)}
    path = plot_confusion_matrices(runs, names, tmp_path / "all.png")
    assert_png(path, min_width=700)


def test_confusion_matrix_shape_errors(tmp_path):
    names = class_names(3)
    with pytest.raises(ValueError, match=r"\(3, 3\).*got shape \(2, 2\)"):
        plot_confusion_matrix([[1, 2], [3, 4]], names, tmp_path / "bad.png")
    with pytest.raises(ValueError, match=r"run 'b'.*got shape \(4, 4\)"):
        plot_confusion_matrices({"a": np.eye(3), "b": np.eye(4)}, names, tmp_path / "bad.png")
    with pytest.raises(ValueError, match="empty"):
        plot_confusion_matrices({}, names, tmp_path / "bad.png")
    with pytest.raises(ValueError, match="non-negative"):
        plot_confusion_matrix(-np.eye(3), names, tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()
