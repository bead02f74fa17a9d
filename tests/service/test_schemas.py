"""The service's response models: the OpenAPI schema documents every answer's fields, /model
serves every field of the model card, and a body that breaks its model (a field missing, a
value out of range) fails validation instead of going out."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from covidcxr.inference.artifact import ModelCard
from covidcxr.service.app import ServiceSettings, create_app
from covidcxr.service.schemas import ModelInfo, Prediction
from helpers import gradient, save_untrained, write_png


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory):
    model = save_untrained(tmp_path_factory.mktemp("schemas") / "model")
    return create_app(model, settings=ServiceSettings(max_upload_mb=1))


def test_every_answer_has_a_documented_body(app) -> None:
    schema = app.openapi()
    bodies = {
        (path, method): operation["responses"]["200"]["content"]["application/json"]["schema"]
        for path, methods in schema["paths"].items()
        for method, operation in methods.items()
    }
    assert bodies == {
        ("/health", "get"): {"$ref": "#/components/schemas/Health"},
        ("/model", "get"): {"$ref": "#/components/schemas/ModelInfo"},
        ("/predict", "post"): {"$ref": "#/components/schemas/Prediction"},
    }
    prediction = schema["components"]["schemas"]["Prediction"]
    assert set(prediction["required"]) == set(Prediction.model_fields)
    assert {"predicted", "confidence", "probabilities", "warnings", "notice"} <= set(
        prediction["properties"]
    )
    assert prediction["properties"]["confidence"]["maximum"] == 1.0


def test_the_model_answer_carries_every_card_field(app) -> None:
    card_fields = {field.name for field in dataclasses.fields(ModelCard)}
    assert card_fields | {"segmenter", "warnings"} == set(ModelInfo.model_fields)
    answer = TestClient(app).get("/model").json()
    assert set(answer) == set(ModelInfo.model_fields)
    assert answer["segmenter"] is None
    assert answer["class_names"] == ["Normal", "COVID", "Viral Pneumonia"]


def test_a_prediction_validates_against_its_model(app, tmp_path: Path) -> None:
    film = write_png(tmp_path / "film.png", gradient(64, 64)).read_bytes()
    answer = TestClient(app).post("/predict", content=film)
    assert answer.status_code == 200
    body = answer.json()
    assert set(body) == set(Prediction.model_fields)
    Prediction.model_validate(body)
    broken = {**body, "confidence": 1.5}
    with pytest.raises(ValidationError, match="confidence"):
        Prediction.model_validate(broken)
    missing = {key: value for key, value in body.items() if key != "notice"}
    with pytest.raises(ValidationError, match="notice"):
        Prediction.model_validate(missing)


def test_the_segmenter_is_named_when_one_is_served(tmp_path: Path) -> None:
    model = save_untrained(tmp_path / "model", lungs="mask")
    answer = TestClient(create_app(model)).get("/model").json()
    assert isinstance(answer["segmenter"], str) and answer["segmenter"]
    assert answer["lungs"]["mode"] == "mask"
