"""The C-STORE SCP against a stand-in PACS (a pynetdicom SCP): what it analyses, ignores and
refuses, what it logs (never a patient attribute), its queue, and TLS."""

from __future__ import annotations

import logging
import shutil
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from covidcxr.dicomnode.scp import (
    CANNOT_UNDERSTAND,
    OUT_OF_RESOURCES,
    SUCCESS,
    Destination,
    DicomNode,
    NodeSettings,
    TlsSettings,
)
from dicomnode.node_helpers import PATIENT, Receiver, real_pngs, send_films, xray_dataset

pytestmark = pytest.mark.slow  # the shipped models, real associations


@pytest.fixture
def start_node(node_models: Any, tmp_path: Path) -> Iterator[Callable[..., DicomNode]]:
    nodes: list[DicomNode] = []

    def start(destination: str, **settings: Any) -> DicomNode:
        settings.setdefault("queue_dir", tmp_path / "queue")
        node = DicomNode(node_models, NodeSettings(Destination.parse(destination), port=0,
                                                   **settings))  # fmt: skip
        node.start()
        nodes.append(node)
        return node

    yield start
    for node in nodes:
        node.stop()


def ct_image() -> Any:
    film = xray_dataset(real_pngs(1)[0], Modality="CT", BodyPartExamined="CHEST")
    film.SOPClassUID = film.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    return film


def truncated_film() -> Any:
    film = xray_dataset(real_pngs(1)[0])
    film.PixelData = film.PixelData[: len(film.PixelData) // 3]  # a third of the pixels
    return film


def test_a_film_comes_back_as_report_and_overlay_and_nothing_private_is_logged(
    start_node: Callable[..., DicomNode], receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, pynetdicom's and highdicom's included
    node = start_node(receiver.address)
    film = xray_dataset(real_pngs(2)[1])
    assert send_films(node.port, [film]) == [SUCCESS]
    assert node.wait_idle(60)
    results = receiver.wait_for(2)
    assert sorted(r.Modality for r in results) == ["OT", "SR"]
    for result in results:
        assert result.StudyInstanceUID == film.StudyInstanceUID
        assert result.PatientID == film.PatientID
    assert node.counts.analysed == 1 and not list(node.pending.iterdir())
    logged = "\n".join(f"{r.name} {r.getMessage()}" for r in caplog.records)
    for name, value in PATIENT.items():
        if name == "PatientSex":  # one letter: in any log
            continue
        assert value not in logged and value.replace("^", " ") not in logged
    ours = [r.getMessage() for r in caplog.records if r.name.startswith("covidcxr")]
    assert ours and all(film.SOPInstanceUID in line for line in ours)


def test_a_name_in_a_coded_attribute_is_never_logged(
    start_node: Callable[..., DicomNode], receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    node = start_node(receiver.address)
    film = xray_dataset(real_pngs(1)[0], ViewPosition="DOE^JANE")
    assert send_films(node.port, [film]) == [SUCCESS]
    assert node.counts.ignored == 1
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert f"{film.SOPInstanceUID} ignored: its ViewPosition is not a defined term" in logged
    assert "DOE" not in logged


def test_other_objects_are_accepted_ignored_and_logged_once(
    start_node: Callable[..., DicomNode], receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="covidcxr")
    node = start_node(receiver.address)
    lateral = xray_dataset(real_pngs(1)[0], ViewPosition="LL")
    ct = ct_image()
    assert send_films(node.port, [ct, lateral]) == [SUCCESS, SUCCESS]
    assert node.wait_idle(5) and node.counts.ignored == 2
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("covidcxr")]
    assert len(lines) == 2
    assert lines[0].startswith(f"{ct.SOPInstanceUID} ignored: not a CR or DX image")
    assert lines[1].startswith(f"{lateral.SOPInstanceUID} ignored: ViewPosition LL")
    time.sleep(0.5)
    assert receiver.received == []


def test_an_undecodable_film_gets_a_failure_status_and_the_node_goes_on(
    start_node: Callable[..., DicomNode], receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="covidcxr")
    node = start_node(receiver.address)
    broken, good = truncated_film(), xray_dataset(real_pngs(1)[0])
    assert send_films(node.port, [broken, good]) == [CANNOT_UNDERSTAND, SUCCESS]
    assert node.wait_idle(60)
    assert len(receiver.wait_for(2)) == 2 and node.counts.refused == 1
    (refusal,) = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert refusal.startswith(f"{broken.SOPInstanceUID} refused: the pixel data cannot be read")
    assert not list(node.failed.iterdir()) and not list(node.pending.iterdir())  # never kept


def test_a_full_queue_answers_out_of_resources_and_a_burst_is_absorbed(
    start_node: Callable[..., DicomNode], receiver: Receiver
) -> None:
    node = start_node(receiver.address, max_queued=3)
    gate = threading.Event()
    analyse = node.analyse

    def held(image: np.ndarray) -> Any:
        gate.wait(30)
        return analyse(image)

    node.analyse = held
    films = [xray_dataset(png) for png in real_pngs(4)]
    statuses = send_films(node.port, films)
    assert statuses == [SUCCESS, SUCCESS, SUCCESS, OUT_OF_RESOURCES]
    assert len(list(node.pending.glob("*.dcm"))) == 3
    gate.set()
    assert node.wait_idle(60)
    assert len(receiver.wait_for(6)) == 6


def test_a_destination_down_keeps_the_film_until_it_is_back(
    start_node: Callable[..., DicomNode], node_models: Any
) -> None:
    from dicomnode.node_helpers import free_port

    port = free_port()
    node = start_node(f"PACS@127.0.0.1:{port}", retry_s=0.5)
    film = xray_dataset(real_pngs(1)[0])
    assert send_films(node.port, [film]) == [SUCCESS]
    time.sleep(2.0)
    assert [p.stem for p in node.pending.glob("*.dcm")] == [film.SOPInstanceUID]
    pacs = Receiver(port=port)
    try:
        assert node.wait_idle(30)
        assert len(pacs.wait_for(2)) == 2
    finally:
        pacs.close()


def test_a_stopped_node_resumes_its_queue(
    node_models: Any, receiver: Receiver, tmp_path: Path
) -> None:
    settings = NodeSettings(Destination.parse(receiver.address), tmp_path / "queue", port=0)
    first = DicomNode(node_models, settings)
    first.analyse = lambda image: time.sleep(60)  # never gets through a film
    first.start()
    films = [xray_dataset(png) for png in real_pngs(3)]
    assert send_films(first.port, films) == [SUCCESS] * 3
    first.stop(timeout=0.5)
    assert len(list(first.pending.glob("*.dcm"))) == 3
    second = DicomNode(node_models, settings)
    second.start()
    try:
        assert second.counts.resumed == 3
        assert second.wait_idle(60)
        results = receiver.wait_for(6)
        assert {r.StudyInstanceUID for r in results} == {f.StudyInstanceUID for f in films}
    finally:
        second.stop()


# ------------------------------------------------------------------------------------ TLS


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A CA, and a certificate for ``localhost`` signed by it (openssl, from Debian)."""
    if shutil.which("openssl") is None:
        pytest.fail("the TLS test needs the openssl command (apt-get install openssl)")
    folder = tmp_path_factory.mktemp("tls")

    def openssl(*arguments: str) -> None:
        subprocess.run(["openssl", *arguments], cwd=folder, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
            "ca.pem", "-days", "2", "-subj", "/CN=covidcxr test CA")  # fmt: skip
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "node.key", "-out", "node.csr",
            "-subj", "/CN=localhost")  # fmt: skip
    (folder / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "node.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "node.pem", "-days", "2", "-extfile", "san.ext")  # fmt: skip
    return {name: folder / name for name in ("ca.pem", "node.pem", "node.key")}


def test_tls_both_ways(start_node: Callable[..., DicomNode], certificates: dict[str, Path]) -> None:
    tls = TlsSettings(certificates["node.pem"], certificates["node.key"], certificates["ca.pem"])
    pacs = Receiver(ssl_context=tls.server_context())
    try:
        node = start_node(pacs.address.replace("127.0.0.1", "localhost"), tls=tls,
                          listen_tls=True, send_tls=True)  # fmt: skip
        film = xray_dataset(real_pngs(1)[0])
        assert send_films(node.port, [film], ssl_context=tls.client_context()) == [SUCCESS]
        assert node.wait_idle(60)
        assert sorted(r.Modality for r in pacs.wait_for(2)) == ["OT", "SR"]

        from pynetdicom import AE

        plain = AE(ae_title="MODALITY")
        plain.add_requested_context(film.SOPClassUID)
        plain.acse_timeout = plain.network_timeout = 5
        assert not plain.associate("127.0.0.1", node.port).is_established
        untrusted = ssl.create_default_context(cafile=str(certificates["ca.pem"]))  # no client cert
        assert not plain.associate(
            "127.0.0.1", node.port, tls_args=(untrusted, "localhost")
        ).is_established
    finally:
        pacs.close()
