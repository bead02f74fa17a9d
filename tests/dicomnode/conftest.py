"""What the DICOM node's tests share: real X-rays as DICOM films, the shipped models, a
receiving SCP, and Orthanc."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

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
    from io import BytesIO

    buffer = BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def node_models() -> Any:
    """The shipped classifier and lung model, loaded once."""
    from covidcxr.dicomnode.analysis import NodeModels

    return NodeModels("seed-cnn-db", "unet-lite-db")


class Receiver:
    """A C-STORE SCP standing in for the PACS: keeps what it is sent in ``received``."""

    def __init__(self, ssl_context: Any = None) -> None:
        from pynetdicom import AE, AllStoragePresentationContexts, evt

        self.received: list[Any] = []
        self.arrived = threading.Condition()
        self.port = free_port()
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


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    pacs = Receiver()
    yield pacs
    pacs.close()
