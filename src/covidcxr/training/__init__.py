"""The training engine (Lightning): one LightningModule per task, ``train`` with early stopping,
atomic checkpoints and exact resume, and the settings (``TrainConfig``). Lightning is imported
only when training starts, so importing this package stays cheap.
"""

from __future__ import annotations

from covidcxr._lazy import lazy_exports

_EXPORTS = {
    "TrainConfig": "covidcxr.training.config",
    "AugmentConfig": "covidcxr.training.config",
    "train": "covidcxr.training.train",
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
