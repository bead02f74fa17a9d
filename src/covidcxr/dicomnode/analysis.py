"""One chest X-ray through the models: probabilities, the out-of-distribution check,
Grad-CAM, the lung mask and the share of the evidence inside the lungs (a :class:`Finding`).

The work is the library's: :meth:`~covidcxr.inference.artifact.Classifier.analyse`,
:func:`~covidcxr.analysis.explain.saliency_maps` and
:func:`~covidcxr.analysis.explain.lung_saliency_fraction`; this module only holds the models
together and keeps what the results need.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from covidcxr.inference.artifact import Classifier, Segmenter, load_classifier
from covidcxr.inference.ood import UNFAMILIAR


@dataclass(frozen=True)
class Finding:
    """What the node says of one image: ``probabilities`` per class name (calibrated), the
    ``predicted`` class, ``saliency`` float32 ``(H, W)`` in [0, 1] and ``lung_mask`` bool
    ``(H, W)`` (None without a segmenter), the share of Grad-CAM's evidence in the lungs
    (``lung_fraction``, None without a mask or with an all-zero map), and ``unfamiliar``: the
    out-of-distribution check's verdict (None when the model has no reference)."""

    probabilities: dict[str, float]
    predicted: str
    saliency: np.ndarray
    lung_mask: np.ndarray | None
    lung_fraction: float | None
    unfamiliar: bool | None
    warnings: list[str] = field(default_factory=list)

    @property
    def confidence(self) -> float:
        return self.probabilities[self.predicted]


@dataclass(frozen=True)
class ModelDescription:
    """What the results say about the model: ``name`` (``seed-cnn-db``), ``version`` (covidcxr
    version and the weights' digest), ``training_data`` (one line), ``calibration`` (one
    line) and ``segmenter`` (its name, or None)."""

    name: str
    version: str
    training_data: str
    calibration: str
    segmenter: str | None
    digest: str


class NodeModels:
    """The classifier and, optionally, the lung segmenter of a DICOM node. ``model`` and
    ``seg_model`` are what :func:`~covidcxr.inference.artifact.load_model` takes (a pretrained
    model's name or a model folder) or loaded models."""

    def __init__(self, model: str | Path | Classifier, seg_model: Any = None) -> None:
        self.classifier, self.segmenter = load_classifier(
            model, seg_model, instead="the node needs a classifier"
        )
        self.description = _describe(self.classifier, self.segmenter)

    def analyse(self, image: np.ndarray) -> Finding:
        """The :class:`Finding` for one image in the covidcxr convention (float32 ``(H, W)``
        in [0, 1])."""
        from covidcxr.analysis.explain import lung_saliency_fraction, saliency_maps

        card = self.classifier.card
        analysis = self.classifier.analyse([image])
        maps, _ = saliency_maps(self.classifier, [image])
        mask = self.segmenter.predict_masks([image])[0] if self.segmenter is not None else None
        row = analysis.probabilities[0]
        predicted = card.class_names[int(np.argmax(row))]
        unfamiliar = None if analysis.unfamiliar is None else bool(analysis.unfamiliar[0])
        return Finding(
            probabilities={name: float(p) for name, p in zip(card.class_names, row, strict=True)},
            predicted=predicted,
            saliency=maps[0],
            lung_mask=mask,
            lung_fraction=None if mask is None else lung_saliency_fraction(maps[0], mask),
            unfamiliar=unfamiliar,
            warnings=card.warnings() + ([UNFAMILIAR] if unfamiliar else []),
        )


def _describe(classifier: Classifier, segmenter: Segmenter | None) -> ModelDescription:
    card = classifier.card
    digest = classifier.identity()["sha256"]
    data = card.training_data or {}
    counts = (data.get("split") or {}).get("counts", {}).get("train")
    trained = data.get("name") or ("phantoms" if card.synthetic else "not recorded")
    if counts:
        trained += " (" + ", ".join(f"{name} {n}" for name, n in counts.items()) + " for training)"
    calibration = (
        f"temperature scaling, T = {card.temperature:.3f}"
        if card.temperature != 1.0
        else "not calibrated (temperature 1)"
    )
    return ModelDescription(
        name=card.name or card.model,
        version=f"{card.model}, covidcxr {card.covidcxr_version or 'unknown'}, "
        f"weights sha256 {digest[:16]}",
        training_data=trained,
        calibration=calibration,
        segmenter=None if segmenter is None else (segmenter.card.name or segmenter.card.model),
        digest=digest,
    )
