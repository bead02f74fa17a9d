"""The training engine on phantoms: outputs, learning, early stopping, resume, determinism."""

from __future__ import annotations

import json
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from covidcxr.data.phantoms import write_phantoms
from covidcxr.inference.artifact import load_model
from covidcxr.training.config import TrainConfig
from covidcxr.training.train import train


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("phantoms") / "data"
    write_phantoms(root, per_class=24, seed=5)
    return root


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


def config(data: Path, out: Path, cache: Path, **changes) -> TrainConfig:
    settings = {
        "data": str(data),
        "model": "tiny-cnn",
        "out": str(out),
        "max_epochs": 3,
        "batch_size": 16,
        "quiet": True,
        "accelerator": "cpu",
        "decode_workers": 0,
        "cache_dir": str(cache),
    }
    return TrainConfig(**(settings | changes))


def weights_of(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "model" / "model.safetensors"))


def test_a_run_writes_every_output(phantoms: Path, cache_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    result = train(config(phantoms, run, cache_dir), log=lambda _: None)
    assert result is not None
    for name in (
        "config.yaml",
        "splits.csv",
        "history.csv",
        "checkpoints/last.ckpt",
        "checkpoints/best.ckpt",
        "metrics.json",
        "curves.png",
        "confusion_matrix.png",
        "confusion_matrix.csv",
        "model/model.json",
        "model/model.safetensors",
    ):
        assert (run / name).is_file(), name
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs_run"] == 3 and 1 <= metrics["best_epoch"] <= 3
    assert metrics["split_sizes"]["train"] > metrics["split_sizes"]["test"] > 0
    assert set(metrics["test"]["per_class"]) == {"Normal", "COVID", "Viral Pneumonia"}
    assert len(result.history) == 3 and result.history[-1]["train_images_per_second"] > 0
    assert not list(run.glob("**/.*.partial"))  # atomic writes leave no temporary files

    # the saved model alone reproduces the run's test predictions
    classifier = load_model(run)
    assert classifier.class_names == ["Normal", "COVID", "Viral Pneumonia"]
    assert classifier.card.metrics["test_accuracy"] == metrics["test_accuracy"]

    with pytest.raises(FileExistsError, match="--resume"):
        train(config(phantoms, run, cache_dir), log=lambda _: None)


@pytest.mark.slow
def test_seed_cnn_learns_the_phantoms(cache_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_phantoms(data, per_class=60, seed=5)
    settings = config(data, tmp_path / "seed", cache_dir, model="seed-cnn", max_epochs=20)
    result = train(settings.replace(patience=20), log=lambda _: None)
    assert result is not None
    assert result.metrics["test_accuracy"] >= 0.6, result.metrics["test"]  # chance is 1/3


def test_early_stopping_stops_a_run_that_does_not_improve(
    phantoms: Path, cache_dir: Path, tmp_path: Path
) -> None:
    # a learning rate of zero never lowers the validation loss: stop after 1 + patience epochs
    settings = config(phantoms, tmp_path / "flat", cache_dir, max_epochs=10, patience=2)
    result = train(settings.replace(learning_rate=1e-12), log=lambda _: None)
    assert result is not None
    assert result.metrics["epochs_run"] == 3 and result.metrics["stopped_early"]


class _Interrupt(pl.Callback):
    """Stops training like a kill would: at the start of ``epoch`` (0-based)."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch == self.epoch:
            raise SystemExit("simulated kill")


def test_killed_and_resumed_run_matches_an_uninterrupted_one(
    phantoms: Path, cache_dir: Path, tmp_path: Path
) -> None:
    settings = {"max_epochs": 4, "augment": True, "balance": "sampler", "patience": 10}
    whole = train(config(phantoms, tmp_path / "whole", cache_dir, **settings), log=lambda _: None)

    broken = config(phantoms, tmp_path / "broken", cache_dir, **settings)
    with pytest.raises(SystemExit):
        train(broken, callbacks=[_Interrupt(epoch=2)], log=lambda _: None)
    assert (tmp_path / "broken" / "checkpoints" / "last.ckpt").is_file()
    assert not (tmp_path / "broken" / "metrics.json").exists()
    resumed = train(broken, resume=True, log=lambda _: None)

    assert whole is not None and resumed is not None
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3, 4]
    for key in ("train_loss", "val_loss"):
        np.testing.assert_allclose(
            [r[key] for r in resumed.history], [r[key] for r in whole.history], rtol=1e-6
        )
    expected, got = weights_of(tmp_path / "whole"), weights_of(tmp_path / "broken")
    assert expected.keys() == got.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=0, atol=0)


def test_same_command_twice_gives_the_same_run(
    phantoms: Path, cache_dir: Path, tmp_path: Path
) -> None:
    first = train(config(phantoms, tmp_path / "a", cache_dir, augment=True), log=lambda _: None)
    second = train(config(phantoms, tmp_path / "b", cache_dir, augment=True), log=lambda _: None)
    assert first is not None and second is not None
    split_a, split_b = (tmp_path / "a" / "splits.csv"), (tmp_path / "b" / "splits.csv")
    assert split_a.read_text() == split_b.read_text()
    assert first.metrics["test"] == second.metrics["test"]
    for name, tensor in weights_of(tmp_path / "a").items():
        torch.testing.assert_close(weights_of(tmp_path / "b")[name], tensor, rtol=0, atol=0)


def test_frozen_trunk_trains_on_cached_features(
    phantoms: Path, cache_dir: Path, tmp_path: Path
) -> None:
    cached = train(
        config(phantoms, tmp_path / "frozen", cache_dir, model="tiny-frozen-cnn"),
        log=lambda _: None,
    )
    augmented = train(
        config(phantoms, tmp_path / "frozen-aug", cache_dir, model="tiny-frozen-cnn", augment=True),
        log=lambda _: None,
    )
    assert cached is not None and augmented is not None
    assert cached.metrics["cached_features"] and not augmented.metrics["cached_features"]
    # the trunk never changed: the saved trunk equals a freshly built one with the same seed
    trunk = {k: v for k, v in weights_of(tmp_path / "frozen").items() if k.startswith("trunk.")}
    assert trunk
    other = weights_of(tmp_path / "frozen-aug")
    for name, tensor in trunk.items():
        torch.testing.assert_close(other[name], tensor, rtol=0, atol=0)


def test_class_weights_balance(phantoms: Path, cache_dir: Path, tmp_path: Path) -> None:
    result = train(
        config(phantoms, tmp_path / "w", cache_dir, balance="weights", max_epochs=1),
        log=lambda _: None,
    )
    assert result is not None and result.metrics["epochs_run"] == 1


def test_a_run_records_its_data_and_an_ood_reference_in_the_card(
    phantoms: Path, cache_dir: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    train(config(phantoms, run, cache_dir, max_epochs=1), log=lambda _: None)
    classifier = load_model(run)
    card = classifier.card
    data = card.training_data
    assert data["synthetic"] is True and card.synthetic and card.name == "run"
    assert "phantoms only" in card.warnings()[0]
    counts = data["split"]["counts"]
    assert sum(sum(c.values()) for c in counts.values()) == 3 * 24
    assert card.metrics["test_images"] == sum(counts["test"].values())
    assert {"low", "high"} <= set(card.metrics["test_intervals"]["accuracy"])
    assert card.ood["dims"] >= 1 and (run / "model" / "ood.safetensors").is_file()
    analysis = classifier.analyse(sorted(phantoms.rglob("images/*.png"))[:6])
    assert analysis.ood_scores.shape == (6,) and analysis.unfamiliar.dtype == bool


def test_fine_tuning_trains_only_the_last_parts_of_a_frozen_trunk(
    phantoms: Path, cache_dir: Path, tmp_path: Path
) -> None:
    from covidcxr.models import create_model

    torch.manual_seed(0)
    start = create_model("tiny-frozen-cnn", weights=None).state_dict()
    run = tmp_path / "tuned"
    settings = config(phantoms, run, cache_dir, model="tiny-frozen-cnn", fine_tune=1)
    metrics = train(settings, log=lambda _: None).metrics
    assert metrics["cached_features"] is False  # the trunk changes: nothing to cache
    tuned = weights_of(run)
    assert torch.equal(tuned["trunk.conv1.weight"], start["trunk.conv1.weight"])
    assert not torch.equal(tuned["trunk.conv2.weight"], start["trunk.conv2.weight"])
    with pytest.raises(ValueError, match="fine_tune should be between 0 and 2"):
        create_model("tiny-frozen-cnn", weights=None).fine_tune(3)
    with pytest.raises(ValueError, match="trains its whole trunk already"):
        create_model("tiny-cnn").fine_tune(1)


def test_photometric_augmentation_is_seeded_and_off_by_default() -> None:
    from covidcxr.training.config import AugmentConfig
    from covidcxr.training.data import TensorImageDataset, augmentation

    images = torch.linspace(0, 255, 64 * 64).reshape(1, 1, 64, 64).round().to(torch.uint8)
    labels = torch.zeros(1, dtype=torch.int64)
    paper = [str(step) for step in augmentation(AugmentConfig()).transforms]
    assert not any("Gamma" in s or "JPEG" in s or "Blur" in s for s in paper)
    robust = augmentation(AugmentConfig(rotation=0, shift=0, zoom=0, horizontal_flip=False,
                                        gamma=0.5, contrast=0.3, blur=1.0, jpeg=40))  # fmt: skip
    dataset = TensorImageDataset(images, labels, robust)
    first, same = dataset[(0, 11)]["image"], dataset[(0, 11)]["image"]
    assert torch.equal(first, same) and first.dtype == torch.uint8
    draws = [dataset[(0, seed)]["image"] for seed in range(12)]
    assert len({tuple(d.flatten()[::97].tolist()) for d in draws}) > 6
    assert not all(torch.equal(d, images[0]) for d in draws)
