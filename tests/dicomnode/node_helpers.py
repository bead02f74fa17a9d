"""Builders for the DICOM node's tests: real X-rays as DICOM films, a receiving SCP."""

from __future__ import annotations

import os
import socket
import threading
import time
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np

from helpers import REAL_DATASET

#: Identifying attributes every test film carries: none of them may reach a log line.
PATIENT = {
    "PatientName": "Doe^Jane",
    "PatientID": "CXR-PRIVATE-0042",
    "PatientBirthDate": "19610203",
    "PatientSex": "F",
    "AccessionNumber": "ACC-PRIVATE-77",
    "ReferringPhysicianName": "Who^Doctor",
}


def real_pngs(count: int) -> list[Path]:
    """``count`` real X-rays, taken in turn from each class (sorted, so always the same)."""
    per_class = [sorted((REAL_DATASET / name / "images").glob("*.png")) for name in (
        "COVID", "Normal", "Viral Pneumonia")]  # fmt: skip
    files = [f for group in zip(*per_class, strict=False) for f in group]
    assert len(files) >= count, f"the real sample has {len(files)} X-rays, {count} wanted"
    return files[:count]


def xray_dataset(png: Path, **attributes: Any) -> Any:
    """A real X-ray (PNG) as a DX For Presentation film (12 bits, MONOCHROME2) in a new study,
    with :data:`PATIENT`'s attributes; ``attributes`` override or add any."""
    from PIL import Image
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    grey = np.asarray(Image.open(png).convert("L"), dtype=np.uint16) * 16
    dataset = Dataset()
    dataset.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    dataset.SOPInstanceUID = generate_uid()
    dataset.StudyInstanceUID = generate_uid()
    dataset.SeriesInstanceUID = generate_uid()
    dataset.StudyDate, dataset.StudyTime, dataset.StudyID = "20240115", "101500", "S1"
    dataset.StudyDescription = "Chest PA"
    dataset.SeriesNumber, dataset.InstanceNumber = 1, 1
    dataset.Modality = "DX"
    dataset.Manufacturer = "covidcxr tests"
    dataset.BodyPartExamined = "CHEST"
    dataset.ViewPosition = "PA"
    dataset.PatientOrientation = ["L", "F"]
    dataset.PresentationIntentType = "FOR PRESENTATION"
    dataset.ImageType = ["ORIGINAL", "PRIMARY"]
    dataset.Rows, dataset.Columns = grey.shape
    dataset.SamplesPerPixel = 1
    dataset.PhotometricInterpretation = "MONOCHROME2"
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit = 16, 12, 11
    dataset.PixelRepresentation = 0
    dataset.PixelData = grey.tobytes()
    for name, value in {**PATIENT, **attributes}.items():
        setattr(dataset, name, value)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = dataset.SOPClassUID
    meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset.file_meta = meta
    return dataset


def dicom_bytes(dataset: Any) -> bytes:
    buffer = BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Receiver:
    """A C-STORE SCP standing in for the PACS: keeps what it is sent in ``received``."""

    def __init__(self, ssl_context: Any = None, port: int | None = None) -> None:
        from pynetdicom import AE, AllStoragePresentationContexts, evt

        self.received: list[Any] = []
        self.arrived = threading.Condition()
        self.port = port or free_port()
        ae = AE(ae_title="PACS")
        ae.supported_contexts = AllStoragePresentationContexts
        self.server = ae.start_server(
            ("127.0.0.1", self.port),
            block=False,
            ssl_context=ssl_context,
            evt_handlers=[(evt.EVT_C_STORE, self._store)],
        )

    @property
    def address(self) -> str:
        return f"PACS@127.0.0.1:{self.port}"

    def _store(self, event: Any) -> int:
        dataset = event.dataset
        dataset.file_meta = event.file_meta
        with self.arrived:
            self.received.append(dataset)
            self.arrived.notify_all()
        return 0x0000

    def wait_for(self, count: int, timeout: float = 60.0) -> list[Any]:
        with self.arrived:
            self.arrived.wait_for(lambda: len(self.received) >= count, timeout)
            return list(self.received)

    def close(self) -> None:
        self.server.shutdown()


def send_films(port: int, datasets: list[Any], ssl_context: Any = None) -> list[int]:
    """C-STORE ``datasets`` to the node at ``port`` in one association; their statuses."""
    from pynetdicom import AE

    ae = AE(ae_title="MODALITY")
    for sop_class in sorted({str(d.SOPClassUID) for d in datasets}):
        ae.add_requested_context(sop_class)
    tls = None if ssl_context is None else (ssl_context, "localhost")
    association = ae.associate("127.0.0.1", port, ae_title="COVIDCXR", tls_args=tls)
    assert association.is_established, "the node refused the association"
    try:
        return [int(association.send_c_store(dataset).Status) for dataset in datasets]
    finally:
        association.release()


ORTHANC = os.environ.get("COVIDCXR_ORTHANC", "/usr/sbin/Orthanc")
DICOMWEB_PLUGIN = os.environ.get(
    "COVIDCXR_ORTHANC_DICOMWEB", "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
)
ENABLE_ORTHANC = (
    "install Debian's Orthanc (`sudo apt-get install orthanc orthanc-dicomweb`) or run "
    "`CI=true make test`, which does"
)

#: Orthanc's routing of chest X-rays to covidcxr (the README's "In the hospital network").
ROUTING_LUA = """
function OnStoredInstance(instanceId, tags, metadata, origin)
  local modality = tags['Modality']
  if (modality == 'CR' or modality == 'DX') and origin['RequestOrigin'] ~= 'Lua' then
    SendToModality(instanceId, 'covidcxr')
  end
end
"""


def orthanc_or_skip() -> str:
    """Orthanc's executable, or a skip (a failure under CI=true) saying how to enable it."""
    problems = [
        f"{path} not found" for path in (ORTHANC, DICOMWEB_PLUGIN) if not Path(path).exists()
    ]
    if problems:
        import pytest

        message = f"Orthanc tests not run: {'; '.join(problems)}. To enable them, {ENABLE_ORTHANC}."
        if os.environ.get("CI") == "true":
            pytest.fail(message + " (CI=true: these tests must run)")
        pytest.skip(message)
    return ORTHANC


class Orthanc:
    """An Orthanc of its own on loopback: temporary storage and configuration, free ports, the
    DICOMweb plugin, covidcxr's node as modality ``covidcxr`` and, with ``route``, the Lua
    script that forwards every CR / DX it stores there."""

    def __init__(self, folder: Path, node_port: int, route: bool = True) -> None:
        import json
        import subprocess

        self.folder = folder
        self.http_port, self.dicom_port = free_port(), free_port()
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "route.lua").write_text(ROUTING_LUA if route else "")
        config = {
            "Name": "covidcxr-test",
            "StorageDirectory": str(folder / "storage"),
            "IndexDirectory": str(folder / "storage"),
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": "ORTHANC",
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "Plugins": [DICOMWEB_PLUGIN],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
            "DicomModalities": {"covidcxr": ["COVIDCXR", "127.0.0.1", node_port]},
            "LuaScripts": [str(folder / "route.lua")],
            "ConcurrentJobs": 4,
            "DicomScuTimeout": 30,
            "StorageCompression": False,
        }
        (folder / "orthanc.json").write_text(json.dumps(config, indent=2))
        self.log = (folder / "orthanc.log").open("wb")
        self.process = subprocess.Popen(
            [orthanc_or_skip(), str(folder / "orthanc.json")],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                self.get("/system")
                break
            except OSError:
                assert self.process.poll() is None, f"Orthanc exited: see {folder / 'orthanc.log'}"
                assert time.monotonic() < deadline, "Orthanc did not answer within 30 s"
                time.sleep(0.1)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def address(self) -> str:
        return f"ORTHANC@127.0.0.1:{self.dicom_port}"

    def request(self, method: str, path: str, body: bytes | None = None) -> bytes:
        import urllib.request

        request = urllib.request.Request(self.url + path, data=body, method=method)
        if body is not None:
            request.add_header("Content-Type", "application/dicom")
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.read()

    def get(self, path: str) -> Any:
        import json

        return json.loads(self.request("GET", path))

    def upload(self, dataset: Any) -> str:
        """Store ``dataset`` through the REST API (as a modality's C-STORE would); its id."""
        import json

        return json.loads(self.request("POST", "/instances", dicom_bytes(dataset)))["ID"]

    def study_instances(self, study_uid: str) -> list[Any]:
        """Every instance of the study ``study_uid``, as pydicom data sets."""
        import json

        import pydicom

        query = {"Level": "Instance", "Query": {"StudyInstanceUID": study_uid}}
        ids = json.loads(self.request("POST", "/tools/find", json.dumps(query).encode()))
        return [pydicom.dcmread(BytesIO(self.request("GET", f"/instances/{i}/file"))) for i in ids]

    def count(self, modality: str) -> int:
        import json

        query = {"Level": "Series", "Query": {"Modality": modality}, "Expand": True}
        series = json.loads(self.request("POST", "/tools/find", json.dumps(query).encode()))
        return sum(len(s["Instances"]) for s in series)

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(15)
        except Exception:
            self.process.kill()
            self.process.wait(5)
        self.log.close()
