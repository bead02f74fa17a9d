"""train / evaluate / predict / compare from the command line, multi-process DDP included."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import urllib.error
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from covidcxr.cli import app
from covidcxr.data.phantoms import write_phantoms

runner = CliRunner()


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli-phantoms") / "data"
    write_phantoms(root, per_class=20, seed=11)
    return root


def train_args(data: Path, out: Path, cache: Path, *extra: str) -> list[str]:
    return [
        "train", "--data", str(data), "--model", "tiny-cnn", "--out", str(out),
        "--epochs", "2", "--batch-size", "8", "--accelerator", "cpu", "--workers", "0",
        "--cache-dir", str(cache), "--quiet", *extra,
    ]  # fmt: skip


def test_train_evaluate_predict_compare(phantoms: Path, tmp_path: Path, real_dataset: Path) -> None:
    cache = tmp_path / "cache"
    first, second = tmp_path / "runs" / "plain", tmp_path / "runs" / "augmented"
    result = runner.invoke(app, train_args(phantoms, first, cache))
    assert result.exit_code == 0, result.output
    assert "tiny-cnn: 2 epochs" in result.output and "test" in result.output
    result = runner.invoke(app, train_args(phantoms, second, cache, "--augment", "--seed", "3"))
    assert result.exit_code == 0, result.output

    # --resume with more epochs extends a finished run
    result = runner.invoke(app, ["train", "--out", str(first), "--epochs", "3", "--resume"])
    assert result.exit_code == 0, result.output
    assert json.loads((first / "metrics.json").read_text())["epochs_run"] == 3

    result = runner.invoke(
        app,
        ["evaluate", str(first), "--data", str(phantoms), "--split", str(first / "splits.csv"),
         "--subset", "test", "--out", str(tmp_path / "eval"), "--workers", "0", "--quiet"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    evaluated = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    trained = json.loads((first / "metrics.json").read_text())
    assert evaluated["test"]["confusion_matrix"] == trained["test"]["confusion_matrix"]
    assert (tmp_path / "eval" / "confusion_matrix.png").is_file()

    predictions = tmp_path / "predictions.csv"
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "empty.png").touch()
    result = runner.invoke(
        app,
        ["predict", str(first / "model"), str(real_dataset), str(bad), "--out", str(predictions),
         "--workers", "0", "--quiet"],
    )  # fmt: skip
    assert result.exit_code == 1, result.output  # one input failed
    rows = list(csv.DictReader(predictions.open()))
    assert len(rows) == 44  # every real image; the masks/ folders are skipped
    for row in rows:
        total = sum(float(row[f"p_{name}"]) for name in ("Normal", "COVID", "Viral Pneumonia"))
        assert abs(total - 1) < 1e-4 and row["predicted"] in ("Normal", "COVID", "Viral Pneumonia")
    assert "empty.png" in result.output and "1 file skipped" in result.output

    result = runner.invoke(app, ["compare", str(first), str(second), "--out", str(tmp_path / "c")])
    assert result.exit_code == 0, result.output
    assert "plain" in result.output and "augmented" in result.output
    assert (tmp_path / "c" / "comparison.csv").is_file()
    assert (tmp_path / "c" / "confusion_matrices.png").is_file()


def test_offline_imagenet_weights_give_a_clear_error(
    phantoms: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_network(url: str, *args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("no network in tests")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    args = train_args(phantoms, tmp_path / "vgg", tmp_path / "cache")
    args[args.index("tiny-cnn")] = "vgg16"
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert "vgg16" in result.output and "--weights" in result.output


def test_unknown_model_suggests_the_closest(phantoms: Path, tmp_path: Path) -> None:
    args = train_args(phantoms, tmp_path / "x", tmp_path / "cache")
    args[args.index("tiny-cnn")] = "vgg-16"
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "vgg16" in result.output


@pytest.mark.slow
def test_two_process_ddp_run(phantoms: Path, tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    args = train_args(phantoms, out, tmp_path / "cache", "--devices", "2", "--strategy", "ddp")
    environment = os.environ | {"PYTHONWARNINGS": "ignore"}
    result = subprocess.run(
        [sys.executable, "-m", "covidcxr", *args],
        capture_output=True, text=True, timeout=600, env=environment,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["processes"] == 2  # two processes trained together
    assert metrics["epochs_run"] == 2 and metrics["test"]["num_samples"] > 0
    assert (out / "model" / "model.safetensors").is_file()


def test_a_class_without_images_is_refused_with_the_counts(tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_phantoms(data, per_class=8, seed=12)
    for image in (data / "Viral Pneumonia" / "images").glob("*.png"):
        image.unlink()
    out = tmp_path / "run"
    result = runner.invoke(app, train_args(data, out, tmp_path / "cache"))
    assert result.exit_code == 2, result.output
    assert "no Viral Pneumonia image" in result.output
    assert "Normal 5, COVID 5, Viral Pneumonia 0" in result.output.replace("\n", " ")
    assert not (out / "model").exists()
