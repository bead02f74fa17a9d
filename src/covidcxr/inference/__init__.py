"""Inference: saved models and their cards, batched inference for classifiers and lung
segmenters, streaming prediction over archives, the out-of-distribution check, ONNX export and
runtime. Nothing here imports the training engine (Lightning).

Names are imported lazily (``from covidcxr.inference import load_model``).
"""

from __future__ import annotations

from covidcxr._lazy import lazy_exports

_EXPORTS = {
    "Classifier": "covidcxr.inference.artifact",
    "Segmenter": "covidcxr.inference.artifact",
    "ModelCard": "covidcxr.inference.artifact",
    "load_model": "covidcxr.inference.artifact",
    "read_card": "covidcxr.inference.artifact",
    "predict_files": "covidcxr.inference.predict",
    "PredictionResult": "covidcxr.inference.predict",
    "load_classifier": "covidcxr.inference.artifact",
    "load_segmenter": "covidcxr.inference.artifact",
    "segment_files": "covidcxr.inference.segment",
    "export_onnx": "covidcxr.inference.export",
    "load_onnx": "covidcxr.inference.export",
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
