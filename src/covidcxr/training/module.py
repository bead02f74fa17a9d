"""The one LightningModule behind every classifier covidcxr trains.

It receives its network from outside (any model of :mod:`covidcxr.models`) and trains either on
uint8 images, which it normalises itself, or on cached trunk features (``inputs="features"``),
where only the network's head runs.

Loss: cross-entropy (class-weighted with ``--balance weights``). The paper's L2 regulariser is
added to the training objective as ``l2_strength * sum(w ** 2)`` over the network's
``l2_parameters()`` (Keras' ``kernel_regularizer=l2(λ)``); the logged ``train_loss`` and
``val_loss`` are the cross-entropy alone, so the two curves compare like with like.
"""

from __future__ import annotations

from collections.abc import Sequence

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import nn

from covidcxr.inference.batched import normalise

FINE_TUNE_LR_SCALE = 0.1
"""Learning rate of fine-tuned pretrained trunk parts, relative to the head's."""


def reduce_totals(module: pl.LightningModule, totals: torch.Tensor) -> dict[str, float]:
    """(loss sum, score sum, images) summed over processes → mean loss, mean score, images."""
    loss_sum, score_sum, count = (
        float(v) for v in module.trainer.strategy.reduce(totals.clone(), reduce_op="sum")
    )
    count_safe = max(count, 1.0)
    return {"loss": loss_sum / count_safe, "score": score_sum / count_safe, "images": count}


def with_schedule(optimizer: torch.optim.Optimizer, schedule: str) -> torch.optim.Optimizer:
    """What ``configure_optimizers`` returns for ``schedule`` (see
    :data:`covidcxr.training.config.LR_SCHEDULES`): the optimizer. A ``plateau`` schedule is stepped
    by :class:`covidcxr.training.callbacks.PlateauSchedule`, not by Lightning: Lightning steps an
    epoch scheduler after the epoch's checkpoint is written and skips that step in the first
    epoch after a resume, so a resumed run would lower its learning rate one epoch late."""
    if schedule not in ("none", "plateau"):
        raise ValueError(f"lr_schedule should be 'none' or 'plateau', got {schedule!r}")
    return optimizer


PLATEAU_FACTOR = 0.2
PLATEAU_PATIENCE = 2


class ClassifierModule(pl.LightningModule):
    """Trains ``network`` with Adam; logs ``val_loss`` / ``val_accuracy`` per epoch (what early
    stopping and checkpoints monitor) and keeps the epoch's training totals."""

    score_name = "accuracy"

    def __init__(
        self,
        network: nn.Module,
        *,
        learning_rate: float,
        mean: Sequence[float],
        std: Sequence[float],
        inputs: str = "images",
        class_weights: torch.Tensor | None = None,
        channels_last: bool = False,
        lr_schedule: str | None = "none",
    ) -> None:
        super().__init__()
        self.lr_schedule = lr_schedule or "none"
        if inputs not in ("images", "features"):
            raise ValueError(f"inputs should be 'images' or 'features', got {inputs!r}")
        self.network = network
        self.learning_rate = learning_rate
        self.mean, self.std = tuple(mean), tuple(std)
        self.inputs = inputs
        self.channels_last = channels_last
        self.l2_strength = float(getattr(network, "l2_strength", 0.0))
        self.register_buffer("class_weights", class_weights, persistent=False)
        # loss sum, correct predictions, images: this epoch's training totals (see EpochHistory)
        self.register_buffer("train_totals", torch.zeros(3, dtype=torch.float64), persistent=False)

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, C)`` of uint8 images ``(B, 1, H, W)`` or of features ``(B, D)``."""
        if self.inputs == "features":
            return self.network.forward_head(batch)
        return self.network(normalise(batch, self.mean, self.std, 3, self.channels_last))

    def _step(self, batch: dict, stage: str) -> torch.Tensor:
        labels = batch["label"]
        logits = self(batch["image"])
        loss = F.cross_entropy(logits, labels, weight=self.class_weights)
        correct = (logits.argmax(dim=1) == labels).sum()
        size = len(labels)
        if stage == "train":
            self.train_totals += torch.stack(
                [loss.detach().double() * size, correct.double(), torch.tensor(size).double()]
            )
            self.log("train_loss", loss, on_step=True, on_epoch=False, prog_bar=True)
        else:
            for name, value in (("loss", loss), ("accuracy", correct.float() / size)):
                self.log(f"{stage}_{name}", value, on_epoch=True, batch_size=size, sync_dist=True)
        return loss

    def on_train_epoch_start(self) -> None:
        self.train_totals.zero_()

    def epoch_train_summary(self) -> dict[str, float]:
        """This epoch's mean training loss, score (accuracy) and image count, over all
        processes."""
        return reduce_totals(self, self.train_totals)

    def training_step(self, batch: dict, batch_index: int) -> torch.Tensor:
        loss = self._step(batch, "train")
        if self.l2_strength and self.inputs == "images":
            penalty = sum(w.pow(2).sum() for w in self.network.l2_parameters())
            loss = loss + self.l2_strength * penalty
        return loss

    def validation_step(self, batch: dict, batch_index: int) -> None:
        self._step(batch, "val")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """Adam; pretrained trunk parts being fine-tuned learn at a tenth of the rate of the
        new head, so the first epochs' large head gradients do not wash out what they know."""
        pretrained = bool(getattr(getattr(self.network, "spec", None), "frozen_trunk", False))
        trunk, rest = [], []
        for name, parameter in self.network.named_parameters():
            if parameter.requires_grad:
                (trunk if pretrained and name.startswith("trunk.") else rest).append(parameter)
        groups = [{"params": rest, "lr": self.learning_rate}]
        if trunk:
            groups.append({"params": trunk, "lr": self.learning_rate * FINE_TUNE_LR_SCALE})
        optimizer = torch.optim.Adam(groups, lr=self.learning_rate)
        return with_schedule(optimizer, self.lr_schedule)
