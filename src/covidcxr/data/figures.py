"""The paper's exploratory figures: class counts, sample images per class, intensity histograms.

Figures are drawn with matplotlib's object API on the Agg canvas (no pyplot state, no display).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

CLASS_COLOURS = {
    "Normal": "#4c72b0",
    "COVID": "#c44e52",
    "Viral Pneumonia": "#dd8452",
    "Lung Opacity": "#55a868",
}


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _save(figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path


def plot_class_counts(
    counts: Mapping[str, int], path: Path, title: str = "Images per class"
) -> Path:
    """Bar chart of image counts per class (shows the imbalance)."""
    figure = _figure(6, 4)
    axes = figure.add_subplot()
    names = list(counts)
    values = [counts[name] for name in names]
    bars = axes.bar(names, values, color=[CLASS_COLOURS.get(n, "grey") for n in names])
    axes.bar_label(bars, labels=[f"{v:,}" for v in values])
    axes.set_ylabel("images")
    axes.set_title(title)
    axes.margins(y=0.12)
    return _save(figure, path)


def plot_sample_grid(
    thumbnails: Sequence[np.ndarray], path: Path, title: str, columns: int = 4
) -> Path:
    """A grid of uint8 (H, W) thumbnails of one class."""
    rows = max(1, int(np.ceil(len(thumbnails) / columns)))
    figure = _figure(2 * columns, 2 * rows + 0.4)
    figure.suptitle(title)
    for index in range(rows * columns):
        axes = figure.add_subplot(rows, columns, index + 1)
        axes.set_axis_off()
        if index < len(thumbnails):
            axes.imshow(thumbnails[index], cmap="gray", vmin=0, vmax=255)
    return _save(figure, path)


def plot_image_pairs(
    pairs: Sequence[Sequence[np.ndarray]], captions: Sequence[str], path: Path, title: str
) -> Path:
    """Rows of two uint8 (H, W) images side by side, each row captioned (e.g. two file names)."""
    rows = max(1, len(pairs))
    figure = _figure(6.4, 3.0 * rows + 0.4)
    figure.suptitle(title)
    for row, (images, caption) in enumerate(zip(pairs, captions, strict=True)):
        for column, image in enumerate(images[:2]):
            axes = figure.add_subplot(rows, 2, 2 * row + column + 1)
            axes.set_axis_off()
            axes.imshow(image, cmap="gray", vmin=0, vmax=255)
            if column == 0:
                axes.set_title(caption.replace("\n", "  |  "), fontsize=7, loc="left")
    return _save(figure, path)


def plot_intensity_histograms(
    histograms: Mapping[str, np.ndarray], path: Path, title: str = "Pixel intensity per class"
) -> Path:
    """Per class, the mean pixel-intensity histogram with the 10th-90th percentile band over
    images. ``histograms[name]`` is (N, bins): the fraction of each image's pixels per bin."""
    figure = _figure(7, 4)
    axes = figure.add_subplot()
    for name, per_image in histograms.items():
        if len(per_image) == 0:
            continue
        bins = per_image.shape[1]
        centres = (np.arange(bins) + 0.5) / bins
        colour = CLASS_COLOURS.get(name, "grey")
        low, high = np.percentile(per_image, [10, 90], axis=0)
        axes.fill_between(centres, low, high, color=colour, alpha=0.2, linewidth=0)
        axes.plot(
            centres, per_image.mean(axis=0), color=colour, label=f"{name} (n={len(per_image)})"
        )
    axes.set_xlabel("intensity (0 = black, 1 = white)")
    axes.set_ylabel("fraction of pixels")
    axes.set_title(title)
    axes.legend()
    return _save(figure, path)
