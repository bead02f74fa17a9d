"""Lightning callbacks that make runs safe to kill and exactly repeatable."""

from __future__ import annotations

import csv
import os
import random
import time
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint


class AtomicModelCheckpoint(ModelCheckpoint):
    """ModelCheckpoint whose files are written to a temporary name and renamed into place, so a
    kill during a save leaves the previous checkpoint intact, never half a file."""

    def _save_checkpoint(self, trainer: pl.Trainer, filepath: str) -> None:
        target = Path(filepath)
        temporary = target.with_name(f".{target.name}.partial")
        trainer.save_checkpoint(temporary, self.save_weights_only)
        if trainer.is_global_zero:
            os.replace(temporary, target)
        trainer.strategy.barrier("atomic-checkpoint")
        self._last_global_step_saved = trainer.global_step
        self._last_checkpoint_saved = filepath
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.after_save_checkpoint(self)


class EpochSeeding(pl.Callback):
    """Re-seeds Python, NumPy and torch at the start of every training epoch from ``seed`` and
    the epoch number. Dropout masks and augmentations then depend only on (seed, epoch), so an
    interrupted run resumed from its last checkpoint ends with the same weights as an
    uninterrupted one."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        value = self.seed * 1_000_003 + trainer.current_epoch * 7_919 + trainer.global_rank
        value %= 2**31
        random.seed(value)
        np.random.seed(value)
        torch.manual_seed(value)


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
    """Writes one row per epoch to ``history.csv`` (rewritten atomically each epoch) and keeps
    the rows in checkpoints, so a resumed run continues the same file."""

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
        if trainer.is_global_zero:
            self._write()

    def _write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(f".{self.path.name}.partial")
        with temporary.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=history_columns(self.score))
            writer.writeheader()
            writer.writerows(self.rows)
        os.replace(temporary, self.path)

    def state_dict(self) -> dict:
        return {"rows": list(self.rows)}

    def load_state_dict(self, state_dict: dict) -> None:
        self.rows = list(state_dict.get("rows", []))
