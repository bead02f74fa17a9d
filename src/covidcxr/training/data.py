"""From a dataset folder to in-memory tensors for training: split, cache, augmentation, balance.

Images are decoded once into the on-disk cache (:mod:`covidcxr.data.cache`) and held in memory
as uint8 ``(N, 1, H, W)``: 21,165 images at 100×100 take 212 MB, at 224×224 1.06 GB.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler, default_collate

from covidcxr.data.sample import Sample
from covidcxr.training.config import AugmentConfig, TrainConfig

SPLIT_FILE = "splits.csv"


@dataclass
class SplitTensors:
    """One split held in memory: uint8 images ``(N, 1, H, W)``, int64 labels ``(N,)``."""

    images: torch.Tensor
    labels: torch.Tensor
    samples: list[Sample]
    masks: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class PreparedData:
    """The three splits of a run, the class names, and what could not be used."""

    class_names: tuple[str, ...]
    splits: dict[str, SplitTensors]
    split_file: Path
    unreadable: list[tuple[Path, str]]


def _require_every_class(
    config: TrainConfig, names: tuple[str, ...], train_labels: torch.Tensor
) -> None:
    """A classifier cannot learn a class it never sees: refuse, with the counts, when the
    training split holds no image of one of the ``config.num_classes`` classes."""
    counts = torch.bincount(train_labels, minlength=len(names)).tolist()
    missing = [name for name, count in zip(names, counts, strict=True) if count == 0]
    if missing:
        listed = ", ".join(f"{name} {count:,}" for name, count in zip(names, counts, strict=True))
        raise ValueError(
            f"{config.data}: the training split has no {' or '.join(missing)} image, so the "
            f"model could not learn {'that class' if len(missing) == 1 else 'those classes'} "
            f"(training images per class: {listed}). Add images of every class"
            + (
                ", or train on three classes (--classes 3 leaves Lung Opacity out)."
                if missing == [names[-1]] and len(names) == 4
                else "."
            )
        )


def prepare_data(
    config: TrainConfig,
    input_size: int,
    run_dir: Path,
    progress_factory: Callable[[str], Callable[[int, int], None] | None] = lambda _: None,
    with_masks: bool = False,
) -> PreparedData:
    """Split (or reuse the run's / the given split), then load every image through the cache.

    The split file is ``run_dir/splits.csv``; an existing one is reused (that is how ``--resume``
    and the extra processes of a multi-device run see the same split). ``config.split`` names a
    split CSV of the user's own, read against the dataset's root. ``with_masks`` (segmentation)
    keeps only the images that have a lung mask and loads the masks too (0/1 uint8).
    """
    from covidcxr.data.cache import ImageCache
    from covidcxr.data.classes import class_names
    from covidcxr.data.layouts import discover
    from covidcxr.data.lungs import load_lung_focused
    from covidcxr.data.splits import read_split_csv, split_dataset, write_split_csv

    names = class_names(config.num_classes)
    split_file = run_dir / SPLIT_FILE
    unreadable: list[tuple[Path, str]] = []
    if config.split is not None or split_file.is_file():
        index = discover(config.data, config.num_classes, allow_outside=config.allow_outside)
        root = index.root
        unreadable.extend(index.problems)
        source = Path(config.split) if config.split is not None else split_file
        samples, split_names = read_split_csv(source, root)
        if source != split_file:
            write_split_csv(split_file, samples, split_names, root)
    else:
        result = split_dataset(
            config.data,
            split_file,
            config.fractions,
            config.seed,
            config.num_classes,
            config.decode_workers,
            progress_factory("Hashing images for the split"),
            allow_outside=config.allow_outside,
        )
        samples, split_names = list(result.samples), list(result.splits)
        unreadable.extend(result.left_out)
    unknown = sorted({s for s in split_names} - {"train", "val", "test"})
    if unknown:
        raise ValueError(
            f"{split_file}: split names should be train, val and test, got {', '.join(unknown)}"
        )

    if with_masks:
        kept = [(s, split) for s, split in zip(samples, split_names, strict=True) if s.mask_path]
        if not kept:
            raise ValueError(
                f"{config.data}: no lung masks found; segmentation needs masks beside the images "
                "(<Class>/masks/ as in the COVID-19 Radiography Database, or a manifest's mask "
                "column)"
            )
        samples, split_names = [s for s, _ in kept], [split for _, split in kept]
    cache = ImageCache(Path(config.cache_dir) if config.cache_dir else None)
    size = (input_size, input_size)
    if config.lungs != "none":
        segmenter = None
        if config.seg_model is not None:
            from covidcxr.inference.segment import load_segmenter

            segmenter = load_segmenter(config.seg_model)
        batch = load_lung_focused(
            samples,
            config.lungs,
            config.lung_margin,
            input_size,
            segmenter,
            config.decode_workers,
            progress_factory(f"Focusing on the lungs ({config.lungs})"),
        )
    else:
        batch = cache.get_many(
            [s.path for s in samples],
            size,
            workers=config.decode_workers,
            progress=progress_factory(f"Loading images at {input_size}x{input_size}"),
        )
    unreadable.extend(batch.failures)
    ok = batch.ok
    images = torch.from_numpy(batch.array).unsqueeze(1)
    masks = None
    if with_masks:
        mask_batch = cache.get_many(
            [s.mask_path for s in samples],
            size,
            kind="mask",
            workers=config.decode_workers,
            progress=progress_factory("Loading lung masks"),
        )
        unreadable.extend(mask_batch.failures)
        ok = ok & mask_batch.ok
        masks = torch.from_numpy(mask_batch.array).unsqueeze(1)
    splits: dict[str, SplitTensors] = {}
    for name in ("train", "val", "test"):
        keep = [i for i, s in enumerate(split_names) if s == name and ok[i]]
        labels = torch.tensor([samples[i].label for i in keep], dtype=torch.int64)
        if labels.numel() and int(labels.max()) >= len(names):
            raise ValueError(
                f"{split_file}: labels up to {int(labels.max())} but {len(names)} classes; "
                f"pass the same --classes as the split was made with"
            )
        splits[name] = SplitTensors(
            images[keep],
            labels,
            [samples[i] for i in keep],
            None if masks is None else masks[keep],
        )
    for name in ("train", "val"):
        if len(splits[name]) == 0:
            raise ValueError(f"{split_file}: the {name} split is empty; use more images")
    if not with_masks:
        _require_every_class(config, names, splits["train"].labels)
    return PreparedData(names, splits, split_file, unreadable)


class TensorImageDataset(Dataset):
    """Items ``{"image": uint8 (1, H, W), "label": int64, "index": int}`` from in-memory
    tensors, with an optional transform on the image (augmentation); with ``samples`` (the
    split's :class:`~covidcxr.data.sample.Sample` list, in the same order) each item also
    carries its ``path``, ``group`` and ``source`` (``""`` when unknown).

    An index may come as ``(index, seed)`` (from :class:`EpochShuffleSampler`): the transform's
    randomness is then drawn from that seed alone, whatever ran before — batches prefetched
    before an epoch starts, or a resumed run, augment exactly as an uninterrupted run does."""

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        samples: Sequence[Sample] | None = None,
    ) -> None:
        self.images, self.labels, self.transform = images, labels, transform
        self.samples = checked_samples(samples, len(labels))

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        index, seed = key if isinstance(key, tuple) else (key, None)
        image = self.images[index]
        if self.transform is not None:
            if seed is None:
                image = self.transform(image)
            else:
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(seed)
                    image = self.transform(image)
        item = {"image": image, "label": self.labels[index], "index": index}
        return item if self.samples is None else item | identity_of(self.samples[index])

    def __getitems__(self, keys: list) -> dict[str, Any]:
        """A whole batch at once (the DataLoader calls this instead of ``__getitem__``): one
        indexing operation instead of a Python loop and a collate per image."""
        if self.transform is not None:
            return default_collate([self[key] for key in keys])
        return _gather(self.images, self.labels, keys, self.samples)


class FeatureDataset(Dataset):
    """Items ``{"image": float (D,), "label": int64, "index": int}`` of cached trunk features
    (the key stays ``image``: it is the network's input); ``path``, ``group`` and ``source``
    too with ``samples``, as :class:`TensorImageDataset`."""

    def __init__(
        self,
        features: torch.Tensor,
        labels: torch.Tensor,
        samples: Sequence[Sample] | None = None,
    ) -> None:
        self.features, self.labels = features, labels
        self.samples = checked_samples(samples, len(labels))

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        index = key[0] if isinstance(key, tuple) else key
        item = {"image": self.features[index], "label": self.labels[index], "index": index}
        return item if self.samples is None else item | identity_of(self.samples[index])

    def __getitems__(self, keys: list) -> dict[str, Any]:
        return _gather(self.features, self.labels, keys, self.samples)


def identity_of(sample: Sample) -> dict[str, str]:
    """What an item says about the image it came from, besides its pixels and label (``""``
    when unknown, so that batches collate)."""
    return {"path": str(sample.path), "group": sample.group or "", "source": sample.source or ""}


def batch_identity(samples: Sequence[Sample] | None, indices: Sequence[int]) -> dict[str, Any]:
    """:func:`identity_of` the samples at ``indices``, as lists (``{}`` without samples)."""
    if samples is None:
        return {}
    return default_collate([identity_of(samples[index]) for index in indices])


def checked_samples(samples: Sequence[Sample] | None, count: int) -> Sequence[Sample] | None:
    """``samples``, refused unless there is one per image."""
    if samples is not None and len(samples) != count:
        raise ValueError(f"{len(samples)} samples for {count} images: they must match one for one")
    return samples


def _gather(
    inputs: torch.Tensor,
    labels: torch.Tensor,
    keys: list,
    samples: Sequence[Sample] | None = None,
) -> dict[str, Any]:
    index = torch.tensor([key[0] if isinstance(key, tuple) else key for key in keys])
    batch = {"image": inputs[index], "label": labels[index], "index": index}
    return batch | batch_identity(samples, index.tolist())


def batched(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``collate_fn`` for datasets whose ``__getitems__`` already returns a batch."""
    return batch


def augmentation(settings: AugmentConfig) -> Callable[[torch.Tensor], torch.Tensor]:
    """Random augmentation of uint8 ``(1, H, W)`` images with torchvision transforms v2: what
    the paper's Keras ImageDataGenerator did (rotation, shift and zoom as one affine warp with
    black fill, a horizontal flip), then the photometric steps that ``settings`` turns on
    (gamma, contrast, blur, JPEG re-encoding; see
    :class:`~covidcxr.training.config.AugmentConfig`)."""
    from torchvision.transforms import v2

    steps: list = [
        v2.RandomAffine(
            degrees=settings.rotation,
            translate=(settings.shift, settings.shift),
            scale=(1 - settings.zoom, 1 + settings.zoom),
            interpolation=v2.InterpolationMode.BILINEAR,
        )
    ]
    if settings.horizontal_flip:
        steps.append(v2.RandomHorizontalFlip())
    if settings.gamma > 0:
        steps.append(RandomGamma(settings.gamma))
    if settings.contrast > 0:
        steps.append(v2.ColorJitter(contrast=settings.contrast))
    if settings.blur > 0:
        kernel = 2 * math.ceil(2 * settings.blur) + 1
        steps.append(v2.RandomApply([v2.GaussianBlur(kernel, (0.1, settings.blur))], p=0.5))
    if settings.jpeg > 0:
        steps.append(v2.RandomApply([RandomJPEG(int(settings.jpeg))], p=0.5))
    return v2.Compose(steps)


class RandomJPEG:
    """Re-encode a uint8 ``(1, H, W)`` image as JPEG at a quality drawn from
    ``[min_quality, 95]`` (Pillow, in memory), as copies of a dataset often were."""

    def __init__(self, min_quality: int) -> None:
        self.min_quality = max(1, min(95, min_quality))

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        import io

        from PIL import Image

        quality = int(torch.randint(self.min_quality, 96, ()))
        buffer = io.BytesIO()
        Image.fromarray(image[0].numpy()).save(buffer, format="JPEG", quality=quality)
        buffer.seek(0)
        decoded = np.asarray(Image.open(buffer).convert("L"))
        return torch.from_numpy(decoded.copy()).unsqueeze(0)


class RandomGamma:
    """``x ** g`` on a uint8 image read as [0, 1], with ``g`` drawn log-uniformly from
    ``[1 / (1 + strength), 1 + strength]`` (torch's random generator, so the dataset's
    per-sample seeds decide it)."""

    def __init__(self, strength: float) -> None:
        self.log_range = math.log1p(strength)

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        gamma = math.exp((2 * float(torch.rand(())) - 1) * self.log_range)
        scaled = (image.float() / 255).pow(gamma)
        return (scaled * 255).round_().clamp_(0, 255).to(torch.uint8)


class EpochShuffleSampler(Sampler[tuple[int, int]]):
    """Shuffles (or, with ``weights``, draws with replacement) from ``seed`` and the epoch alone,
    so a resumed run sees exactly the batches an uninterrupted one would. Yields
    ``(index, augmentation seed)`` pairs. Lightning calls :meth:`set_epoch` before each epoch
    (and wraps this sampler for multi-device runs)."""

    def __init__(self, size: int, seed: int, weights: torch.Tensor | None = None) -> None:
        self.size, self.seed, self.weights, self.epoch = size, seed, weights, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[tuple[int, int]]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        if self.weights is None:
            order = torch.randperm(self.size, generator=generator)
        else:
            order = torch.multinomial(self.weights, self.size, True, generator=generator)
        seeds = torch.randint(0, 2**62, (self.size,), generator=generator)
        return iter(zip(order.tolist(), seeds.tolist(), strict=True))


def class_weights(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Inverse-frequency weights ``(C,)`` normalised to mean 1 over the classes present."""
    counts = torch.bincount(labels, minlength=num_classes).float()
    weights = torch.where(counts > 0, counts.sum() / (num_classes * counts.clamp(min=1)), 0.0)
    return weights


def sample_weights(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Per-sample weights ``(N,)`` so that every class is drawn equally often."""
    return class_weights(labels, num_classes)[labels]


def describe_splits(data: PreparedData) -> str:
    """One line per split with its class counts."""
    lines = []
    for name, split in data.splits.items():
        counts = np.bincount(split.labels.numpy(), minlength=len(data.class_names))
        per_class = ", ".join(f"{c} {n}" for c, n in zip(data.class_names, counts, strict=True))
        lines.append(f"  {name:<5} {len(split):>7,}  ({per_class})")
    return "\n".join(lines)
