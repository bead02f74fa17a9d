"""Datasets: layouts, synthetic phantoms, near-duplicates, splits, the preprocessing cache,
lung focusing, lung-mask clean-up and outline overlays.

Names are imported lazily (``from covidcxr.data import discover``) to keep start-up fast.
"""

from __future__ import annotations

from covidcxr._lazy import lazy_exports

_EXPORTS = {
    "Sample": "covidcxr.data.sample",
    "ALL_CLASS_NAMES": "covidcxr.data.classes",
    "class_names": "covidcxr.data.classes",
    "canonical_class_name": "covidcxr.data.classes",
    "DatasetIndex": "covidcxr.data.layouts",
    "discover": "covidcxr.data.layouts",
    "inspect_dataset": "covidcxr.data.inspect",
    "InspectReport": "covidcxr.data.inspect",
    "write_phantoms": "covidcxr.data.phantoms",
    "render_phantom": "covidcxr.data.phantoms",
    "perceptual_hash": "covidcxr.data.duplicates",
    "group_near_duplicates": "covidcxr.data.duplicates",
    "assign_splits": "covidcxr.data.splits",
    "split_dataset": "covidcxr.data.splits",
    "read_split_csv": "covidcxr.data.splits",
    "ImageCache": "covidcxr.data.cache",
    "focus_on_lungs": "covidcxr.data.lungs",
    "load_lung_focused": "covidcxr.data.lungs",
    "keep_largest_components": "covidcxr.data.postprocess",
    "fill_holes": "covidcxr.data.postprocess",
    "postprocess_lungs": "covidcxr.data.postprocess",
    "lung_outline_overlay": "covidcxr.data.overlay",
    "save_overlay": "covidcxr.data.overlay",
    "mask_to_png": "covidcxr.data.overlay",
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
