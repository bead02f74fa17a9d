"""Figures of segmentation results."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

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
