"""Lung segmentation: metrics (function + accumulator), mask clean-up, outline overlays.

Names are imported lazily (``from covidcxr.segmentation import dice_score``): importing the
package loads neither torch nor MONAI, and the metrics import MONAI only when first computed.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "dice_score": "covidcxr.segmentation.metrics",
    "iou_score": "covidcxr.segmentation.metrics",
    "hausdorff95": "covidcxr.segmentation.metrics",
    "segmentation_metrics": "covidcxr.segmentation.metrics",
    "SegmentationMeter": "covidcxr.segmentation.metrics",
    "keep_largest_components": "covidcxr.segmentation.postprocess",
    "fill_holes": "covidcxr.segmentation.postprocess",
    "postprocess_lungs": "covidcxr.segmentation.postprocess",
    "lung_outline_overlay": "covidcxr.segmentation.overlay",
    "save_overlay": "covidcxr.segmentation.overlay",
    "mask_to_png": "covidcxr.segmentation.overlay",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'covidcxr.segmentation' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
