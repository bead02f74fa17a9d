"""Lung segmentation on the shared engine, its commands, and lung-focused classification."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from covidcxr.analysis.segmentation_metrics import dice_score
from covidcxr.cli import app
from covidcxr.data.phantoms import write_phantoms
from covidcxr.inference.artifact import Classifier, Segmenter, load_model, prepare_images
from covidcxr.io import read_image, read_mask
from covidcxr.training.config import TrainConfig
from covidcxr.training.train import train

runner = CliRunner()


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("seg-phantoms") / "data"
    write_phantoms(root, per_class=30, seed=21)
    return root


@pytest.fixture(scope="module")
def segmenter_run(phantoms: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("seg-run") / "tiny-unet"
    config = TrainConfig(
        data=str(phantoms), model="tiny-unet", out=str(run), max_epochs=12, batch_size=8,
        patience=12, quiet=True, accelerator="cpu", decode_workers=0,
        cache_dir=str(run.parent / "cache"),
    )  # fmt: skip
    assert train(config, log=lambda _: None) is not None
    return run


def central_ellipse_dice(masks: list[np.ndarray]) -> float:
    """The trivial baseline: one fixed ellipse in the middle of every image."""
    scores = []
    for mask in masks:
        height, width = mask.shape
        rows, columns = np.ogrid[:height, :width]
        ellipse = ((rows - height * 0.5) / (height * 0.35)) ** 2 + (
            (columns - width * 0.5) / (width * 0.35)
        ) ** 2 <= 1
        scores.append(dice_score(ellipse, mask))
    return float(np.mean(scores))


def test_segmentation_run_beats_trivial_baselines(segmenter_run: Path, phantoms: Path) -> None:
    metrics = json.loads((segmenter_run / "metrics.json").read_text())
    assert metrics["task"] == "segmentation" and metrics["epochs_run"] == 12
    for name in ("curves.png", "worst_cases.png", "model/model.json", "checkpoints/last.ckpt"):
        assert (segmenter_run / name).is_file(), name
    test_masks = [
        read_mask(phantoms / Path(line.split(",")[-1]))
        for line in (segmenter_run / "splits.csv").read_text().splitlines()[1:]
        if ",test," in line
    ]
    ellipse = central_ellipse_dice(test_masks)
    assert metrics["test_dice"] >= 0.85
    assert metrics["test_dice"] > metrics["baseline_prior_mask_dice"] + 0.02
    assert metrics["test_dice"] > ellipse + 0.1, (metrics["test_dice"], ellipse)
    raw, cleaned = metrics["test"]["raw"], metrics["test"]["postprocessed"]
    assert raw["num_images"] == cleaned["num_images"] == len(test_masks)
    assert "hd95" in cleaned and cleaned["dice"] >= raw["dice"] - 0.01


def test_segment_predict_writes_masks_at_each_input_size(
    segmenter_run: Path, real_dataset: Path, tmp_path: Path
) -> None:
    segmenter = load_model(segmenter_run)
    assert isinstance(segmenter, Segmenter)
    inputs = real_dataset / "COVID" / "images"
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    out = tmp_path / "masks"
    result = runner.invoke(
        app, ["segment", "predict", str(segmenter_run), str(inputs), str(bad), "--out", str(out),
              "--quiet"],
    )  # fmt: skip
    assert result.exit_code == 1, result.output  # one input failed
    assert "1 file skipped" in result.output and "bad.png" in result.output
    for image_path in sorted(inputs.glob("*.png")):
        with Image.open(image_path) as image, Image.open(out / f"{image_path.stem}_mask.png") as m:
            assert m.size == image.size and m.mode == "L"
            assert set(np.unique(np.asarray(m))) <= {0, 255}
        with Image.open(out / f"{image_path.stem}_overlay.png") as overlay:
            assert overlay.size == image.size and overlay.mode == "RGB"


def test_segment_evaluate_on_the_test_split(
    segmenter_run: Path, phantoms: Path, tmp_path: Path
) -> None:
    out = tmp_path / "evaluation"
    result = runner.invoke(
        app, ["segment", "evaluate", str(segmenter_run), "--data", str(phantoms), "--split",
              str(segmenter_run / "splits.csv"), "--out", str(out), "--quiet"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    trained = json.loads((segmenter_run / "metrics.json").read_text())
    assert metrics["num_images"] == trained["test"]["postprocessed"]["num_images"]
    assert abs(metrics["dice"] - trained["test_dice"]) < 0.05  # 299 px input vs 64 px masks
    assert len(metrics["per_image"]) == metrics["num_images"]
    assert (out / "worst_cases.png").is_file() and (out / "per_image.csv").is_file()
    assert metrics["scored"] == "the test split"


def test_segment_evaluate_without_a_split_says_what_it_scored(
    segmenter_run: Path, real_dataset: Path, tmp_path: Path
) -> None:
    out = tmp_path / "all"
    result = runner.invoke(
        app, ["segment", "evaluate", str(segmenter_run), "--data", str(real_dataset),
              "--out", str(out), "--quiet"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["subset"] == "all"
    assert metrics["scored"] == f"all {metrics['num_images']} masked images of {real_dataset.name}"


def test_lung_focused_classifiers(segmenter_run: Path, phantoms: Path, tmp_path: Path) -> None:
    common = {"data": str(phantoms), "model": "tiny-cnn", "max_epochs": 2, "batch_size": 16,
              "quiet": True, "accelerator": "cpu", "decode_workers": 0,
              "cache_dir": str(tmp_path / "cache")}  # fmt: skip
    own_masks = train(
        TrainConfig(**common, out=str(tmp_path / "crop"), lungs="crop"), log=lambda _: None
    )
    with_model = train(
        TrainConfig(**common, out=str(tmp_path / "mask"), lungs="mask",
                    seg_model=str(segmenter_run)),
        log=lambda _: None,
    )  # fmt: skip
    assert own_masks is not None and with_model is not None
    assert own_masks.metrics["lungs"] == "crop" and with_model.metrics["lungs"] == "mask"

    image = phantoms / "COVID" / "images" / "COVID-1.png"
    bundled = load_model(tmp_path / "mask")
    assert isinstance(bundled, Classifier) and bundled.lung_mode == "mask"
    assert (tmp_path / "mask" / "model" / "segmenter" / "model.json").is_file()
    assert bundled.predict_proba([image]).shape == (1, 3)
    # what it saw: everything outside the predicted lungs is black
    from covidcxr.io import read_image

    focused = bundled.focus([read_image(image)])[0]
    lungs = bundled.segmenter.predict_masks([read_image(image)])[0]
    assert focused[~lungs].max() == 0 and focused[lungs].max() > 0

    # trained on the dataset's masks: new images need a segmenter, and the error says so
    result = runner.invoke(app, ["predict", str(tmp_path / "crop"), str(image), "--quiet"])
    assert result.exit_code == 2 and "--seg-model" in result.output
    result = runner.invoke(
        app, ["predict", str(tmp_path / "crop"), str(image), "--seg-model", str(segmenter_run),
              "--quiet"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output

    result = runner.invoke(app, ["compare", str(tmp_path / "crop"), str(tmp_path / "mask")])
    assert result.exit_code == 0 and "crop" in result.output and " mask " in result.output


def test_evaluate_scores_a_lung_focused_model_on_what_it_was_shown(
    segmenter_run: Path, phantoms: Path, real_dataset: Path, tmp_path: Path
) -> None:
    # `covidcxr evaluate` once read whole images from the cache for every model, so a
    # --lungs mask model was scored on inputs it never saw; it must prepare them as predict does
    config = TrainConfig(
        data=str(phantoms), model="tiny-cnn", max_epochs=1, batch_size=16, quiet=True,
        accelerator="cpu", decode_workers=0, cache_dir=str(tmp_path / "cache"),
        out=str(tmp_path / "mask"), lungs="mask",
    )  # fmt: skip
    assert train(config, log=lambda _: None) is not None  # trained on the dataset's own masks
    out = tmp_path / "evaluation"
    result = runner.invoke(
        app, ["evaluate", str(tmp_path / "mask"), "--data", str(real_dataset), "--out", str(out),
              "--seg-model", str(segmenter_run), "--workers", "0", "--quiet",
              "--cache-dir", str(tmp_path / "cache")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    with (out / "predictions.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    files = [Path(row["path"]) for row in rows]
    evaluated = np.array([[float(row[f"p_{n}"]) for n in ("Normal", "COVID", "Viral Pneumonia")]
                          for row in rows])  # fmt: skip
    classifier = load_model(tmp_path / "mask")
    classifier.use_segmenter(segmenter_run)
    assert np.abs(evaluated - classifier.predict_proba(files)).max() < 1e-5
    whole = load_model(tmp_path / "mask").analyse_prepared(
        prepare_images([read_image(f) for f in files], classifier.card.input_size)
    )
    assert np.abs(evaluated - whole.probabilities).max() > 1e-3  # whole films: not what it saw


def test_segmentation_models_are_refused_by_train_and_vice_versa(
    phantoms: Path, tmp_path: Path
) -> None:
    result = runner.invoke(app, ["train", "--data", str(phantoms), "--model", "tiny-unet"])
    assert result.exit_code == 2 and "covidcxr segment train" in result.output
    result = runner.invoke(
        app, ["segment", "train", "--data", str(phantoms), "--model", "tiny-cnn"]
    )
    assert result.exit_code == 2 and "covidcxr train" in result.output


def test_augmented_pairs_stay_aligned_and_follow_their_seeds() -> None:
    import torch

    from covidcxr.training.segmentation import augment_pairs

    # a bright rectangle on black, its mask the same rectangle
    images = torch.zeros((4, 1, 64, 64), dtype=torch.uint8)
    images[:, :, 16:48, 20:44] = 200
    masks = (images > 0).to(torch.uint8)
    warped, warped_masks = augment_pairs(images, masks, [1, 2, 3, 4])
    assert warped.dtype == torch.uint8 and warped_masks.dtype == torch.uint8
    assert warped.shape == images.shape and set(warped_masks.unique().tolist()) <= {0, 1}
    for image, mask in zip(warped, warped_masks, strict=True):
        bright = image[0] > 40  # exposure changes, the rectangle stays brighter than the fill
        inside = mask[0].bool()
        agreement = (bright == inside).float().mean()
        assert agreement > 0.97, float(agreement)  # edges may differ by a pixel
    again, again_masks = augment_pairs(images, masks, [1, 2, 3, 4])
    assert torch.equal(again, warped) and torch.equal(again_masks, warped_masks)
    other, _ = augment_pairs(images, masks, [5, 6, 7, 8])
    assert not torch.equal(other, warped)
