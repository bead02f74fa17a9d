"""Lung segmentation: metrics (function + accumulator), mask clean-up, outline overlays.

Names are imported lazily (``from covidcxr.segmentation import dice_score``): importing the
package loads neither torch nor MONAI, and the metrics import MONAI only when first computed.
"""

from __future__ import annotations

from covidcxr._lazy import lazy_exports

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

__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
