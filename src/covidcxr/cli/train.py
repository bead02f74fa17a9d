"""``covidcxr train`` and ``covidcxr segment train``: the only commands that reach the
training engine."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from covidcxr.cli.app import AllowOutside, Quiet, Workers, app, segment_app
from covidcxr.cli.common import (
    ProgressBars,
    fail,
)


def _train_overrides(**flags: object) -> dict[str, object]:
    """The flags the user actually gave (None means "not given")."""
    return {key: value for key, value in flags.items() if value is not None}


def _devices(value: str | None) -> int | str | None:
    if value is None:
        return None
    return int(value) if value.lstrip("-").isdigit() else value


@app.command("train")
def train_command(
    data: Annotated[
        Path | None,
        typer.Option(
            help="Dataset folder (any layout) or CSV manifest. Required, unless --config or "
            "--resume gives it."
        ),
    ] = None,
    model: Annotated[
        str | None, typer.Option(help="Model name (see `covidcxr models`). Default seed-cnn.")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Run folder (default runs/MODEL).")] = None,
    config_file: Annotated[
        Path | None, typer.Option("--config", help="YAML file of settings; flags override it.")
    ] = None,
    augment: Annotated[
        bool | None,
        typer.Option("--augment/--no-augment", help="Random rotation, shift, zoom and flip."),
    ] = None,
    balance: Annotated[
        str | None, typer.Option(help="Class imbalance: none, weights (loss) or sampler.")
    ] = None,
    lungs: Annotated[
        str | None,
        typer.Option(help="What the classifier sees: none, crop (lung box) or mask (lungs only)."),
    ] = None,
    seg_model: Annotated[
        Path | None,
        typer.Option(help="Lung segmentation model for --lungs (default: the dataset's masks)."),
    ] = None,
    feature_cache: Annotated[
        bool | None,
        typer.Option(
            "--feature-cache/--no-feature-cache",
            help="Frozen backbones without --augment: run the backbone once per image.",
        ),
    ] = None,
    fine_tune: Annotated[
        int | None,
        typer.Option(help="Pretrained backbones: also train the last N parts of the trunk."),
    ] = None,
    epochs: Annotated[int | None, typer.Option(help="Most epochs (paper: 50; VGG16 10).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Batch size (paper: 64).")] = None,
    learning_rate: Annotated[float | None, typer.Option(help="Adam learning rate.")] = None,
    lr_schedule: Annotated[
        str | None,
        typer.Option(help="none, or plateau (divide by 5 when 3 epochs bring no progress)."),
    ] = None,
    patience: Annotated[
        int | None, typer.Option(help="Early stopping: epochs without a lower val loss.")
    ] = None,
    preset: Annotated[
        str | None,
        typer.Option(help="default, or paper: the paper's own protocol (seed-cnn: patience 3)."),
    ] = None,
    fractions: Annotated[
        str | None, typer.Option(help="Train,val,test fractions (paper: 0.7,0.1,0.2).")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed (split, init, batches).")] = None,
    split: Annotated[
        Path | None, typer.Option(help="Use this split CSV (from `data split`) instead.")
    ] = None,
    weights: Annotated[
        str | None,
        typer.Option(help="Trunk weights: imagenet, none, or a local file (offline machines)."),
    ] = None,
    classes: Annotated[int | None, typer.Option("--classes", help="3 or 4 classes.")] = None,
    accelerator: Annotated[str | None, typer.Option(help="auto, cpu, gpu...")] = None,
    devices: Annotated[str | None, typer.Option(help="Devices per node: 1, 2, auto...")] = None,
    strategy: Annotated[str | None, typer.Option(help="auto, ddp, ddp_spawn...")] = None,
    num_nodes: Annotated[int | None, typer.Option(help="Machines (multi-node DDP).")] = None,
    precision: Annotated[str | None, typer.Option(help="32-true, bf16-mixed, 16-mixed.")] = None,
    workers: Workers = None,
    cache_dir: Annotated[Path | None, typer.Option(help="Image cache folder.")] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the run in --out from its last checkpoint.")
    ] = False,
    allow_outside: AllowOutside = False,
    quiet: Quiet = False,
) -> None:
    """Train a classifier (the paper's models and stronger backbones) with early stopping,
    checkpoints, curves, confusion matrix, metrics and a saved model."""
    parts = None
    if fractions is not None:
        try:
            parts = [float(part) for part in fractions.split(",")]
        except ValueError:
            raise fail(
                f"--fractions should be numbers like 0.7,0.1,0.2, got {fractions!r}"
            ) from None
    flags = _train_overrides(
        data=None if data is None else str(data),
        model=model,
        out=None if out is None else str(out),
        augment=augment,
        balance=balance,
        lungs=lungs,
        seg_model=None if seg_model is None else str(seg_model),
        feature_cache=feature_cache,
        fine_tune=fine_tune,
        max_epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        lr_schedule=lr_schedule,
        patience=patience,
        preset=preset,
        fractions=parts,
        seed=seed,
        split=None if split is None else str(split),
        weights=weights,
        num_classes=classes,
        accelerator=accelerator,
        devices=_devices(devices),
        strategy=strategy,
        num_nodes=num_nodes,
        precision=precision,
        decode_workers=workers,
        cache_dir=None if cache_dir is None else str(cache_dir),
        allow_outside=allow_outside or None,
    )
    _run_training(flags, config_file, resume, out, quiet, task="classification")


def _run_training(
    flags: dict[str, object],
    config_file: Path | None,
    resume: bool,
    out: Path | None,
    quiet: bool,
    task: str,
) -> None:
    """Settings from the YAML file (the run's own on --resume) overridden by the flags given,
    then the training engine, with Lightning's chatter quieted."""
    from covidcxr.training.config import settings_for_run

    try:
        config = settings_for_run(flags, config_file, resume, out, quiet, task)
    except (FileNotFoundError, ValueError) as error:
        raise fail(str(error)) from None

    from covidcxr.models import WeightsUnavailableError
    from covidcxr.training.train import train  # quiets Lightning's chatter itself

    bars = ProgressBars(config.quiet)
    try:
        train(config, resume=resume, progress_factory=bars, log=typer.echo)
    except (FileNotFoundError, FileExistsError, ValueError, WeightsUnavailableError) as error:
        raise fail(str(error)) from None
    finally:
        bars.close()


@segment_app.command("train")
def segment_train(
    data: Annotated[
        Path | None,
        typer.Option(
            help="Dataset folder with lung masks (or a manifest). Required, unless --config or "
            "--resume gives it."
        ),
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Run folder (default runs/unet).")] = None,
    model: Annotated[str, typer.Option(help="Segmentation model.")] = "unet",
    config_file: Annotated[
        Path | None, typer.Option("--config", help="YAML file of settings; flags override it.")
    ] = None,
    epochs: Annotated[int | None, typer.Option(help="Most epochs (default 30).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Batch size (default 8).")] = None,
    learning_rate: Annotated[float | None, typer.Option(help="Adam learning rate.")] = None,
    patience: Annotated[
        int | None, typer.Option(help="Early stopping: epochs without a lower val loss.")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed.")] = None,
    split: Annotated[Path | None, typer.Option(help="Use this split CSV.")] = None,
    augment: Annotated[
        bool | None,
        typer.Option(
            "--augment/--no-augment",
            help="Random flips, zoom, rotation, shift and exposure (image and mask alike).",
        ),
    ] = None,
    postprocess: Annotated[
        bool | None,
        typer.Option(
            "--postprocess/--no-postprocess",
            help="Keep the two largest lung parts and fill holes (measured both ways).",
        ),
    ] = None,
    accelerator: Annotated[str | None, typer.Option(help="auto, cpu, gpu...")] = None,
    devices: Annotated[str | None, typer.Option(help="Devices per node.")] = None,
    strategy: Annotated[str | None, typer.Option(help="auto, ddp...")] = None,
    workers: Workers = None,
    cache_dir: Annotated[Path | None, typer.Option(help="Image cache folder.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out.")] = False,
    allow_outside: AllowOutside = False,
    quiet: Quiet = False,
) -> None:
    """Train a lung U-Net on the dataset's own masks (any mask size, grey or RGB)."""
    flags = _train_overrides(
        data=None if data is None else str(data),
        model=model if not resume else None,
        out=str(out or Path("runs") / model),
        max_epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        patience=patience,
        seed=seed,
        split=None if split is None else str(split),
        augment=augment,
        postprocess=postprocess,
        accelerator=accelerator,
        devices=_devices(devices),
        strategy=strategy,
        decode_workers=workers,
        cache_dir=None if cache_dir is None else str(cache_dir),
        allow_outside=allow_outside or None,
    )
    _run_training(flags, config_file, resume, out, quiet, task="segmentation")
