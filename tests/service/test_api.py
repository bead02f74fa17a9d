"""The HTTP API through FastAPI's TestClient: PNG / JPEG / DICOM, raw bodies, heatmaps and lung
masks, every refusal (415, 400, 422, 413, 503, 504), privacy (no disk, no patient tags, no
logs), 16 concurrent requests, the page and the OpenAPI schema. Slow clients against the real
server: ``test_slow_clients.py``; headers and hosts: ``test_security.py``; the memory budget:
``test_budget.py``; a fuzzer on the schema: ``test_fuzz.py``."""

from __future__ import annotations

import base64
import io
import logging
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from typer.testing import CliRunner

from covidcxr.cli import app as cli
from covidcxr.inference.artifact import load_model
from covidcxr.service.app import (
    DICOM_ALLOWED_TAGS,
    DISPLAY_SIZE,
    NOTICE,
    ServiceSettings,
    create_app,
)
from helpers import real_images, save_untrained, write_dicom

CLASSES = ["Normal", "COVID", "Viral Pneumonia"]


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_untrained(tmp_path_factory.mktemp("service") / "model", temperature=1.5)


@pytest.fixture(scope="module")
def client(model: Path) -> TestClient:
    return TestClient(create_app(model, settings=ServiceSettings(max_upload_mb=2)))


@pytest.fixture(scope="module")
def lung_client(tmp_path_factory: pytest.TempPathFactory) -> TestClient:
    folder = save_untrained(tmp_path_factory.mktemp("lungs") / "model", lungs="mask")
    return TestClient(create_app(folder))


@pytest.fixture(scope="module")
def xray(real_dataset: Path) -> Path:
    return real_images(real_dataset)[0]


def upload(client: TestClient, data: bytes, query: str = "", name: str = "x.png"):
    return client.post(f"/predict{query}", files={"file": (name, data, "application/octet-stream")})


def decode_png(text: str) -> np.ndarray:
    image = Image.open(io.BytesIO(base64.b64decode(text)))
    assert image.format == "PNG"
    return np.asarray(image)


def test_png_gives_the_libraries_probabilities(client, model, xray) -> None:
    response = upload(client, xray.read_bytes())
    assert response.status_code == 200
    body = response.json()
    expected = load_model(model).predict_proba([xray])[0]
    got = np.array([body["probabilities"][name] for name in CLASSES])
    assert np.abs(got - expected).max() < 1e-6
    assert body["predicted"] == CLASSES[int(np.argmax(expected))]
    assert body["confidence"] == pytest.approx(float(expected.max()))
    assert body["calibrated"] is True and body["temperature"] == 1.5
    assert body["notice"] == NOTICE
    assert body["image"]["format"] == "PNG" and body["dicom"] is None
    assert body["overlay_png"] is None and body["lung_mask_png"] is None
    assert body["film_png"] is None and body["heatmap_png"] is None
    assert body["lung_outline_png"] is None


def test_jpeg_and_raw_bodies_are_accepted(client, xray) -> None:
    buffer = io.BytesIO()
    Image.open(xray).convert("L").save(buffer, format="JPEG", quality=95)
    response = upload(client, buffer.getvalue(), name="no-suffix")
    assert response.status_code == 200 and response.json()["image"]["format"] == "JPEG"
    raw = client.post("/predict", content=xray.read_bytes(), headers={"content-type": "image/png"})
    assert raw.status_code == 200
    assert raw.json()["probabilities"] == upload(client, xray.read_bytes()).json()["probabilities"]


def test_dicom_echoes_only_allowed_tags(client, tmp_path, caplog) -> None:
    pixels = (np.arange(64 * 80).reshape(64, 80) % 4096).astype(np.uint16)
    path = write_dicom(
        tmp_path / "study", pixels, PatientName="Doe^Jane", PatientID="MRN-0042",
        PatientBirthDate="19500101", InstitutionName="St Example", ViewPosition="PA",
    )  # fmt: skip
    with caplog.at_level(logging.DEBUG):
        response = upload(client, path.read_bytes(), name="Doe_Jane.dcm")
    assert response.status_code == 200
    body = response.json()
    assert body["image"] == {"format": "DICOM", "width": 80, "height": 64}
    assert set(body["dicom"]) <= set(DICOM_ALLOWED_TAGS)
    assert body["dicom"]["Modality"] == "DX" and body["dicom"]["ViewPosition"] == "PA"
    for secret in ("Doe", "Jane", "MRN-0042", "19500101", "St Example"):
        assert secret not in response.text
        assert secret not in caplog.text


def test_a_damaged_dicom_header_leaves_no_patient_data_in_logs(
    client, tmp_path, caplog, monkeypatch
) -> None:
    import warnings

    from covidcxr.service.server import keep_uploads_out_of_logs

    path = write_dicom(tmp_path / "study", np.zeros((8, 8), np.uint16), PatientName="Doe^Jane")
    data = bytearray(path.read_bytes())
    at = data.index(b"\x08\x00\x16\x00UI")  # SOP Class UID: a length that runs over the name
    data[at + 6 : at + 8] = (300).to_bytes(2, "little")
    pydicom_log = logging.getLogger("pydicom")
    monkeypatch.setattr(pydicom_log, "disabled", pydicom_log.disabled)  # restored afterwards
    with warnings.catch_warnings(record=True) as warned, caplog.at_level(logging.DEBUG):
        warnings.simplefilter("always")
        keep_uploads_out_of_logs()  # what serve() does before it starts
        response = upload(client, bytes(data), name="study.dcm")
    assert response.status_code == 422
    assert "Doe" not in response.text
    assert not [w for w in warned if "Doe" in str(w.message)]
    assert "Doe" not in caplog.text


def test_heatmap_and_lung_outline(lung_client, xray) -> None:
    response = upload(lung_client, xray.read_bytes(), "?heatmap=true&lungs=true")
    assert response.status_code == 200
    body = response.json()
    width, height = Image.open(xray).size
    overlay = decode_png(body["overlay_png"])
    scale = min(1.0, DISPLAY_SIZE / max(width, height))
    assert overlay.shape == (round(height * scale), round(width * scale), 3)
    mask = decode_png(body["lung_mask_png"])
    assert mask.shape == (height, width) and set(np.unique(mask)) <= {0, 255}
    assert body["lungs_available"] is True
    assert 0.0 <= body["lung_fraction"] <= 1.0


def test_the_overlays_layers_rebuild_it(lung_client, xray) -> None:
    """The page lays heatmap_png and lung_outline_png over film_png with CSS opacity: at
    opacity 0.45 (saliency_overlay's default) that is overlay_png again."""
    body = upload(lung_client, xray.read_bytes(), "?heatmap=true&lungs=true").json()
    overlay = decode_png(body["overlay_png"]).astype(np.float64)
    film = decode_png(body["film_png"]).astype(np.float64)
    heatmap = decode_png(body["heatmap_png"]).astype(np.float64)
    outline = decode_png(body["lung_outline_png"]).astype(np.float64)
    assert film.shape == overlay.shape[:2]
    assert heatmap.shape == outline.shape == (*overlay.shape[:2], 4)
    assert set(np.unique(outline[..., 3])) == {0, 255}
    assert heatmap[..., 3].max() > 0  # some evidence somewhere

    def over(below: np.ndarray, layer: np.ndarray, opacity: float) -> np.ndarray:
        weight = opacity * layer[..., 3:] / 255
        return (1 - weight) * below + weight * layer[..., :3]

    rebuilt = over(over(np.repeat(film[..., None], 3, axis=2), heatmap, 0.45), outline, 1.0)
    assert np.abs(rebuilt - overlay).max() <= 2  # two roundings to uint8


def test_heatmap_without_a_segmenter(client, xray) -> None:
    body = upload(client, xray.read_bytes(), "?heatmap=true&lungs=true").json()
    assert body["overlay_png"] is not None
    assert body["film_png"] is not None and body["heatmap_png"] is not None
    assert body["lung_mask_png"] is None and body["lungs_available"] is False
    assert body["lung_outline_png"] is None
    assert body["lung_fraction"] is None


@pytest.mark.parametrize(
    ("data", "status", "words"),
    [
        (b"", 400, "empty"),
        (b"%PDF-1.7 a report, not an image", 415, "not a PNG, JPEG or DICOM"),
        (b"GIF89a" + bytes(100), 415, "not a PNG, JPEG or DICOM"),
    ],
)
def test_refusals(client, data, status, words) -> None:
    response = upload(client, data)
    assert response.status_code == status
    assert words in response.json()["detail"]


def test_truncated_image_is_422(client, xray) -> None:
    response = upload(client, xray.read_bytes()[:2000])
    assert response.status_code == 422
    assert "PNG" in response.json()["detail"] and "truncated" in response.json()["detail"]


def test_oversize_is_413_declared_or_streamed(client) -> None:
    big = b"\x89PNG\r\n\x1a\n" + bytes(3 * 2**20)
    assert upload(client, big).status_code == 413

    def chunks():  # no Content-Length: the limit is enforced while reading
        for _ in range(40):
            yield bytes(2**17)

    response = client.post("/predict", content=chunks(), headers={"content-type": "image/png"})
    assert response.status_code == 413
    assert "--max-upload-mb" in response.json()["detail"]


def test_form_without_a_file_field(client, xray) -> None:
    response = client.post("/predict", files={"image": ("x.png", xray.read_bytes())})
    assert response.status_code == 400 and "'file'" in response.json()["detail"]
    broken = client.post(
        "/predict", content=b"--x\r\nnonsense", headers={"content-type": "multipart/form-data"}
    )
    assert broken.status_code == 400


def test_an_overlong_multipart_boundary_is_400_not_500(client, xray) -> None:
    boundary = "b" * 300
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="x.png"\r\n\r\n'
    body = head.encode() + xray.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    response = client.post(
        "/predict",
        content=body,
        headers={"content-type": f"multipart/form-data; boundary={boundary}"},
    )
    assert response.status_code == 400
    assert "boundary is 300 characters long; at most 256" in response.json()["detail"]
    assert response.headers["connection"] == "close"  # the rest of the body was not read


def test_a_request_past_its_deadline_is_504_and_its_work_abandoned(model, xray) -> None:
    import time

    slow = TestClient(create_app(model, settings=ServiceSettings(timeout_s=0.3)))
    analyser = slow.app.state.analyser
    calls = []
    original = analyser.classifier.analyse_prepared
    analyser.classifier.analyse_prepared = lambda *a, **k: (calls.append(1), original(*a, **k))[1]
    analyser.lock.acquire()  # another request holds the network
    try:
        started = time.monotonic()
        response = upload(slow, xray.read_bytes())
        waited = time.monotonic() - started
    finally:
        analyser.lock.release()
    assert response.status_code == 504 and "longer than" in response.json()["detail"]
    assert waited < 2.0
    time.sleep(0.3)
    assert calls == []  # the abandoned request never ran the network once the lock was free
    assert upload(slow, xray.read_bytes()).status_code == 200 and calls == [1]


def test_more_requests_than_slots_get_503(model, xray) -> None:
    import threading
    import time

    busy = TestClient(create_app(model, settings=ServiceSettings(max_pending=1, timeout_s=10)))
    analyser, slots = busy.app.state.analyser, busy.app.state.pending
    analyser.lock.acquire()  # the first request will wait for the network, holding the slot
    first: list = []
    thread = threading.Thread(target=lambda: first.append(upload(busy, xray.read_bytes())))
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while slots.acquire(blocking=False):  # until the first request has taken the slot
            slots.release()
            assert time.monotonic() < deadline, "the first request never started"
            time.sleep(0.01)
        response = upload(busy, xray.read_bytes())
        assert response.status_code == 503 and "busy" in response.json()["detail"]
    finally:
        analyser.lock.release()
        thread.join()
    assert first[0].status_code == 200
    assert upload(busy, xray.read_bytes()).status_code == 200  # the slot came back


def test_uploads_never_touch_the_disk(client, xray, monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("an upload was about to be written to a temporary file")

    for name in ("SpooledTemporaryFile", "TemporaryFile", "NamedTemporaryFile", "mkstemp"):
        monkeypatch.setattr(tempfile, name, refuse)
    data = xray.read_bytes()
    data += bytes(max(0, 3 * 2**19 - len(data)))  # 1.5 MiB: Starlette would spool it to disk
    response = upload(client, data)
    assert response.status_code == 200


def test_sixteen_concurrent_requests(client, real_dataset) -> None:
    files = real_images(real_dataset, 16)
    expected = {path.name: upload(client, path.read_bytes()).json() for path in files}
    with ThreadPoolExecutor(max_workers=16) as pool:
        responses = list(pool.map(lambda p: (p.name, upload(client, p.read_bytes())), files))
    assert all(response.status_code == 200 for _, response in responses)
    for name, response in responses:
        assert response.json()["probabilities"] == expected[name]["probabilities"]


def test_health_model_page_and_schema(client) -> None:
    assert client.get("/health").json()["status"] == "ok"
    card = client.get("/model").json()
    assert card["class_names"] == CLASSES and card["temperature"] == 1.5
    assert card["segmenter"] is None
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "not a diagnostic device" in page.text
    assert "http://" not in page.text and "https://" not in page.text  # works offline
    schema = client.get("/openapi.json").json()
    body = schema["paths"]["/predict"]["post"]["requestBody"]["content"]
    assert "multipart/form-data" in body
    assert {"heatmap", "lungs"} <= {
        p["name"] for p in schema["paths"]["/predict"]["post"]["parameters"]
    }


def test_serve_refuses_a_segmentation_model(tmp_path) -> None:
    import torch

    from covidcxr.inference.artifact import ModelCard, save_classifier
    from covidcxr.models import create_model, get_model_spec

    spec = get_model_spec("tiny-unet")
    torch.manual_seed(0)
    card = ModelCard.from_spec(spec, ["lung"])
    save_classifier(tmp_path / "seg", create_model("tiny-unet", weights=None), card)
    result = CliRunner().invoke(cli, ["serve", str(tmp_path / "seg")])
    assert result.exit_code == 2 and "serve a classifier" in result.output


def test_the_card_and_answers_carry_the_models_warnings(client, xray) -> None:
    card = client.get("/model").json()
    assert card["warnings"] and "untrained" in card["warnings"][0]
    body = upload(client, xray.read_bytes()).json()
    assert body["warnings"] == card["warnings"]
    assert body["unfamiliar"] is None  # an untrained model has no feature reference
