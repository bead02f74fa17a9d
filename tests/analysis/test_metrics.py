"""classification_metrics, ClassificationMeter and confusion_matrix_csv against hand-computed
values."""

from __future__ import annotations

import csv
import json
import warnings

import numpy as np
import pytest
import torch
from torchmetrics.functional.classification import multiclass_auroc

from covidcxr.analysis.metrics import (
    ClassificationMeter,
    classification_metrics,
    confusion_matrix_csv,
    row_normalised,
)

NAMES = ("Normal", "COVID", "Viral Pneumonia")

# 10 samples, 3 classes. Confusion matrix (rows true, columns predicted):
#   Normal           3 1 0
#   COVID            0 2 1
#   Viral Pneumonia  1 0 2
LABELS = [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
PREDICTED = [0, 0, 0, 1, 1, 1, 2, 2, 2, 0]


def _confident(predicted: list[int], num_classes: int = 3) -> torch.Tensor:
    """(N, C) probabilities: 0.6 on the predicted class, the rest shared equally."""
    other = 0.4 / (num_classes - 1)
    probabilities = torch.full((len(predicted), num_classes), other)
    probabilities[torch.arange(len(predicted)), torch.tensor(predicted)] = 0.6
    return probabilities


def assert_metrics_close(actual, expected, path="metrics"):
    """Nested dicts and lists equal, with floats compared to 1e-6."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict) and actual.keys() == expected.keys(), path
        for key in expected:
            assert_metrics_close(actual[key], expected[key], f"{path}[{key!r}]")
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), path
        for index, (a, e) in enumerate(zip(actual, expected, strict=True)):
            assert_metrics_close(a, e, f"{path}[{index}]")
    elif isinstance(expected, float):
        assert actual == pytest.approx(expected, abs=1e-6), path
    else:
        assert actual == expected and type(actual) is type(expected), path


@pytest.fixture
def hand_case() -> dict:
    return classification_metrics(_confident(PREDICTED), torch.tensor(LABELS), NAMES)


def test_accuracy_and_confusion_matrix_match_hand_counts(hand_case):
    assert hand_case["num_samples"] == 10
    assert hand_case["accuracy"] == pytest.approx(0.7)
    assert hand_case["confusion_matrix"] == [[3, 1, 0], [0, 2, 1], [1, 0, 2]]


@pytest.mark.parametrize(
    ("name", "precision", "recall", "specificity", "f1", "support"),
    [
        # Normal: TP 3, FP 1 (a VP image), FN 1, TN 5 of 6 negatives.
        ("Normal", 3 / 4, 3 / 4, 5 / 6, 3 / 4, 4),
        # COVID: TP 2, FP 1, FN 1, TN 6 of 7 negatives.
        ("COVID", 2 / 3, 2 / 3, 6 / 7, 2 / 3, 3),
        ("Viral Pneumonia", 2 / 3, 2 / 3, 6 / 7, 2 / 3, 3),
    ],
)
def test_per_class_values_match_hand_computation(
    hand_case, name, precision, recall, specificity, f1, support
):
    entry = hand_case["per_class"][name]
    assert entry["precision"] == pytest.approx(precision)
    assert entry["recall"] == pytest.approx(recall)
    assert entry["specificity"] == pytest.approx(specificity)
    assert entry["f1"] == pytest.approx(f1)
    assert entry["support"] == support


def test_macro_f1_is_mean_of_class_f1(hand_case):
    assert hand_case["macro_f1"] == pytest.approx((3 / 4 + 2 / 3 + 2 / 3) / 3)


def test_auroc_with_ties_matches_mann_whitney_count(hand_case):
    # Normal's scores: positives 0.6, 0.6, 0.6, 0.2; negatives 0.2 x5 and 0.6 (sample 9).
    # Of 4 x 6 pairs: 15 wins, 3 + 5 ties (count half) -> 19 / 24.
    assert hand_case["per_class"]["Normal"]["auroc"] == pytest.approx(19 / 24)


def test_perfect_ranking_gives_auroc_one():
    labels = torch.tensor(LABELS)
    probabilities = torch.nn.functional.one_hot(labels, 3).float() * 0.7 + 0.1
    result = classification_metrics(probabilities, labels, NAMES)
    assert result["macro_auroc"] == pytest.approx(1.0)
    assert [result["per_class"][n]["auroc"] for n in NAMES] == pytest.approx([1.0] * 3)
    assert result["accuracy"] == 1.0


def test_constant_probabilities_give_auroc_one_half():
    result = classification_metrics(torch.full((10, 3), 1 / 3), torch.tensor(LABELS), NAMES)
    assert [result["per_class"][n]["auroc"] for n in NAMES] == pytest.approx([0.5] * 3)
    assert result["macro_auroc"] == pytest.approx(0.5)


def test_macro_auroc_equals_torchmetrics_when_every_class_is_present():
    generator = torch.Generator().manual_seed(0)
    probabilities = torch.softmax(torch.randn(40, 3, generator=generator), dim=1)
    labels = torch.arange(40) % 3
    result = classification_metrics(probabilities, labels, NAMES)
    expected = multiclass_auroc(probabilities, labels, num_classes=3, average="macro")
    assert result["macro_auroc"] == pytest.approx(float(expected))


def test_result_is_json_ready_without_nan(hand_case):
    text = json.dumps(hand_case, allow_nan=False)
    assert json.loads(text) == hand_case


def test_numpy_inputs_give_the_same_result(hand_case):
    result = classification_metrics(
        _confident(PREDICTED).numpy().astype(np.float64), np.array(LABELS), list(NAMES)
    )
    assert_metrics_close(result, hand_case)


def test_absent_class_is_none_without_warnings():
    # Viral Pneumonia never occurs and is never predicted; COVID occurs but is never predicted.
    labels = torch.tensor([0, 0, 1, 1])
    predicted = [0, 0, 0, 0]
    probabilities = _confident(predicted)
    # Still predicted Normal, but ranked below the Normal images on Normal and above them on
    # COVID, so both defined AUROCs are 1.
    probabilities[2:] = torch.tensor([0.5, 0.3, 0.2])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = classification_metrics(probabilities, labels, NAMES)
    absent = result["per_class"]["Viral Pneumonia"]
    assert absent == {
        "precision": None,
        "recall": None,
        "specificity": pytest.approx(1.0),
        "f1": None,
        "auroc": None,
        "support": 0,
    }
    covid = result["per_class"]["COVID"]
    assert covid["precision"] is None  # never predicted
    assert covid["recall"] == 0.0
    assert covid["f1"] == 0.0
    assert covid["auroc"] == pytest.approx(1.0)
    # Normal: precision 2/4, recall 1 -> F1 2/3; the macro F1 leaves the absent class out.
    assert result["macro_f1"] == pytest.approx((2 / 3 + 0.0) / 2)
    assert result["macro_auroc"] == pytest.approx(1.0)
    json.dumps(result, allow_nan=False)


def test_single_class_present_has_no_auroc_and_no_specificity():
    result = classification_metrics(_confident([0, 1, 0]), torch.tensor([0, 0, 0]), NAMES)
    assert result["macro_auroc"] is None
    assert result["per_class"]["Normal"]["specificity"] is None
    assert result["per_class"]["Normal"]["recall"] == pytest.approx(2 / 3)


@pytest.mark.parametrize(
    ("probabilities", "labels", "message"),
    [
        (torch.rand(0, 3), torch.zeros(0, dtype=torch.long), r"N = 0"),
        (torch.rand(10), torch.zeros(10, dtype=torch.long), r"\(N, C\) = \(N, 3\).*got \(10,\)"),
        (torch.rand(10, 4), torch.zeros(10, dtype=torch.long), r"\(N, 3\).*got \(10, 4\)"),
        (torch.rand(10, 3), torch.zeros(9, dtype=torch.long), r"same number.*got 10.*and 9"),
        (torch.rand(10, 3), torch.zeros(10, 1, dtype=torch.long), r"\(N,\).*got \(10, 1\)"),
        (torch.rand(10, 3), torch.full((10,), 3), r"\[0, 2\].*got values from 3 to 3"),
        (torch.rand(10, 3), torch.full((10,), -1), r"\[0, 2\].*got values from -1"),
        (torch.rand(10, 3), torch.zeros(10), r"integers, got dtype torch.float32"),
        (torch.randn(10, 3) * 5, torch.zeros(10, dtype=torch.long), r"\[0, 1\].*softmax"),
        (torch.full((10, 3), float("nan")), torch.zeros(10, dtype=torch.long), r"NaN"),
    ],
)
def test_invalid_inputs_say_expected_and_got(probabilities, labels, message):
    with pytest.raises(ValueError, match=message):
        classification_metrics(probabilities, labels, NAMES)


def test_invalid_class_names_are_rejected():
    with pytest.raises(ValueError, match="unique"):
        classification_metrics(torch.rand(2, 2), torch.tensor([0, 1]), ["a", "a"])
    with pytest.raises(ValueError, match="single string"):
        classification_metrics(torch.rand(2, 2), torch.tensor([0, 1]), "ab")


def test_meter_over_batches_equals_one_shot():
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(37, 4, generator=generator) * 3
    labels = torch.randint(0, 4, (37,), generator=generator)
    names = (*NAMES, "Lung Opacity")
    meter = ClassificationMeter(names)
    for start in range(0, 37, 8):
        meter.update(logits[start : start + 8], labels[start : start + 8])
    assert meter.num_samples == 37
    expected = classification_metrics(torch.softmax(logits, dim=1), labels, names)
    assert_metrics_close(meter.compute(), expected)


def test_meter_takes_probabilities_as_they_are(hand_case):
    meter = ClassificationMeter(NAMES)
    probabilities, labels = _confident(PREDICTED), torch.tensor(LABELS)
    meter.update(probabilities[:5], labels[:5])
    meter.update(probabilities[5:], labels[5:])
    assert_metrics_close(meter.compute(), hand_case)


def test_meter_inputs_mode_decides_whether_softmax_is_applied():
    # Both rows lie in [0, 1] and sum to 1, so "auto" takes them as probabilities; as logits,
    # softmax reverses their order on Normal (0.34 > 0.33 raw, 0.309 < 0.333 after softmax).
    scores = torch.tensor([[0.34, 0.66, 0.0], [0.33, 0.335, 0.335]])
    labels = torch.tensor([0, 1])
    as_probabilities = ClassificationMeter(NAMES)
    as_logits = ClassificationMeter(NAMES, inputs="logits")
    for meter in (as_probabilities, as_logits):
        meter.update(scores, labels)
    assert as_probabilities.compute()["per_class"]["Normal"]["auroc"] == pytest.approx(1.0)
    assert as_logits.compute()["per_class"]["Normal"]["auroc"] == pytest.approx(0.0)


def test_meter_reset_and_empty_compute():
    meter = ClassificationMeter(NAMES)
    meter.update(_confident(PREDICTED), torch.tensor(LABELS))
    meter.reset()
    assert meter.num_samples == 0
    with pytest.raises(ValueError, match="before any update"):
        meter.compute()


def test_meter_rejects_bad_batch_and_bad_mode():
    meter = ClassificationMeter(NAMES)
    with pytest.raises(ValueError, match=r"scores should have shape \(N, C\) = \(N, 3\)"):
        meter.update(torch.rand(4, 2), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="'auto', 'logits' or 'probabilities'"):
        ClassificationMeter(NAMES, inputs="softmax")


def test_row_normalised_leaves_empty_rows_nan():
    fractions = row_normalised([[3, 1], [0, 0]])
    assert fractions[0].tolist() == [0.75, 0.25]
    assert np.isnan(fractions[1]).all()


def test_confusion_matrix_csv_holds_counts_and_row_percentages(hand_case, tmp_path):
    path = confusion_matrix_csv(hand_case, tmp_path / "out" / "confusion.csv", NAMES)
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["true \\ predicted"] for row in rows] == list(NAMES)
    normal = rows[0]
    assert [normal[n] for n in NAMES] == ["3", "1", "0"]
    assert normal["support"] == "4"
    assert [normal[f"{n} (row %)"] for n in NAMES] == ["75.00", "25.00", "0.00"]
    assert rows[1]["Viral Pneumonia (row %)"] == "33.33"


def test_confusion_matrix_csv_rejects_mismatched_class_names(hand_case, tmp_path):
    with pytest.raises(ValueError, match=r"\(2, 2\).*got shape \(3, 3\)"):
        confusion_matrix_csv(hand_case, tmp_path / "c.csv", ["Normal", "COVID"])
