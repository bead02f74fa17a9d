"""What the service answers, as pydantic models: FastAPI validates every answer against them
and they are the OpenAPI schema's response bodies (so Schemathesis and any client generated
from ``/openapi.json`` see the real fields, their types and their meaning).

:class:`ModelInfo` is built from :class:`~covidcxr.inference.artifact.ModelCard`'s own fields,
so a field added to the card is served and documented without being written here again.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal, get_type_hints

from pydantic import BaseModel, Field, create_model

from covidcxr.inference.artifact import ModelCard

__all__ = ["Health", "ImageInfo", "ModelInfo", "Prediction", "model_info"]

_PNG = "A base64 PNG, at most DISPLAY_SIZE px on its longest side"


class Health(BaseModel):
    """``GET /health``: the service is up."""

    status: Literal["ok"]
    model: str = Field(description="The served classifier's name (its architecture if unnamed).")
    version: str = Field(description="covidcxr's version.")


class ImageInfo(BaseModel):
    """The uploaded file as it was decoded."""

    format: str = Field(description="PNG, JPEG or DICOM.")
    width: int = Field(ge=1)
    height: int = Field(ge=1)


class Prediction(BaseModel):
    """``POST /predict``: one film's answer. The picture fields are None unless asked for
    (``?heatmap=true`` / ``?lungs=true``) and possible (``lungs`` needs a segmenter)."""

    model: str = Field(description="The classifier that answered.")
    predicted: str = Field(description="The class with the highest probability.")
    confidence: float = Field(ge=0.0, le=1.0, description="The predicted class's probability.")
    probabilities: dict[str, float] = Field(description="Every class's probability (sum 1).")
    calibrated: bool = Field(description="Whether the probabilities are temperature-scaled.")
    temperature: float = Field(gt=0.0)
    image: ImageInfo
    dicom: dict[str, int | str] | None = Field(
        description="For a DICOM upload, its allow-listed header attributes (DICOM_ALLOWED_TAGS:"
        " nothing that identifies a patient); None for PNG and JPEG."
    )
    overlay_png: str | None = Field(
        description=f"{_PNG}: the film with the Grad-CAM heatmap and / or lung outline (RGB)."
    )
    film_png: str | None = Field(description=f"{_PNG}: the plain film (grey).")
    heatmap_png: str | None = Field(
        description=f"{_PNG}: the heatmap alone, opacity = saliency (RGBA)."
    )
    lung_outline_png: str | None = Field(
        description=f"{_PNG}: the lung outline alone on a transparent ground (RGBA)."
    )
    lung_mask_png: str | None = Field(
        description="A base64 PNG at the film's own size: the lung mask (0 or 255)."
    )
    lung_fraction: float | None = Field(
        ge=0.0, le=1.0, description="The share of the heatmap that falls inside the lungs."
    )
    lungs_available: bool = Field(description="Whether the service has a lung segmenter.")
    unfamiliar: bool | None = Field(
        description="Whether the film lies outside what the model was trained on (None: the "
        "model has no out-of-distribution reference)."
    )
    ood_score: float | None
    ood_threshold: float | None
    warnings: list[str] = Field(description="Sentences to show beside the answer.")
    notice: str = Field(description="Research use only: not a diagnostic device.")
    elapsed_ms: float = Field(ge=0.0, description="Time the analysis took, upload excluded.")


def _card_fields() -> dict[str, Any]:
    hints = get_type_hints(ModelCard)
    fields: dict[str, Any] = {}
    for field in dataclasses.fields(ModelCard):
        if field.default is not dataclasses.MISSING:
            fields[field.name] = (hints[field.name], field.default)
        elif field.default_factory is not dataclasses.MISSING:
            fields[field.name] = (hints[field.name], Field(default_factory=field.default_factory))
        else:
            fields[field.name] = (hints[field.name], ...)
    return fields


#: ``GET /model``: the model card (every field of ``model.json``), the segmenter served
#: beside it and the warnings shown with its answers.
ModelInfo = create_model(
    "ModelInfo",
    __doc__="The served model's card, its segmenter and the warnings shown with its answers.",
    **_card_fields(),
    segmenter=(str | None, Field(description="The lung segmenter served with it, if any.")),
    warnings=(list[str], Field(description="Sentences shown beside every answer.")),
)


def model_info(card: ModelCard, segmenter: str | None) -> BaseModel:
    """The :class:`ModelInfo` of ``card`` served with ``segmenter``."""
    return ModelInfo(**dataclasses.asdict(card), segmenter=segmenter, warnings=card.warnings())
