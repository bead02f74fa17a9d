"""covidcxr: COVID-19 and viral pneumonia on chest X-rays — for research, not diagnosis.

The top-level names are imported lazily so that ``import covidcxr`` (and the CLI) start fast.
"""

from __future__ import annotations

from covidcxr._lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    "read_image": "covidcxr.io",
    "read_mask": "covidcxr.io",
    "load_image": "covidcxr.io",
    "ImageReadError": "covidcxr.io",
    "discover": "covidcxr.data.layouts",
    "DatasetIndex": "covidcxr.data.layouts",
    "Sample": "covidcxr.data.sample",
    "TrainConfig": "covidcxr.training.config",
    "train": "covidcxr.training.train",
    "evaluate": "covidcxr.analysis.evaluate",
    "load_model": "covidcxr.inference.artifact",
    "predict_files": "covidcxr.inference.predict",
    "export_onnx": "covidcxr.inference.export",
    "load_onnx": "covidcxr.inference.export",
    "create_app": "covidcxr.service.app",
    "create_model": "covidcxr.models",
    "list_models": "covidcxr.models",
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
