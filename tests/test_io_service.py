"""What the service answers for the inputs covidcxr.io now refuses or repairs: a DICOM whose
values are not finite is a bad file (422), never a server error (500)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from covidcxr.service.app import ServiceSettings, create_app
from helpers import save_untrained, write_dicom

pytestmark = pytest.mark.filterwarnings("ignore:Invalid value for VR DS:UserWarning")

RAMP = (np.arange(64 * 64).reshape(64, 64) % 4096).astype(np.uint16)


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> TestClient:
    model = save_untrained(tmp_path_factory.mktemp("service") / "model")
    return TestClient(create_app(model, settings=ServiceSettings(max_upload_mb=2)))


def upload(client: TestClient, data: bytes):
    return client.post("/predict", files={"file": ("x.dcm", data, "application/octet-stream")})


def test_dicom_with_a_rescale_that_is_not_finite_is_422(client, tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "nan.dcm", RAMP, RescaleSlope="NaN", RescaleIntercept=0)
    response = upload(client, path.read_bytes())
    assert response.status_code == 422
    assert "RescaleSlope" in response.json()["detail"]


def test_dicom_with_a_window_that_is_not_finite_is_read(client, tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "nan.dcm", RAMP, WindowCenter="NaN", WindowWidth="inf")
    response = upload(client, path.read_bytes())
    assert response.status_code == 200
    assert set(response.json()["probabilities"]) == {"Normal", "COVID", "Viral Pneumonia"}


def test_gif_named_png_is_refused_as_the_command_line_refuses_it(client, tmp_path: Path) -> None:
    from covidcxr.io import UnsupportedFormatError, read_image

    path = tmp_path / "x.png"
    Image.fromarray((RAMP // 16).astype(np.uint8)).save(path, format="GIF")
    with pytest.raises(UnsupportedFormatError, match="GIF"):
        read_image(path)
    assert upload(client, path.read_bytes()).status_code == 415
