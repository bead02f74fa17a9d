"""Temperature scaling, calibration error, reliability table and diagram on synthetic models
whose calibration is known by construction."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from covidcxr.analysis.calibration import (
    MAX_TEMPERATURE,
    MIN_TEMPERATURE,
    apply_temperature,
    calibration_summary,
    expected_calibration_error,
    fit_temperature,
    plot_reliability,
    reliability_table,
)


def calibrated_model(
    num_samples: int, num_classes: int = 4, spread: float = 2.5, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, C) logits and (N,) labels drawn from softmax(logits): perfectly calibrated at T = 1
    by construction, about 74 % accurate with these defaults."""
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(num_samples, num_classes, generator=generator) * spread
    labels = torch.multinomial(torch.softmax(logits, dim=1), 1, generator=generator).squeeze(1)
    return logits, labels


@pytest.fixture(scope="module")
def val_split() -> tuple[torch.Tensor, torch.Tensor]:
    return calibrated_model(8000, seed=1)


@pytest.fixture(scope="module")
def test_split() -> tuple[torch.Tensor, torch.Tensor]:
    return calibrated_model(8000, seed=2)


def test_synthetic_model_is_calibrated_and_moderately_accurate(val_split) -> None:
    logits, labels = val_split
    accuracy = float((logits.argmax(dim=1) == labels).float().mean())
    assert 0.65 < accuracy < 0.85
    assert expected_calibration_error(torch.softmax(logits, dim=1), labels) < 0.03
    assert fit_temperature(logits, labels) == pytest.approx(1.0, rel=0.08)


def test_over_confident_model_gets_temperature_near_its_sharpening(val_split, test_split) -> None:
    sharpening = 4.0
    val_logits, val_labels = val_split
    test_logits, test_labels = test_split
    temperature = fit_temperature(val_logits * sharpening, val_labels)
    assert temperature == pytest.approx(sharpening, rel=0.1)

    before = torch.softmax(test_logits * sharpening, dim=1)
    after = apply_temperature(test_logits * sharpening, temperature)
    ece_before = expected_calibration_error(before, test_labels)
    ece_after = expected_calibration_error(after, test_labels)
    assert ece_before > 0.1
    assert ece_after < 0.03
    assert ece_after < ece_before / 4


def test_under_confident_model_gets_temperature_below_one(val_split, test_split) -> None:
    val_logits, val_labels = val_split
    test_logits, test_labels = test_split
    temperature = fit_temperature(val_logits * 0.5, val_labels)
    assert temperature == pytest.approx(0.5, rel=0.1)
    ece_before = expected_calibration_error(torch.softmax(test_logits * 0.5, dim=1), test_labels)
    ece_after = expected_calibration_error(
        apply_temperature(test_logits * 0.5, temperature), test_labels
    )
    assert ece_after < ece_before / 4


def test_scaling_keeps_every_prediction(test_split) -> None:
    logits, _ = test_split
    for temperature in (MIN_TEMPERATURE, 0.3, 1.0, 4.0, MAX_TEMPERATURE):
        probabilities = apply_temperature(logits, temperature)
        assert torch.equal(probabilities.argmax(dim=1), logits.argmax(dim=1))
        assert torch.allclose(probabilities.sum(dim=1), torch.ones(len(logits)), atol=1e-5)


def test_temperature_is_clamped_to_its_range() -> None:
    labels = torch.arange(90) % 3
    separable = torch.nn.functional.one_hot(labels, 3).float() * 5
    assert fit_temperature(separable, labels) == MIN_TEMPERATURE

    # The same logits for every sample and labels split evenly: the NLL falls as T grows.
    uninformative = torch.tensor([[1.0, 0.0]]).repeat(100, 1)
    assert fit_temperature(uninformative, torch.arange(100) % 2) == MAX_TEMPERATURE


def test_fit_temperature_rejects_bad_inputs() -> None:
    with pytest.raises(ValueError, match="N >= 1"):
        fit_temperature(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\(N, C\).*got \(5,\)"):
        fit_temperature(torch.zeros(5), torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="same number of samples"):
        fit_temperature(torch.zeros(5, 3), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\[0, 2\]"):
        fit_temperature(torch.zeros(2, 3), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="max_iter"):
        fit_temperature(torch.zeros(2, 3), torch.tensor([0, 1]), max_iter=0)
    with pytest.raises(ValueError, match="temperature"):
        apply_temperature(torch.zeros(2, 3), 0.0)


def test_ece_matches_a_hand_computed_case() -> None:
    # Top-label confidences 0.55, 0.55, 0.60, 0.90 (correct: yes, no, yes, yes). With 3 bins,
    # bin [1/3, 2/3) holds three samples (mean confidence 0.5667, accuracy 2/3) and bin
    # [2/3, 1] one (0.9, 1): ECE = 3/4 * 0.1 + 1/4 * 0.1 = 0.1.
    probabilities = torch.tensor(
        [[0.25, 0.20, 0.55], [0.55, 0.05, 0.40], [0.10, 0.30, 0.60], [0.90, 0.05, 0.05]]
    )
    labels = torch.tensor([2, 1, 2, 0])
    assert expected_calibration_error(probabilities, labels, bins=3) == pytest.approx(0.1)
    table = reliability_table(probabilities, labels, bins=3)
    assert [row["count"] for row in table] == [0, 3, 1]
    assert table[0]["confidence"] is None and table[0]["accuracy"] is None
    assert table[1]["confidence"] == pytest.approx(1.7 / 3)
    assert table[1]["accuracy"] == pytest.approx(2 / 3)
    assert table[2]["confidence"] == pytest.approx(0.9)
    assert table[2]["accuracy"] == 1.0


def test_ece_of_a_calibrated_model_is_near_zero_and_of_a_sharpened_one_is_not(test_split) -> None:
    logits, labels = test_split
    assert expected_calibration_error(torch.softmax(logits, dim=1), labels) < 0.03
    assert expected_calibration_error(torch.softmax(logits * 4, dim=1), labels) > 0.1


def test_ece_rejects_logits_and_bad_bins(test_split) -> None:
    logits, labels = test_split
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        expected_calibration_error(logits, labels)
    with pytest.raises(ValueError, match="bins"):
        expected_calibration_error(torch.softmax(logits, dim=1), labels, bins=0)


def test_reliability_table_covers_every_sample_and_matches_ece(test_split) -> None:
    logits, labels = test_split
    probabilities = torch.softmax(logits * 2, dim=1)
    table = reliability_table(probabilities, labels, bins=10)
    json.dumps(table, allow_nan=False)
    assert len(table) == 10
    assert sum(row["count"] for row in table) == len(labels)
    assert [row["lower"] for row in table] == pytest.approx([index / 10 for index in range(10)])
    assert table[-1]["upper"] == 1.0
    # Top-label confidence is at least 1/C = 0.25, so the lowest bins are empty.
    assert table[0]["count"] == table[1]["count"] == 0 and table[0]["accuracy"] is None
    for row in table:
        if row["count"]:
            assert row["lower"] <= row["confidence"] <= row["upper"]
    weighted_gap = sum(
        row["count"] / len(labels) * abs(row["accuracy"] - row["confidence"])
        for row in table
        if row["count"]
    )
    assert weighted_gap == pytest.approx(
        expected_calibration_error(probabilities, labels, bins=10), abs=1e-5
    )


def test_calibration_summary_is_json_safe_and_improves_an_over_confident_model(
    val_split, test_split
) -> None:
    val_logits, val_labels = val_split
    test_logits, test_labels = test_split
    summary = calibration_summary(val_logits * 4, val_labels, test_logits * 4, test_labels)
    json.dumps(summary, allow_nan=False)
    assert set(summary) == {"temperature", "fitted_temperature", "note", "val", "test"}
    assert summary["note"] is None and summary["temperature"] == summary["fitted_temperature"]
    assert summary["temperature"] == pytest.approx(4.0, rel=0.1)
    for split in ("val", "test"):
        values = summary[split]
        assert set(values) == {"ece_before", "ece_after", "nll_before", "nll_after"}
        assert values["ece_after"] < values["ece_before"] / 4
        assert values["nll_after"] < values["nll_before"]
    # The fitted T minimises the validation NLL, so no other T does better there.
    nll_at = torch.nn.functional.cross_entropy(val_logits.double() * 4 / 3.5, val_labels)
    assert summary["val"]["nll_after"] <= float(nll_at)

    without_test = calibration_summary(val_logits * 4, val_labels)
    assert without_test["test"] is None
    assert without_test["val"] == summary["val"]


def test_calibration_summary_needs_both_test_arrays(val_split) -> None:
    logits, labels = val_split
    with pytest.raises(ValueError, match="both test_logits and test_labels"):
        calibration_summary(logits, labels, test_logits=logits)


def test_reliability_plot_writes_a_png(tmp_path, test_split) -> None:
    logits, labels = test_split
    path = plot_reliability(
        torch.softmax(logits * 4, dim=1),
        apply_temperature(logits * 4, 4.0),
        labels,
        tmp_path / "figures" / "reliability.png",
    )
    assert path == tmp_path / "figures" / "reliability.png"
    with Image.open(path) as image:
        assert image.format == "PNG"
        pixels = np.asarray(image.convert("RGB"))
    assert pixels.shape[0] > 400 and pixels.shape[1] > 400
    assert pixels.std() > 10  # something was drawn


def test_reliability_plot_rejects_mismatched_probabilities(tmp_path, test_split) -> None:
    logits, labels = test_split
    with pytest.raises(ValueError, match="same shape"):
        plot_reliability(
            torch.softmax(logits, dim=1),
            torch.softmax(torch.cat([logits, torch.zeros(len(logits), 1)], dim=1), dim=1),
            labels,
            tmp_path / "reliability.png",
        )


def test_a_validation_split_without_errors_keeps_temperature_one() -> None:
    # every validation image right with a clear margin: the NLL falls as T -> 0 (not identifiable)
    import torch

    from covidcxr.analysis.calibration import MIN_TEMPERATURE, calibration_summary

    labels = torch.arange(30) % 3
    logits = torch.nn.functional.one_hot(labels, 3).float() * 3.0
    summary = calibration_summary(logits, labels)
    assert summary["fitted_temperature"] == MIN_TEMPERATURE
    assert summary["temperature"] == 1.0 and "kept T = 1" in summary["note"]
