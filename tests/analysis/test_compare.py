"""compare_runs on fake run folders: the table, its text and CSV forms, the figure, errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from covidcxr.analysis.compare import (
    compare_runs,
    format_table,
    plot_test_confusion_matrices,
    write_table,
)
from covidcxr.analysis.metrics import classification_metrics

NAMES = ["Normal", "COVID", "Viral Pneumonia"]


def fake_metrics(
    model: str,
    test_accuracy: float,
    recalls: list[float | None],
    macro_f1: float,
    matrix: list[list[int]],
    **overrides,
) -> dict:
    """A metrics.json as the engine writes it, with only the fields compare_runs reads filled
    with meaningful values."""
    per_class = {
        name: {
            "precision": 0.9,
            "recall": recall,
            "specificity": 0.9,
            "f1": 0.9,
            "auroc": 0.95,
            "support": sum(row),
        }
        for name, recall, row in zip(NAMES, recalls, matrix, strict=True)
    }
    return {
        "model": model,
        "epochs_run": 25,
        "best_epoch": 22,
        "train_accuracy": 0.9451,
        "val_accuracy": 0.9169,
        "test": {
            "accuracy": test_accuracy,
            "macro_f1": macro_f1,
            "macro_auroc": 0.97,
            "num_samples": int(np.sum(matrix)),
            "per_class": per_class,
            "confusion_matrix": matrix,
        },
        "class_names": NAMES,
        **overrides,
    }


def write_run(root: Path, name: str, content: dict | str) -> Path:
    run_dir = root / name
    run_dir.mkdir(parents=True)
    text = content if isinstance(content, str) else json.dumps(content, indent=2)
    (run_dir / "metrics.json").write_text(text, encoding="utf-8")
    return run_dir


@pytest.fixture
def two_runs(tmp_path) -> list[Path]:
    cnn = write_run(
        tmp_path,
        "cnn",
        fake_metrics(
            "paper_cnn",
            0.9155,
            [0.95, 0.88, 0.8123],
            0.88456,
            [[95, 5, 0], [10, 88, 2], [8, 10, 82]],
        ),
    )
    vgg = write_run(
        tmp_path,
        "vgg16",
        fake_metrics(
            "vgg16",
            0.94,
            [0.97, 0.91, None],
            0.9,
            [[97, 3, 0], [9, 91, 0], [0, 0, 0]],
            train_accuracy=None,
            best_epoch=None,
            epochs_run=10,
        ),
    )
    return [cnn, vgg]


def test_rows_hold_the_run_values(two_runs):
    table = compare_runs(two_runs)
    assert table.class_names == tuple(NAMES)
    assert [row.run for row in table.rows] == ["cnn", "vgg16"]
    cnn, vgg = table.rows
    assert (cnn.model, cnn.epochs_run, cnn.best_epoch) == ("paper_cnn", 25, 22)
    assert (cnn.train_accuracy, cnn.val_accuracy, cnn.test_accuracy) == (0.9451, 0.9169, 0.9155)
    assert cnn.recall == {"Normal": 0.95, "COVID": 0.88, "Viral Pneumonia": 0.8123}
    assert cnn.macro_f1 == 0.88456
    assert cnn.confusion_matrix == ((95, 5, 0), (10, 88, 2), (8, 10, 82))
    assert (vgg.model, vgg.epochs_run, vgg.best_epoch, vgg.train_accuracy) == (
        "vgg16",
        10,
        None,
        None,
    )
    assert vgg.recall["Viral Pneumonia"] is None


def test_format_table_shows_percentages_with_two_decimals(two_runs):
    text = format_table(compare_runs(two_runs))
    lines = text.splitlines()
    assert len(lines) == 4  # header, rule, two runs
    header, rule, cnn, vgg = lines
    assert "test acc %" in header and "recall Viral Pneumonia %" in header
    assert set(rule) == {"-", " "}
    for number in ["94.51", "91.69", "91.55", "95.00", "88.00", "81.23", "88.46"]:
        assert number in cnn.split(), number
    assert cnn.split()[:5] == ["cnn", "paper_cnn", "none", "25", "22"]
    assert vgg.split()[:6] == ["vgg16", "vgg16", "none", "10", "n/a", "n/a"]
    assert "94.00" in vgg and "90.00" in vgg
    # Columns line up: every line puts the test accuracy's last digit at the same place.
    end = header.index("test acc %") + len("test acc %")
    assert cnn[end - 5 : end] == "91.55" and vgg[end - 5 : end] == "94.00"


def test_write_table_csv(two_runs, tmp_path):
    path = write_table(compare_runs(two_runs), tmp_path / "out" / "comparison.csv")
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["run"] for row in rows] == ["cnn", "vgg16"]
    assert rows[0]["test_accuracy_pct"] == "91.55"
    assert rows[0]["recall_Viral Pneumonia_pct"] == "81.23"
    assert rows[0]["macro_f1_pct"] == "88.46"
    assert rows[1]["train_accuracy_pct"] == ""
    assert rows[1]["best_epoch"] == ""
    assert rows[1]["epochs_run"] == "10"


def test_plot_test_confusion_matrices(two_runs, tmp_path):
    path = plot_test_confusion_matrices(compare_runs(two_runs), tmp_path / "cms.png")
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.width >= 600
        assert np.asarray(image.convert("L")).std() > 10


def test_metrics_from_classification_metrics_are_accepted(tmp_path):
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    probabilities = torch.nn.functional.one_hot(torch.tensor([0, 1, 1, 1, 2, 0]), 3) * 0.8 + 0.1
    test = classification_metrics(probabilities.float(), labels, NAMES)
    run = write_run(
        tmp_path,
        "real-schema",
        {**fake_metrics("m", 0.5, [1, 1, 1], 1, [[1] * 3] * 3), "test": test},
    )
    row = compare_runs([run]).rows[0]
    assert row.test_accuracy == pytest.approx(4 / 6)
    assert row.recall == pytest.approx({"Normal": 0.5, "COVID": 1.0, "Viral Pneumonia": 0.5})
    assert row.confusion_matrix == ((1, 1, 0), (0, 2, 0), (1, 0, 1))


def test_duplicate_folder_names_get_their_parent(tmp_path):
    content = fake_metrics("m", 0.9, [0.9] * 3, 0.9, [[1, 0, 0], [0, 1, 0], [0, 0, 1]])
    first = write_run(tmp_path / "a", "cnn", content)
    second = write_run(tmp_path / "b", "cnn", content)
    assert [row.run for row in compare_runs([first, second]).rows] == ["a/cnn", "b/cnn"]


def test_folder_without_metrics_json_is_named(tmp_path, two_runs):
    empty = tmp_path / "unfinished"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=r"unfinished has no metrics.json"):
        compare_runs([*two_runs, empty])
    with pytest.raises(FileNotFoundError, match=r"run folder .*nowhere does not exist"):
        compare_runs([tmp_path / "nowhere"])
    with pytest.raises(ValueError, match="no run folders"):
        compare_runs([])


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", r"broken[/\\]metrics.json.*not valid JSON"),
        ("[1, 2]", r"top level should be a JSON object, got list"),
        ({"model": "m"}, r"has no 'class_names' entry"),
        ({"test_accuracy": 0.9}, r"has no 'class_names' entry"),
    ],
)
def test_malformed_metrics_json_names_the_file(tmp_path, content, message):
    run = write_run(tmp_path, "broken", content)
    with pytest.raises(ValueError, match=message):
        compare_runs([run])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: m.pop("model"), r"no 'model' entry; expected a string"),
        (lambda m: m.update(epochs_run=2.5), r"'epochs_run' should be a non-negative integer"),
        (
            lambda m: m["test"].update(accuracy=91.55),
            r"'test.accuracy' should be a fraction.*91.55",
        ),
        (lambda m: m["test"]["per_class"].pop("COVID"), r"'test.per_class' should be an object"),
        (
            lambda m: m["test"]["per_class"]["COVID"].pop("recall"),
            r"no 'test.per_class.COVID.recall' entry",
        ),
        (lambda m: m["test"].update(confusion_matrix=[[1, 2], [3, 4]]), r"3x3 list of lists"),
        (lambda m: m.update(class_names="Normal"), r"'class_names' should be a list"),
    ],
)
def test_invalid_fields_name_file_and_key(tmp_path, change, message):
    content = fake_metrics("m", 0.9, [0.9] * 3, 0.9, [[1, 0, 0], [0, 1, 0], [0, 0, 1]])
    change(content)
    run = write_run(tmp_path, "bad", content)
    with pytest.raises(ValueError, match=message) as raised:
        compare_runs([run])
    assert str(run / "metrics.json") in str(raised.value)


def test_runs_with_different_classes_are_refused(tmp_path, two_runs):
    four = ["Normal", "COVID", "Viral Pneumonia", "Lung Opacity"]
    content = fake_metrics("m", 0.9, [0.9] * 3, 0.9, [[1, 0, 0], [0, 1, 0], [0, 0, 1]])
    content["class_names"] = four
    content["test"]["per_class"]["Lung Opacity"] = dict(content["test"]["per_class"]["Normal"])
    content["test"]["confusion_matrix"] = np.eye(4, dtype=int).tolist()
    run = write_run(tmp_path, "four", content)
    with pytest.raises(ValueError, match=r"different class_names.*four has"):
        compare_runs([*two_runs, run])


def test_run_without_test_split_shows_n_a_and_is_left_out_of_the_figure(tmp_path, two_runs):
    content = fake_metrics("m", 0.9, [0.9] * 3, 0.9, [[1, 0, 0], [0, 1, 0], [0, 0, 1]])
    content["test"] = None
    no_test = write_run(tmp_path, "no-test", content)
    table = compare_runs([*two_runs, no_test])
    row = table.rows[2]
    assert (row.test_accuracy, row.macro_f1, row.confusion_matrix) == (None, None, None)
    assert row.recall == dict.fromkeys(NAMES)
    line = format_table(table).splitlines()[-1]
    assert line.split()[:7] == ["no-test", "m", "none", "25", "22", "94.51", "91.69"]
    assert line.split()[7:] == ["n/a"] * 5
    assert plot_test_confusion_matrices(table, tmp_path / "cms.png").is_file()
    with pytest.raises(ValueError, match="no run in the table has a test confusion matrix"):
        plot_test_confusion_matrices(compare_runs([no_test]), tmp_path / "none.png")


def test_evaluation_folder_without_training_fields_reads_as_n_a(tmp_path):
    # What `covidcxr evaluate` writes: a saved model scored on a dataset, no training history.
    full = fake_metrics("vgg16", 0.93, [0.9, 0.95, 0.92], 0.92, [[9, 1, 0], [0, 19, 1], [0, 1, 11]])
    content = {key: full[key] for key in ("model", "class_names", "test")}
    run = write_run(tmp_path, "external", {**content, "test_accuracy": 0.93, "unreadable": []})
    row = compare_runs([run]).rows[0]
    assert (row.epochs_run, row.best_epoch, row.train_accuracy, row.val_accuracy) == (None,) * 4
    line = format_table(compare_runs([run])).splitlines()[-1]
    assert line.split() == [
        "external",
        "vgg16",
        "none",
        *["n/a"] * 4,
        "93.00",
        "90.00",
        "95.00",
        "92.00",
        "92.00",
    ]
