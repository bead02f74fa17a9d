"""``covidcxr segment predict`` and ``segment evaluate``: lung masks for files, and how good
they are against a dataset's own masks."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from covidcxr.io import unique_name
from covidcxr.wording import plural

CHUNK = 8


@dataclass
class SegmentResult:
    """One row per segmented file (``path``, ``mask``, ``overlay``, ``lung_fraction``) and the
    files that could not be read."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    failures: list[tuple[Path, str]] = field(default_factory=list)


def load_segmenter(model: Any):
    """A :class:`covidcxr.artifact.Segmenter` from a path (or one already loaded)."""
    from covidcxr.artifact import Segmenter, load_model

    segmenter = model if isinstance(model, Segmenter) else load_model(model)
    if not isinstance(segmenter, Segmenter):
        raise ValueError(
            f"{model}: is a {segmenter.card.task} model, not a lung segmentation model "
            "(train one with `covidcxr segment train`)"
        )
    return segmenter


def segment_files(
    model: Any,
    inputs: Sequence[str | Path],
    out: str | Path,
    postprocess: bool | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> SegmentResult:
    """Write ``<name>_mask.png`` (the input's own size, 0/255) and ``<name>_overlay.png`` (the
    lung outline on the X-ray) into ``out`` for every image under ``inputs``. Bad files are
    skipped and listed."""
    from covidcxr.engine.perf import tune_allocator
    from covidcxr.io import ImageReadError, read_image
    from covidcxr.predict import find_image_files
    from covidcxr.segmentation.overlay import lung_outline_overlay, mask_to_png, save_overlay

    tune_allocator()
    segmenter = load_segmenter(model)
    files, failures = find_image_files(inputs)
    result = SegmentResult(failures=list(failures))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    used: set[str] = set()
    for start in range(0, len(files), CHUNK):
        images, paths = [], []
        for path in files[start : start + CHUNK]:
            try:
                images.append(read_image(path))
                paths.append(path)
            except (ImageReadError, OSError) as error:
                result.failures.append((path, getattr(error, "reason", str(error))))
        masks = segmenter.predict_masks(images, postprocess=postprocess) if images else []
        for path, image, mask in zip(paths, images, masks, strict=True):
            stem = unique_name(path.stem, used)
            mask_path, overlay_path = out / f"{stem}_mask.png", out / f"{stem}_overlay.png"
            mask_to_png(mask).save(mask_path)
            save_overlay(overlay_path, lung_outline_overlay(image, mask))
            result.rows.append(
                {
                    "path": str(path),
                    "mask": str(mask_path),
                    "overlay": str(overlay_path),
                    "lung_fraction": float(mask.mean()),
                }
            )
        if progress is not None:
            progress(min(len(files), start + CHUNK), len(files))
    return result


def evaluate_segmentation(
    model: Any,
    data: str | Path,
    out: str | Path,
    split_file: str | Path | None = None,
    subset: str = "test",
    postprocess: bool | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Dice, IoU and 95 % Hausdorff distance of the model's masks against the dataset's own
    lung masks (all images that have one, or the ``subset`` rows of ``split_file``), compared
    at each true mask's resolution. Writes ``metrics.json``, ``per_image.csv`` and
    ``worst_cases.png`` to ``out``; returns the metrics."""
    from covidcxr.data.layouts import discover
    from covidcxr.data.splits import read_split_csv
    from covidcxr.data.transforms import resize_image, resize_mask
    from covidcxr.engine.perf import tune_allocator
    from covidcxr.io import ImageReadError, read_image, read_mask
    from covidcxr.segmentation.figures import plot_worst_cases
    from covidcxr.segmentation.metrics import SegmentationMeter

    tune_allocator()
    segmenter = load_segmenter(model)
    index = discover(data, num_classes=4)
    samples = list(index.samples)
    if split_file is not None:
        rows, splits = read_split_csv(Path(split_file), index.root)
        samples = [s for s, split in zip(rows, splits, strict=True) if split == subset]
    samples = [s for s in samples if s.mask_path is not None]
    if not samples:
        raise ValueError(f"{data}: no images with lung masks to evaluate against")
    predicted, truth, shown, names, failures = [], [], [], [], []
    for start in range(0, len(samples), CHUNK):
        images, masks, chunk = [], [], []
        for sample in samples[start : start + CHUNK]:
            try:
                images.append(read_image(sample.path))
                masks.append(read_mask(sample.mask_path))
                chunk.append(sample)
            except (ImageReadError, OSError) as error:
                failures.append((sample.path, getattr(error, "reason", str(error))))
        for sample, image, mask, guess in zip(
            chunk,
            images,
            masks,
            segmenter.predict_masks(images, postprocess=postprocess),
            strict=True,
        ):
            predicted.append(resize_mask(guess, mask.shape))
            truth.append(mask)
            shown.append(resize_image(image, mask.shape))
            names.append(sample.path.name)
        if progress is not None:
            progress(min(len(samples), start + CHUNK), len(samples))
    meter = SegmentationMeter()
    for guess, mask in zip(predicted, truth, strict=True):  # sizes differ between images
        meter.update(guess[None], mask[None])
    scores = meter.compute()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    metrics = {
        "model": segmenter.card.model,
        "model_path": str(segmenter.folder),
        "data": str(index.root),
        "subset": subset if split_file is not None else "all",
        "scored": (
            f"the {subset} split"
            if split_file is not None
            else f"all {plural(len(names), 'masked image')} of {Path(data).name}"
        ),
        "postprocess": segmenter.card.postprocess if postprocess is None else postprocess,
        **{key: scores[key] for key in ("num_images", "dice", "iou", "hd95")},
        "per_image": [
            {"path": name, **row} for name, row in zip(names, scores["per_image"], strict=True)
        ],
        "unreadable": [{"path": str(p), "reason": r} for p, r in failures],
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    with (out / "per_image.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["path", "dice", "iou", "hd95"])
        writer.writeheader()
        writer.writerows(metrics["per_image"])
    dice = [row["dice"] for row in scores["per_image"]]
    plot_worst_cases(
        shown, truth, predicted, dice, names, out / "worst_cases.png", scope=metrics["scored"]
    )
    return metrics
