"""bootstrap_intervals: point values, coverage of the point, width against N, undefined
metrics, determinism, and agreement with a literal resampling of images."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from covidcxr.analysis.bootstrap import bootstrap_intervals
from covidcxr.analysis.metrics import classification_metrics

NAMES = ("Normal", "COVID", "Viral Pneumonia")
METRICS = ("sensitivity", "specificity", "ppv")


def noisy_classifier(
    num_samples: int, accuracy: float = 0.8, num_classes: int = 3, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(N, C) float32 probabilities (0.7 on the predicted class) and (N,) labels; the
    prediction is the label with probability ``accuracy``, otherwise a random class."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, num_samples)
    predictions = np.where(
        rng.random(num_samples) < accuracy, labels, rng.integers(0, num_classes, num_samples)
    )
    probabilities = np.full((num_samples, num_classes), 0.3 / (num_classes - 1), np.float32)
    probabilities[np.arange(num_samples), predictions] = 0.7
    return probabilities, labels


def one_hot(predictions: list[int], num_classes: int = 3) -> np.ndarray:
    return np.eye(num_classes, dtype=np.float32)[predictions]


def all_intervals(result: dict) -> list[dict]:
    return [result["accuracy"]] + [
        result["per_class"][name][key] for name in result["per_class"] for key in METRICS
    ]


@pytest.fixture(scope="module")
def moderate() -> tuple[np.ndarray, np.ndarray, dict]:
    probabilities, labels = noisy_classifier(600)
    return probabilities, labels, bootstrap_intervals(probabilities, labels, NAMES)


def test_layout_is_json_safe(moderate) -> None:
    *_, result = moderate
    json.dumps(result, allow_nan=False)
    assert result["resamples"] == 1000 and result["level"] == 0.95
    assert set(result) == {"resamples", "level", "accuracy", "per_class"}
    assert list(result["per_class"]) == list(NAMES)
    for interval in all_intervals(result):
        assert set(interval) == {"value", "low", "high"}


def test_point_values_are_the_full_data_metrics(moderate) -> None:
    probabilities, labels, result = moderate
    metrics = classification_metrics(torch.from_numpy(probabilities), labels, NAMES)
    assert result["accuracy"]["value"] == pytest.approx(metrics["accuracy"], abs=1e-6)
    for name in NAMES:
        expected = metrics["per_class"][name]
        actual = result["per_class"][name]
        assert actual["sensitivity"]["value"] == pytest.approx(expected["recall"], abs=1e-6)
        assert actual["specificity"]["value"] == pytest.approx(expected["specificity"], abs=1e-6)
        assert actual["ppv"]["value"] == pytest.approx(expected["precision"], abs=1e-6)


def test_intervals_contain_the_point_values(moderate) -> None:
    *_, result = moderate
    for interval in all_intervals(result):
        assert 0 <= interval["low"] < interval["value"] < interval["high"] <= 1, interval


def test_intervals_shrink_as_the_data_grow() -> None:
    small = bootstrap_intervals(*noisy_classifier(100, seed=1), NAMES)
    large = bootstrap_intervals(*noisy_classifier(10_000, seed=1), NAMES)
    for small_interval, large_interval in zip(
        all_intervals(small), all_intervals(large), strict=True
    ):
        small_width = small_interval["high"] - small_interval["low"]
        large_width = large_interval["high"] - large_interval["low"]
        # The standard error falls as 1 / sqrt(N): 10x narrower for 100x the data.
        assert large_width < small_width / 4, (small_interval, large_interval)


def test_a_higher_level_gives_a_wider_interval(moderate) -> None:
    probabilities, labels, result = moderate
    narrow = bootstrap_intervals(probabilities, labels, NAMES, level=0.8)
    assert narrow["level"] == 0.8
    for wide_interval, narrow_interval in zip(
        all_intervals(result), all_intervals(narrow), strict=True
    ):
        assert wide_interval["low"] < narrow_interval["low"]
        assert narrow_interval["high"] < wide_interval["high"]


def test_a_perfect_classifier_gets_one_to_one() -> None:
    labels = np.array([0, 1, 2] * 20)
    result = bootstrap_intervals(one_hot(labels.tolist()), labels, NAMES, resamples=200)
    for interval in all_intervals(result):
        assert interval == {"value": 1.0, "low": 1.0, "high": 1.0}


def test_the_same_seed_gives_the_same_result_and_another_seed_does_not(moderate) -> None:
    probabilities, labels, result = moderate
    assert bootstrap_intervals(probabilities, labels, NAMES, seed=0) == result
    other = bootstrap_intervals(probabilities, labels, NAMES, seed=1)
    assert other["accuracy"]["value"] == result["accuracy"]["value"]
    assert other != result


def test_undefined_metrics_are_none() -> None:
    # COVID is never predicted (PPV undefined) and Viral Pneumonia never occurs
    # (sensitivity undefined).
    labels = np.array([0, 0, 0, 1, 1, 1, 0, 1])
    predictions = [0, 0, 2, 0, 0, 2, 0, 0]
    result = bootstrap_intervals(one_hot(predictions), labels, NAMES, resamples=300)
    json.dumps(result, allow_nan=False)
    none = {"value": None, "low": None, "high": None}
    assert result["per_class"]["COVID"]["ppv"] == none
    assert result["per_class"]["Viral Pneumonia"]["sensitivity"] == none
    # A class that occurs but is never predicted has sensitivity 0, defined.
    assert result["per_class"]["COVID"]["sensitivity"] == {"value": 0.0, "low": 0.0, "high": 0.0}
    # Viral Pneumonia is predicted twice and never right: PPV 0 wherever it is defined.
    assert result["per_class"]["Viral Pneumonia"]["ppv"] == {
        "value": 0.0,
        "low": 0.0,
        "high": 0.0,
    }


def test_specificity_is_none_when_every_image_belongs_to_the_class() -> None:
    labels = np.zeros(10, dtype=np.int64)
    result = bootstrap_intervals(one_hot([0] * 9 + [1]), labels, NAMES, resamples=100)
    assert result["per_class"]["Normal"]["specificity"] == {
        "value": None,
        "low": None,
        "high": None,
    }
    assert result["per_class"]["Normal"]["sensitivity"]["value"] == pytest.approx(0.9)


def test_a_rare_class_gets_an_interval_over_the_resamples_that_contain_it() -> None:
    # One COVID image, predicted correctly: resamples without it leave its sensitivity
    # undefined and are skipped; in the others it is 1.
    labels = np.array([0] * 30 + [1] + [2] * 30)
    result = bootstrap_intervals(one_hot(labels.tolist()), labels, NAMES, resamples=500)
    assert result["per_class"]["COVID"]["sensitivity"] == {"value": 1.0, "low": 1.0, "high": 1.0}


def test_matches_a_literal_resampling_of_images() -> None:
    """The confusion matrices are drawn from a multinomial; a loop that resamples image indices
    must give the same intervals up to Monte Carlo error."""
    probabilities, labels = noisy_classifier(300, accuracy=0.7, seed=3)
    resamples = 4000
    result = bootstrap_intervals(probabilities, labels, NAMES, resamples=resamples, seed=5)

    rng = np.random.default_rng(123)
    predictions = probabilities.argmax(axis=1)
    accuracies, sensitivities = [], []
    for _ in range(resamples):
        drawn = rng.integers(0, len(labels), len(labels))
        drawn_labels, drawn_predictions = labels[drawn], predictions[drawn]
        accuracies.append(np.mean(drawn_labels == drawn_predictions))
        covid = drawn_labels == 1
        sensitivities.append(np.mean(drawn_predictions[covid] == 1))
    for interval, samples in (
        (result["accuracy"], accuracies),
        (result["per_class"]["COVID"]["sensitivity"], sensitivities),
    ):
        low, high = np.quantile(samples, [0.025, 0.975])
        assert interval["low"] == pytest.approx(low, abs=0.008)
        assert interval["high"] == pytest.approx(high, abs=0.008)


@pytest.mark.parametrize(
    ("keyword", "value", "message"),
    [
        ("resamples", 0, "resamples"),
        ("resamples", 2.5, "resamples"),
        ("level", 1.0, "level"),
        ("level", 0.0, "level"),
        ("seed", "zero", "seed"),
    ],
)
def test_rejects_bad_settings(moderate, keyword, value, message) -> None:
    probabilities, labels, _ = moderate
    with pytest.raises(ValueError, match=message):
        bootstrap_intervals(probabilities, labels, NAMES, **{keyword: value})


def test_rejects_bad_inputs() -> None:
    with pytest.raises(ValueError, match="N = 0"):
        bootstrap_intervals(np.zeros((0, 3), np.float32), np.zeros(0, np.int64), NAMES)
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        bootstrap_intervals(np.zeros((4, 2), np.float32), np.zeros(4, np.int64), NAMES)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        bootstrap_intervals(np.full((4, 3), 2.0, np.float32), np.zeros(4, np.int64), NAMES)
