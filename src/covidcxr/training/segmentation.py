"""Lung segmentation on the same engine: the LightningModule, its data, and its outputs.

The U-Net sees grey images and lung masks at its input size (256×256; the database's own mask
size), both through the on-disk cache. Loss: Dice + binary cross-entropy (MONAI's DiceCELoss on
one sigmoid channel). ``val_loss`` drives early stopping and checkpoints, as for classifiers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from covidcxr.data.sample import Sample
from covidcxr.inference.batched import normalise, predict_probabilities
from covidcxr.training.data import batch_identity, checked_samples
from covidcxr.training.module import reduce_totals
from covidcxr.wording import plural


class SegmentationModule(pl.LightningModule):
    """Trains a segmentation ``network`` (logits (B, 1, H, W)) with Adam on uint8 images and
    0/1 masks; logs ``val_loss`` and ``val_dice`` (thresholded at 0.5) per epoch."""

    score_name = "dice"

    def __init__(
        self,
        network: nn.Module,
        *,
        learning_rate: float,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        lr_schedule: str | None = "none",
    ) -> None:
        super().__init__()
        from monai.losses import DiceCELoss

        self.lr_schedule = lr_schedule or "none"
        self.network = network
        self.learning_rate = learning_rate
        self.mean, self.std = tuple(mean), tuple(std)
        self.loss = DiceCELoss(sigmoid=True)
        self.register_buffer("train_totals", torch.zeros(3, dtype=torch.float64), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.network(normalise(images, self.mean, self.std, channels=1))

    def _step(self, batch: dict, stage: str) -> torch.Tensor:
        logits = self(batch["image"])
        target = batch["mask"].float()
        loss = self.loss(logits, target)
        dice = hard_dice(logits > 0, target > 0.5)
        size = len(target)
        if stage == "train":
            self.train_totals += torch.stack(
                [loss.detach().double() * size, dice.sum().double(), torch.tensor(size).double()]
            )
            self.log("train_loss", loss, on_step=True, on_epoch=False, prog_bar=True)
        else:
            self.log("val_loss", loss, on_epoch=True, batch_size=size, sync_dist=True)
            self.log("val_dice", dice.mean(), on_epoch=True, batch_size=size, sync_dist=True)
        return loss

    def on_train_epoch_start(self) -> None:
        self.train_totals.zero_()

    def epoch_train_summary(self) -> dict[str, float]:
        return reduce_totals(self, self.train_totals)

    def training_step(self, batch: dict, batch_index: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: dict, batch_index: int) -> None:
        self._step(batch, "val")

    def configure_optimizers(self) -> object:
        from covidcxr.training.module import with_schedule

        optimizer = torch.optim.Adam(self.parameters(), lr=self.learning_rate)
        return with_schedule(optimizer, self.lr_schedule)


def hard_dice(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image Dice ``(B,)`` of bool masks (B, 1, H, W); two empty masks score 1."""
    dims = tuple(range(1, prediction.ndim))
    overlap = (prediction & target).sum(dim=dims).float()
    total = prediction.sum(dim=dims).float() + target.sum(dim=dims).float()
    return torch.where(total > 0, 2 * overlap / total.clamp(min=1), torch.ones_like(total))


class SegmentationDataset(Dataset):
    """Batches ``{"image": uint8 (B, 1, H, W), "mask": uint8 (B, 1, H, W), "index"}`` (with
    ``samples``, the images' ``path``, ``group`` and ``source`` too); with ``flip`` a random
    half of each batch is mirrored left-right (image and mask together), and with ``augment``
    each image is also warped and re-exposed (:func:`augment_pairs`)."""

    def __init__(
        self,
        images: torch.Tensor,
        masks: torch.Tensor,
        flip: bool = False,
        augment: bool = False,
        samples: Sequence[Sample] | None = None,
    ) -> None:
        self.images, self.masks, self.flip, self.augment = images, masks, flip, augment
        self.samples = checked_samples(samples, len(images))

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        batch = self.__getitems__([key])
        return {name: value[0] for name, value in batch.items()}

    def __getitems__(self, keys: list) -> dict[str, Any]:
        pairs = [key if isinstance(key, tuple) else (key, None) for key in keys]
        index = torch.tensor([i for i, _ in pairs])
        images, masks = self.images[index], self.masks[index]
        if self.flip:
            # the sampler's per-sample seeds decide the flips: resumed runs flip the same way
            flips = torch.tensor([(seed or 0) % 2 == 1 for _, seed in pairs])
            images = torch.where(flips.view(-1, 1, 1, 1), images.flip(-1), images)
            masks = torch.where(flips.view(-1, 1, 1, 1), masks.flip(-1), masks)
        if self.augment:
            images, masks = augment_pairs(images, masks, [seed or 0 for _, seed in pairs])
        batch = {"image": images, "mask": masks, "index": index}
        return batch | batch_identity(self.samples, index.tolist())


# Ranges of augment_pairs. The database's lung masks are all paediatric films (Viral
# Pneumonia), which show more of the body around smaller lungs than adult films; zooming in
# up to 1.4x, turning and shifting them, and redrawing their exposure makes a model trained
# on them outline adult lungs too (measured on the real sample's adult films: see README).
SEG_ZOOM = (0.85, 1.4)
SEG_ROTATION = 12.0
SEG_SHIFT = 0.08
SEG_GAMMA = (0.6, 1.6)
SEG_CONTRAST = (0.75, 1.25)


def augment_pairs(
    images: torch.Tensor, masks: torch.Tensor, seeds: list[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Warp each image and its mask alike (zoom, rotation, shift: one affine map; bilinear for
    the image, nearest for the mask, black outside) and redraw the image's exposure (gamma,
    contrast). uint8 (B, 1, H, W) in and out; every draw comes from the sample's seed, so a
    resumed run augments exactly as an uninterrupted one."""
    import math

    import torch.nn.functional as F

    count = len(seeds)
    draws = torch.empty((count, 6), dtype=torch.float64)
    for row, seed in enumerate(seeds):
        generator = torch.Generator().manual_seed(int(seed) % (2**63))
        draws[row] = torch.rand(6, generator=generator, dtype=torch.float64)
    zoom = SEG_ZOOM[0] + (SEG_ZOOM[1] - SEG_ZOOM[0]) * draws[:, 0]
    angle = torch.deg2rad((2 * draws[:, 1] - 1) * SEG_ROTATION)
    shift = (2 * draws[:, 2:4] - 1) * SEG_SHIFT * 2  # grid coordinates span 2
    low, high = math.log(SEG_GAMMA[0]), math.log(SEG_GAMMA[1])
    gamma = torch.exp(low + (high - low) * draws[:, 4])
    contrast = SEG_CONTRAST[0] + (SEG_CONTRAST[1] - SEG_CONTRAST[0]) * draws[:, 5]
    # output -> input sampling map: rotate by angle and shrink by zoom (zoom > 1 magnifies)
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack(
        [torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1
    ).float()
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    warped = F.grid_sample(images.float() / 255, grid, mode="bilinear", align_corners=False)
    warped_masks = F.grid_sample(masks.float(), grid, mode="nearest", align_corners=False)
    exposed = warped.clamp(0, 1).pow(gamma.float().view(-1, 1, 1, 1))
    mean = exposed.mean(dim=(1, 2, 3), keepdim=True)
    exposed = ((exposed - mean) * contrast.float().view(-1, 1, 1, 1) + mean).clamp(0, 1)
    out_images = (exposed * 255).round().to(torch.uint8)
    return out_images, (warped_masks > 0.5).to(masks.dtype)


def evaluate_masks(
    probabilities: torch.Tensor,
    masks: torch.Tensor,
    threshold: float = 0.5,
) -> dict[str, Any]:
    """Dice / IoU / HD95 of thresholded ``probabilities`` (N, H, W) against 0/1 ``masks``
    (N, 1, H, W), raw and after :func:`covidcxr.data.postprocess.postprocess_lungs`."""
    from covidcxr.analysis.segmentation_metrics import segmentation_metrics
    from covidcxr.data.postprocess import postprocess_lungs

    predicted = (probabilities >= threshold).numpy()
    truth = masks[:, 0].numpy().astype(bool)
    cleaned = (
        np.stack([postprocess_lungs(mask) for mask in predicted]) if len(predicted) else predicted
    )
    return {
        "raw": segmentation_metrics(predicted, truth),
        "postprocessed": segmentation_metrics(cleaned, truth),
    }


def prior_mask_baseline(train_masks: torch.Tensor, test_masks: torch.Tensor) -> float:
    """Dice of a fixed guess — the pixels that are lung in at least half of the training masks
    — on the test masks: what a model must beat to have learned anything."""
    from covidcxr.analysis.segmentation_metrics import segmentation_metrics

    prior = train_masks[:, 0].float().mean(dim=0) >= 0.5
    guesses = prior.expand(len(test_masks), -1, -1).numpy()
    return float(segmentation_metrics(guesses, test_masks[:, 0].numpy().astype(bool))["dice"])


def setup_segmentation(config, spec, run_dir, progress_factory, log):
    """The segmentation :class:`~covidcxr.training.run.Job`: images and masks of the split,
    the U-Net, and a ``finish`` that scores the test split (raw and post-processed), draws the
    worst cases and saves the model."""
    from torch.utils.data import DataLoader

    from covidcxr.models import create_model
    from covidcxr.training.data import EpochShuffleSampler, batched, describe_splits, prepare_data
    from covidcxr.training.run import METRICS_FILE, Job

    data = prepare_data(config, spec.input_size, run_dir, progress_factory, with_masks=True)
    log(f"Split of the images with lung masks ({data.split_file}):\n{describe_splits(data)}")
    if data.unreadable:
        log(
            f"{plural(len(data.unreadable), 'unreadable file')} (images or masks) left out "
            f"({METRICS_FILE})"
        )
    torch.manual_seed(config.seed)
    network = create_model(config.model, weights=None)
    module = SegmentationModule(
        network,
        learning_rate=config.learning_rate,
        mean=spec.mean,
        std=spec.std,
        lr_schedule=config.lr_schedule,
    )
    train, val = data.splits["train"], data.splits["val"]
    common = {
        "batch_size": config.batch_size,
        "num_workers": config.loader_workers,
        "persistent_workers": config.loader_workers > 0,
        "collate_fn": batched,
    }
    loaders = (
        DataLoader(
            SegmentationDataset(
                train.images,
                train.masks,
                flip=config.augment,
                augment=config.augment,
                samples=train.samples,
            ),
            sampler=EpochShuffleSampler(len(train), config.seed),
            **common,
        ),
        DataLoader(
            SegmentationDataset(val.images, val.masks, samples=val.samples),
            shuffle=False,
            **common,
        ),
    )

    def finish(rows: list[dict[str, float]]) -> dict[str, Any]:
        return _finish(config, spec, network, data, rows, run_dir)

    return Job(network, module, loaders, finish, _summary)


def _finish(config, spec, network, data, rows, run_dir) -> dict[str, Any]:
    from covidcxr.analysis.segmentation import plot_worst_cases
    from covidcxr.data.postprocess import postprocess_lungs
    from covidcxr.inference.artifact import ModelCard, save_classifier

    scores: dict[str, Any] = {}
    for name in ("val", "test"):
        split = data.splits[name]
        if len(split) == 0:
            scores[name] = None
            continue
        probabilities = predict_probabilities(network, split.images, spec.mean, spec.std)
        scores[name] = evaluate_masks(probabilities, split.masks)
        if name == "test":
            predicted = [(p >= 0.5).numpy() for p in probabilities]
            if config.postprocess:
                predicted = [postprocess_lungs(mask) for mask in predicted]
            kind = "postprocessed" if config.postprocess else "raw"
            per_image = [r["dice"] for r in scores["test"][kind]["per_image"]]
            plot_worst_cases(
                split.images[:, 0].numpy(),
                split.masks[:, 0].numpy().astype(bool),
                predicted,
                per_image,
                [s.path.name for s in split.samples],
                run_dir / "worst_cases.png",
            )
    kind = "postprocessed" if config.postprocess else "raw"
    best = min(rows, key=lambda r: r["val_loss"]) if rows else {}
    speeds = sorted(r["train_images_per_second"] for r in rows)
    test = scores["test"]
    metrics = {
        "model": config.model,
        "task": "segmentation",
        "epochs_run": len(rows),
        "best_epoch": int(best.get("epoch", 0)),
        "stopped_early": len(rows) < config.max_epochs,
        "postprocess": config.postprocess,
        "test_dice": test[kind]["dice"] if test else None,
        "test_iou": test[kind]["iou"] if test else None,
        "test_hd95": test[kind]["hd95"] if test else None,
        "baseline_prior_mask_dice": (
            prior_mask_baseline(data.splits["train"].masks, data.splits["test"].masks)
            if test
            else None
        ),
        "val": scores["val"],
        "test": test,
        "split_sizes": {name: len(split) for name, split in data.splits.items()},
        "train_images_per_second": speeds[len(speeds) // 2] if speeds else None,
        "unreadable": [{"path": str(p), "reason": r} for p, r in data.unreadable],
    }
    from covidcxr.training.run import training_data_record

    card = ModelCard.from_spec(
        spec,
        ["lung"],
        postprocess=config.postprocess,
        config=config.to_dict(),
        metrics={
            k: metrics[k]
            for k in ("test_dice", "test_iou", "test_hd95", "best_epoch", "epochs_run")
        },
        name=run_dir.resolve().name,
        training_data=training_data_record(config, data),
    )
    save_classifier(run_dir / "model", network, card)
    return metrics


def _summary(metrics: dict[str, Any]) -> str:
    def number(value: float | None, scale: float = 1.0, unit: str = "") -> str:
        return "n/a" if value is None else f"{value * scale:.3f}{unit}"

    test = metrics["test"]
    lines = [
        f"{metrics['model']}: {metrics['epochs_run']} epochs (best {metrics['best_epoch']}), "
        f"test Dice {number(metrics['test_dice'])}, IoU {number(metrics['test_iou'])}, "
        f"HD95 {number(metrics['test_hd95'], unit=' px')}"
    ]
    if test:
        lines.append(
            f"  post-processing (two largest parts, holes filled): Dice "
            f"{test['raw']['dice']:.4f} raw -> {test['postprocessed']['dice']:.4f}; "
            f"a fixed prior mask scores {metrics['baseline_prior_mask_dice']:.4f}"
        )
    return "\n".join(lines)
