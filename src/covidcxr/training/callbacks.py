"""Lightning callbacks that make runs safe to kill and exactly repeatable."""

from __future__ import annotations

import csv
import os
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from covidcxr.atomic import partial_path, replacing


class AtomicModelCheckpoint(ModelCheckpoint):
    """ModelCheckpoint whose files are written to a temporary name and renamed into place, so a
    kill during a save leaves the previous checkpoint intact, never half a file.

    ``after_last`` are called (on rank 0) once ``last.ckpt`` is in place: what records an epoch
    as done (``history.csv``) is written only after the checkpoint that holds it, so a kill
    between the two can never leave an epoch listed that a resume would run again."""

    def __init__(self, *args: Any, after_last: Sequence[Callable[[], None]] = (), **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.after_last = list(after_last)

    def _save_checkpoint(self, trainer: pl.Trainer, filepath: str) -> None:
        target = Path(filepath)
        temporary = partial_path(target)
        trainer.save_checkpoint(temporary, self.save_weights_only)
        if trainer.is_global_zero:
            os.replace(temporary, target)
            if target.name == f"{self.CHECKPOINT_NAME_LAST}{self.FILE_EXTENSION}":
                for call in self.after_last:
                    call()
        trainer.strategy.barrier("atomic-checkpoint")
        self._last_global_step_saved = trainer.global_step
        self._last_checkpoint_saved = filepath
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.after_save_checkpoint(self)


class EpochSeeding(pl.Callback):
    """Re-seeds Python, NumPy and torch at the start of every training epoch and again before
    every training batch, from ``seed``, the epoch and the batch number. Dropout masks then
    depend on nothing else (augmentations draw from per-image seeds, see
    :class:`covidcxr.training.data.EpochShuffleSampler`), so a run resumed from its last
    checkpoint ends with the same weights as an uninterrupted one, bit for bit on CPU.

    Seeding per batch, not only per epoch, matters: what else draws from the global generator
    between the epoch's start and its first batch differs in a resumed process (the data
    loader's iterator is created at another moment and takes its base seed from it)."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._seed(trainer, -1)

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._seed(trainer, batch_idx)

    def _seed(self, trainer: pl.Trainer, batch: int) -> None:
        value = self.seed * 1_000_003 + trainer.current_epoch * 7_919 + trainer.global_rank
        value = (value * 100_019 + batch + 1) % 2**31
        random.seed(value)
        np.random.seed(value)
        torch.manual_seed(value)


class PlateauSchedule(pl.Callback):
    """Divides every learning rate by ``1 / factor`` when ``patience`` + 1 validations in a
    row bring no lower ``val_loss`` (``torch.optim.lr_scheduler.ReduceLROnPlateau``).

    Stepped right after each validation, before the epoch's checkpoint is written, and kept in
    the checkpoint (this callback's state), so a resumed run lowers its rates exactly when an
    uninterrupted one would; Lightning's own scheduler handling steps after the checkpoint
    and skips the step in the first epoch after a resume."""

    def __init__(self, factor: float, patience: int) -> None:
        self.factor, self.patience = factor, patience
        self.scheduler: torch.optim.lr_scheduler.ReduceLROnPlateau | None = None
        self._loaded: dict | None = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            trainer.optimizers[0], mode="min", factor=self.factor, patience=self.patience
        )
        if self._loaded is not None:
            self.scheduler.load_state_dict(self._loaded)
            self._loaded = None

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or self.scheduler is None:
            return
        self.scheduler.step(float(trainer.callback_metrics["val_loss"]))

    def state_dict(self) -> dict:
        return (
            self.scheduler.state_dict() if self.scheduler is not None else dict(self._loaded or {})
        )

    def load_state_dict(self, state_dict: dict) -> None:
        self._loaded = dict(state_dict) if state_dict else None


HISTORY_FILE = "history.csv"


def history_columns(score: str) -> tuple[str, ...]:
    """history.csv's columns for a module whose quality score is ``score`` (accuracy, dice)."""
    return (
        "epoch",
        "train_loss",
        f"train_{score}",
        "val_loss",
        f"val_{score}",
        "train_seconds",
        "train_images_per_second",
    )


class EpochHistory(pl.Callback):
    """Keeps one row per epoch, in checkpoints too (so a resumed run continues the same rows),
    and writes them to ``history.csv`` atomically: after each ``last.ckpt`` (see
    :class:`AtomicModelCheckpoint`) and when training ends."""

    def __init__(self, path: Path, score: str = "accuracy") -> None:
        self.path = Path(path)
        self.score = score
        self.rows: list[dict[str, float]] = []
        self._started = 0.0
        self._train_seconds = 0.0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._started = time.perf_counter()

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._train_seconds = time.perf_counter() - self._started

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        train = pl_module.epoch_train_summary()
        metrics = trainer.callback_metrics
        seconds = self._train_seconds
        row = {
            "epoch": trainer.current_epoch + 1,
            "train_loss": train["loss"],
            f"train_{self.score}": train["score"],
            "val_loss": float(metrics["val_loss"]),
            f"val_{self.score}": float(metrics[f"val_{self.score}"]),
            "train_seconds": seconds,
            "train_images_per_second": train["images"] / seconds if seconds > 0 else 0.0,
        }
        self.rows = [r for r in self.rows if r["epoch"] < row["epoch"]] + [row]

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero and self.rows:
            self.write()

    def write(self) -> None:
        """Rewrite ``history.csv`` atomically (:class:`AtomicModelCheckpoint` calls this once
        ``last.ckpt`` holds the rows)."""
        with replacing(self.path) as temporary, temporary.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=history_columns(self.score))
            writer.writeheader()
            writer.writerows(self.rows)

    def state_dict(self) -> dict:
        return {"rows": list(self.rows)}

    def load_state_dict(self, state_dict: dict) -> None:
        self.rows = list(state_dict.get("rows", []))


class EpochLines(pl.Callback):
    """One plain line per epoch through ``log`` (rank 0 only): what a log file or a quiet run
    shows instead of progress bars. Reads the row :class:`EpochHistory` has just added, so it
    goes after it in the callback list. A ``*`` marks an epoch with the lowest validation loss
    so far (the one the best checkpoint keeps)."""

    def __init__(self, history: EpochHistory, log: Callable[[str], None]) -> None:
        self.history = history
        self._write = log  # not ``self.log``: Lightning binds that name to the module's log()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero or not self.history.rows:
            return
        row, score = self.history.rows[-1], self.history.score
        best = min(r["val_loss"] for r in self.history.rows) == row["val_loss"]
        name = "accuracy" if score == "accuracy" else score
        self._write(
            f"epoch {row['epoch']:>3}/{trainer.max_epochs}  "
            f"train loss {row['train_loss']:.4f} {name} {_percent(row[f'train_{score}'])}  "
            f"val loss {row['val_loss']:.4f} {name} {_percent(row[f'val_{score}'])}  "
            f"{row['train_seconds']:.1f} s{'  *' if best else ''}"
        )


def _percent(value: float) -> str:
    return f"{100 * value:.2f} %"
