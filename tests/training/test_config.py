"""Settings: YAML in, flags over YAML, model defaults last; unknown keys are errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from covidcxr.training.config import (
    AugmentConfig,
    TrainConfig,
    config_from_mapping,
    load_yaml,
    resolve,
    save_yaml,
)


def test_model_defaults_fill_what_is_not_set() -> None:
    cnn = resolve(TrainConfig(data="d"))
    assert (cnn.max_epochs, cnn.batch_size, cnn.fractions) == (100, 64, (0.7, 0.1, 0.2))
    assert (cnn.patience, cnn.lr_schedule, cnn.learning_rate) == (10, "none", 1e-3)
    assert cnn.weights == "none" and cnn.out == str(Path("runs") / "seed-cnn")
    vgg = resolve(TrainConfig(data="d", model="vgg16", max_epochs=3))
    assert vgg.max_epochs == 3 and vgg.fractions == (0.75, 0.125, 0.125)
    assert vgg.weights == "imagenet"
    assert resolve(resolve(vgg)) == resolve(vgg)  # resolving twice changes nothing


def test_the_paper_preset_is_the_papers_protocol() -> None:
    paper = resolve(TrainConfig(data="d", preset="paper"))
    assert (paper.max_epochs, paper.patience, paper.lr_schedule) == (50, 3, "none")
    assert (paper.batch_size, paper.learning_rate, paper.fractions) == (64, 1e-3, (0.7, 0.1, 0.2))
    # a flag still beats the preset
    assert resolve(TrainConfig(data="d", preset="paper", patience=6)).patience == 6
    vgg = resolve(TrainConfig(data="d", model="vgg16", preset="paper"))
    assert (vgg.max_epochs, vgg.patience, vgg.fractions) == (10, 3, (0.75, 0.125, 0.125))
    with pytest.raises(ValueError, match=r"no preset 'fast'.*default, paper"):
        resolve(TrainConfig(data="d", preset="fast"))
    with pytest.raises(ValueError, match="lr_schedule should be one of"):
        config_from_mapping({"data": "d", "lr_schedule": "cosine"})


def test_yaml_round_trip(tmp_path: Path) -> None:
    config = resolve(TrainConfig(data="d", augment=True, augmentation=AugmentConfig(rotation=5.0)))
    path = save_yaml(config, tmp_path / "config.yaml")
    assert config_from_mapping(load_yaml(path)) == config


def test_unknown_or_invalid_settings_are_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown training setting.*epoch.*valid settings"):
        config_from_mapping({"data": "d", "epoch": 3})
    with pytest.raises(ValueError, match="unknown augmentation setting"):
        config_from_mapping({"data": "d", "augmentation": {"shear": 3}})
    with pytest.raises(ValueError, match="balance should be one of"):
        config_from_mapping({"data": "d", "balance": "oversample"})
    with pytest.raises(ValueError, match="'data'"):
        config_from_mapping({"model": "seed-cnn"})
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match="expected a mapping"):
        load_yaml(tmp_path / "list.yaml")
    with pytest.raises(FileNotFoundError):
        load_yaml(tmp_path / "missing.yaml")


def test_flags_override_the_yaml_file(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from covidcxr.cli import app

    settings = tmp_path / "settings.yaml"
    settings.write_text("data: nowhere\nmodel: tiny-cnn\nmax_epochs: 7\nbalance: oversample\n")
    result = CliRunner().invoke(app, ["train", "--config", str(settings)])
    assert result.exit_code == 2 and "balance should be one of" in result.output
    result = CliRunner().invoke(
        app, ["train", "--config", str(settings), "--balance", "weights", "--quiet"]
    )
    # the flag fixed the YAML's bad value; the run then fails on the missing dataset
    assert result.exit_code == 2 and "nowhere" in result.output


def test_settings_for_run_merges_the_file_and_the_flags(tmp_path: Path) -> None:
    from covidcxr.training.config import settings_for_run

    yaml_file = tmp_path / "settings.yaml"
    yaml_file.write_text("data: from-file\nmodel: seed-cnn\nmax_epochs: 7\n")
    config = settings_for_run({"max_epochs": 3}, yaml_file)
    assert (config.data, config.model, config.max_epochs) == ("from-file", "seed-cnn", 3)
    assert settings_for_run({"data": "d"}, quiet=True).quiet is True

    with pytest.raises(ValueError, match="--data is required"):
        settings_for_run({})
    with pytest.raises(ValueError, match="--resume needs --out"):
        settings_for_run({}, resume=True)
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        settings_for_run({}, resume=True, out=tmp_path / "no-run")
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("data: saved\nmodel: tiny-cnn\n")
    assert settings_for_run({}, resume=True, out=run).data == "saved"
    with pytest.raises(ValueError, match=r"unet-lite is a segmentation model.*segment train"):
        settings_for_run({"data": "d", "model": "unet-lite"})
    with pytest.raises(ValueError, match="Available segmentation models"):
        settings_for_run({"data": "d", "model": "resnet"}, task="segmentation")
