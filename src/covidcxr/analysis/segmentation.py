"""How well a lung model segments a dataset: :func:`evaluate_segmentation` (``covidcxr segment
evaluate``) and the figure of its worst cases, :func:`plot_worst_cases`."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from covidcxr.wording import plural

CHUNK = 8
"""Images read and segmented at once."""

TRUE_COLOUR = "#55a868"
PREDICTED_COLOUR = "#c44e52"


def plot_worst_cases(
    images: np.ndarray,
    true_masks: np.ndarray,
    predicted_masks: Sequence[np.ndarray],
    dice: Sequence[float],
    names: Sequence[str],
    path: Path,
    count: int = 6,
    scope: str = "the test split",
) -> Path:
    """The ``count`` images with the lowest Dice: each X-ray (uint8 or float (H, W)) with the
    true lung outline (green) and the predicted one (red). Masks are bool (H, W). ``scope``
    names the images scored, for the title (``"the test split"``, ``"all 30 masked images of
    DATA"``)."""
    from matplotlib.figure import Figure

    order = np.argsort(np.asarray(dice, dtype=float), kind="stable")[:count]
    columns = max(1, min(3, len(order)))
    rows = max(1, int(np.ceil(len(order) / columns)))
    figure = Figure(figsize=(3.2 * columns, 3.4 * rows + 0.4), dpi=100, layout="constrained")
    figure.suptitle(f"Lowest Dice on {scope} (green: true lungs, red: predicted)")
    for slot, index in enumerate(order):
        axes = figure.add_subplot(rows, columns, slot + 1)
        axes.imshow(images[index], cmap="gray")
        for mask, colour in (
            (true_masks[index], TRUE_COLOUR),
            (predicted_masks[index], PREDICTED_COLOUR),
        ):
            if mask.any() and not mask.all():
                axes.contour(mask.astype(float), levels=[0.5], colors=colour, linewidths=1.2)
        axes.set_title(f"{names[index]}\nDice {dice[index]:.3f}", fontsize=9)
        axes.set_axis_off()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path


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
    from covidcxr.analysis.segmentation_metrics import SegmentationMeter
    from covidcxr.data.layouts import discover
    from covidcxr.data.splits import read_split_csv
    from covidcxr.data.transforms import resize_image, resize_mask
    from covidcxr.io import ImageReadError, failure_reason, read_image, read_mask
    from covidcxr.perf import tune_allocator

    tune_allocator()
    from covidcxr.inference.segment import load_segmenter

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
                failures.append((sample.path, failure_reason(error)))
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
