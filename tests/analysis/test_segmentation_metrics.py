"""Segmentation metrics: hand-computed Dice/IoU, HD95 of shifted discs, empty-mask rules, the
meter against the one-shot function, JSON safety, real lung masks."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from covidcxr.analysis.segmentation_metrics import (
    SegmentationMeter,
    dice_score,
    hausdorff95,
    iou_score,
    segmentation_metrics,
)
from covidcxr.data.transforms import resize_mask
from covidcxr.io import read_mask

SHAPE = (33, 47)


def rectangle(top: int, bottom: int, left: int, right: int, shape=SHAPE) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[top:bottom, left:right] = True
    return mask


def disc(centre_row: float, centre_col: float, radius: float, shape=(80, 96)) -> np.ndarray:
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    return (rows - centre_row) ** 2 + (cols - centre_col) ** 2 <= radius**2


def test_mask_against_itself_is_perfect():
    mask = rectangle(5, 20, 7, 31)
    assert dice_score(mask, mask) == 1.0
    assert iou_score(mask, mask) == 1.0
    assert hausdorff95(mask, mask) == 0.0


def test_mask_against_its_complement_has_no_overlap():
    mask = rectangle(5, 20, 7, 31)
    assert dice_score(mask, ~mask) == 0.0
    assert iou_score(mask, ~mask) == 0.0


def test_two_rectangles_give_the_hand_computed_overlap():
    # A: 10 × 20 = 200 px; B: 10 × 15 = 150 px; A ∩ B: rows 9–13, cols 16–25 = 5 × 10 = 50 px.
    first = rectangle(4, 14, 6, 26)
    second = rectangle(9, 19, 16, 31)
    assert dice_score(first, second) == pytest.approx(2 * 50 / (200 + 150))  # 2/7
    assert iou_score(first, second) == pytest.approx(50 / (200 + 150 - 50))  # 1/6
    assert dice_score(second, first) == pytest.approx(2 / 7)


@pytest.mark.parametrize(("shift_rows", "shift_cols"), [(0, 7), (3, 4), (-6, 0)])
def test_hd95_of_a_shifted_disc_is_the_shift(shift_rows, shift_cols):
    shift = float(np.hypot(shift_rows, shift_cols))
    original = disc(40, 45, 20)
    shifted = disc(40 + shift_rows, 45 + shift_cols, 20)
    distance = hausdorff95(original, shifted)
    # Boundary points along the shift move by the full shift; the 95th percentile of a circle's
    # displacement is 0.997 × shift, and pixelated boundaries add up to about a pixel.
    assert distance == pytest.approx(shift, abs=1.0)
    assert hausdorff95(shifted, original) == pytest.approx(distance)


def test_hd95_grows_with_the_shift():
    original = disc(40, 45, 20)
    distances = [hausdorff95(original, disc(40, 45 + shift, 20)) for shift in (2, 5, 10)]
    assert distances == sorted(distances)
    assert distances[0] < distances[-1] - 5


@pytest.mark.parametrize(
    ("prediction_empty", "target_empty", "expected"),
    [
        (True, True, (1.0, 1.0, 0.0)),
        (True, False, (0.0, 0.0, None)),
        (False, True, (0.0, 0.0, None)),
    ],
)
def test_empty_masks_follow_the_documented_rules(prediction_empty, target_empty, expected):
    lungs = rectangle(5, 20, 7, 31)
    empty = np.zeros(SHAPE, dtype=bool)
    prediction = empty if prediction_empty else lungs
    target = empty if target_empty else lungs
    assert (
        dice_score(prediction, target),
        iou_score(prediction, target),
        hausdorff95(prediction, target),
    ) == expected


def test_numpy_torch_bool_and_zero_one_inputs_agree():
    first = rectangle(4, 14, 6, 26)
    second = rectangle(9, 19, 16, 31)
    expected = dice_score(first, second)
    assert dice_score(torch.from_numpy(first), torch.from_numpy(second)) == expected
    assert dice_score(first.astype(np.uint8), second.astype(np.float32)) == expected
    # A flipped view has negative strides, which torch cannot wrap without a copy.
    assert dice_score(first[::-1], second[::-1]) == expected


def test_errors_say_expected_and_got():
    mask = rectangle(5, 20, 7, 31)
    with pytest.raises(ValueError, match=r"same shape, got \(33, 47\) and \(33, 46\)"):
        dice_score(mask, mask[:, :46])
    with pytest.raises(ValueError, match=r"binary masks .* got values from 0 to 0\.7"):
        iou_score(mask * 0.7, mask)
    with pytest.raises(ValueError, match=r"2 dims \(height, width\), got 3"):
        hausdorff95(mask[None], mask[None])
    with pytest.raises(ValueError, match=r"\(N, H, W\) or \(N, 1, H, W\), got \(2, 3, 33, 47\)"):
        segmentation_metrics(np.zeros((2, 3, *SHAPE), bool), np.zeros((2, 3, *SHAPE), bool))
    with pytest.raises(ValueError, match="threshold should be None"):
        SegmentationMeter(threshold=1.5)


def batch_of_pairs() -> tuple[np.ndarray, np.ndarray]:
    """Five (prediction, target) pairs, including both empty-mask cases."""
    empty = np.zeros(SHAPE, dtype=bool)
    predictions = [
        rectangle(4, 14, 6, 26),
        rectangle(5, 20, 7, 31),
        empty,
        rectangle(2, 30, 3, 40),
        empty,
    ]
    targets = [
        rectangle(9, 19, 16, 31),
        rectangle(5, 20, 7, 31),
        empty,
        rectangle(4, 28, 3, 44),
        rectangle(1, 5, 1, 5),
    ]
    return np.stack(predictions), np.stack(targets)


def test_batch_metrics_are_means_of_the_per_image_values():
    predictions, targets = batch_of_pairs()
    result = segmentation_metrics(predictions, targets)
    assert result["num_images"] == 5
    per_image = result["per_image"]
    for entry, prediction, target in zip(per_image, predictions, targets, strict=True):
        assert entry["dice"] == pytest.approx(dice_score(prediction, target))
        assert entry["iou"] == pytest.approx(iou_score(prediction, target))
        assert entry["hd95"] == pytest.approx(hausdorff95(prediction, target))
    assert [entry["dice"] for entry in per_image][:3] == pytest.approx([2 / 7, 1.0, 1.0])
    assert per_image[4] == {"dice": 0.0, "iou": 0.0, "hd95": None}
    assert result["dice"] == pytest.approx(np.mean([entry["dice"] for entry in per_image]))
    assert result["iou"] == pytest.approx(np.mean([entry["iou"] for entry in per_image]))
    # HD95 is averaged over the four images where it is defined.
    defined = [entry["hd95"] for entry in per_image[:4]]
    assert result["hd95"] == pytest.approx(np.mean(defined))


def test_batch_hd95_is_none_when_never_defined():
    predictions = np.zeros((2, *SHAPE), dtype=bool)
    targets = np.stack([rectangle(5, 20, 7, 31)] * 2)
    result = segmentation_metrics(predictions, targets)
    assert result["hd95"] is None
    assert result["dice"] == 0.0


def test_meter_over_batches_equals_one_shot():
    predictions, targets = batch_of_pairs()
    expected = segmentation_metrics(predictions, targets)
    meter = SegmentationMeter()
    # (B, 1, H, W) torch bool, then (B, H, W) numpy 0/1 floats.
    meter.update(torch.from_numpy(predictions[:2, None]), torch.from_numpy(targets[:2, None]))
    meter.update(predictions[2:].astype(np.float32), targets[2:].astype(np.float32))
    assert meter.num_images == 5
    assert meter.compute() == expected


def test_meter_accepts_batches_of_different_sizes():
    small = rectangle(4, 14, 6, 26, shape=(20, 30)), rectangle(5, 15, 6, 26, shape=(20, 30))
    large = disc(40, 45, 20), disc(40, 48, 20)
    meter = SegmentationMeter()
    meter.update(small[0][None], small[1][None])
    meter.update(large[0][None], large[1][None])
    result = meter.compute()
    assert result["num_images"] == 2
    assert result["per_image"][0]["dice"] == pytest.approx(dice_score(*small))
    assert result["per_image"][1]["hd95"] == pytest.approx(hausdorff95(*large))


def test_meter_thresholds_probabilities():
    predictions, targets = batch_of_pairs()
    rng = np.random.default_rng(0)
    # Probabilities on the right side of 0.5 everywhere: thresholding recovers the masks.
    probabilities = np.where(
        predictions,
        rng.uniform(0.5, 1.0, predictions.shape),
        rng.uniform(0.0, 0.49, predictions.shape),
    )
    meter = SegmentationMeter(threshold=0.5)
    meter.update(torch.from_numpy(probabilities).float(), targets)
    assert meter.compute() == segmentation_metrics(predictions, targets)

    with pytest.raises(ValueError, match=r"probabilities in \[0, 1\].* from -2 to 3"):
        meter.update(torch.tensor([[[-2.0, 3.0]]]), torch.tensor([[[True, False]]]))
    with pytest.raises(ValueError, match=r"pass threshold=0\.5"):
        SegmentationMeter().update(probabilities, targets)


def test_meter_compute_before_update_and_reset():
    meter = SegmentationMeter()
    with pytest.raises(ValueError, match=r"before any update"):
        meter.compute()
    predictions, targets = batch_of_pairs()
    meter.update(predictions, targets)
    meter.reset()
    assert meter.num_images == 0
    meter.update(predictions[:1], targets[:1])
    assert meter.compute()["num_images"] == 1


def test_results_are_json_safe():
    predictions, targets = batch_of_pairs()
    result = segmentation_metrics(predictions, targets)
    restored = json.loads(json.dumps(result, allow_nan=False))
    assert restored == result
    assert all(type(result[key]) is float for key in ("dice", "iou", "hd95"))
    assert type(result["num_images"]) is int
    single = (dice_score(predictions[0], targets[0]), hausdorff95(predictions[0], targets[0]))
    assert all(type(value) is float for value in single)


def test_real_lung_masks_against_themselves_and_shifted(real_dataset):
    paths = sorted((real_dataset / "COVID" / "masks").glob("*.png"))[:3]
    paths += sorted((real_dataset / "Viral Pneumonia" / "masks").glob("*.png"))[:2]
    assert len(paths) == 5
    masks = np.stack([resize_mask(read_mask(path), (256, 256)) for path in paths])
    assert all(mask.mean() > 0.1 for mask in masks)  # real lungs, not empty files

    same = segmentation_metrics(masks, masks)
    assert same["dice"] == 1.0
    assert same["iou"] == 1.0
    assert same["hd95"] == 0.0

    shifted = np.roll(masks, 5, axis=2)
    moved = segmentation_metrics(shifted, masks)
    assert 0.8 < moved["dice"] < 1.0
    assert moved["iou"] < moved["dice"]
    assert moved["hd95"] == pytest.approx(5.0, abs=1.0)


def test_importing_the_metrics_loads_neither_torch_nor_monai():
    code = (
        "import sys\n"
        "import covidcxr.analysis.segmentation_metrics as segmentation\n"
        "import covidcxr.data.postprocess\n"
        "import covidcxr.data.overlay, covidcxr.data.lungs\n"
        "segmentation.dice_score\n"
        "print(sorted(name for name in ('torch', 'monai') if name in sys.modules))\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert completed.stdout.strip() == "[]"
