"""covidcxr's DICOM node behind a real Orthanc (Debian's package, started here on loopback
with its own configuration and storage): films stored in Orthanc are forwarded to the node by
the README's routing script, and the report and overlay must appear in Orthanc, in the film's
study, with the right references and contents. Then a burst of 20 studies, a truncated film,
a CT image, and the node killed mid-queue.

Under CI (``CI=true``) ``make test`` installs Orthanc and these tests must run; elsewhere they
are skipped, with the reason, when Orthanc is missing.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from covidcxr.dicomnode.scp import Destination, DicomNode, NodeSettings
from covidcxr.io import load_image_bytes
from dicomnode.node_helpers import (
    Orthanc,
    dicom_bytes,
    free_port,
    orthanc_or_skip,
    real_pngs,
    xray_dataset,
)

pytestmark = pytest.mark.slow

SR_CLASS, SC_CLASS = "1.2.840.10008.5.1.4.1.1.88.33", "1.2.840.10008.5.1.4.1.1.7"


@pytest.fixture(scope="module")
def hospital(node_models: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """Orthanc routing CR / DX to a node (in this process) that sends results back to it."""
    orthanc_or_skip()
    folder = tmp_path_factory.mktemp("hospital")
    node_port = free_port()
    orthanc = Orthanc(folder / "orthanc", node_port)
    settings = NodeSettings(
        Destination.parse(orthanc.address), folder / "queue", port=node_port, retry_s=1.0
    )
    node = DicomNode(node_models, settings)
    node.start()
    yield {"orthanc": orthanc, "node": node}
    node.stop()
    orthanc.close()


def wait_for_study(orthanc: Orthanc, study_uid: str, count: int, timeout: float) -> list[Any]:
    deadline = time.monotonic() + timeout
    while True:
        instances = orthanc.study_instances(study_uid)
        if len(instances) >= count or time.monotonic() > deadline:
            return instances
        time.sleep(0.25)


def by_class(instances: list[Any]) -> dict[str, list[Any]]:
    found: dict[str, list[Any]] = {}
    for instance in instances:
        found.setdefault(str(instance.SOPClassUID), []).append(instance)
    return found


def test_a_film_stored_in_orthanc_gets_its_report_and_overlay_in_its_study(
    hospital: dict, node_models: Any
) -> None:
    orthanc = hospital["orthanc"]
    film = xray_dataset(real_pngs(3)[2])  # a viral pneumonia film
    orthanc.upload(film)
    instances = wait_for_study(orthanc, film.StudyInstanceUID, 3, timeout=60)
    found = by_class(instances)
    assert sorted(found) == sorted([film.SOPClassUID, SR_CLASS, SC_CLASS]), found.keys()
    (report,), (overlay,) = found[SR_CLASS], found[SC_CLASS]
    for result in (report, overlay):
        for name in ("PatientName", "PatientID", "PatientBirthDate", "StudyDate", "StudyID",
                     "AccessionNumber"):  # fmt: skip
            assert result.get(name) == film.get(name), name
        assert result.SeriesInstanceUID not in (film.SeriesInstanceUID,)
    assert report.SeriesInstanceUID != overlay.SeriesInstanceUID
    evidence = report.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
    assert evidence.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == film.SOPInstanceUID
    assert overlay.SourceImageSequence[0].ReferencedSOPInstanceUID == film.SOPInstanceUID

    # The report says what the model says of this film, read here on our own.
    expected = node_models.analyse(load_image_bytes(dicom_bytes(film), "film").image)
    items = {i.ConceptNameCodeSequence[0].CodeMeaning: i for i in report.ContentSequence}
    finding = items["Finding"]
    meanings = {"Normal": "Normal", "COVID": "COVID-19", "Viral Pneumonia": "Viral pneumonia"}
    assert finding.ConceptCodeSequence[0].CodeMeaning == meanings[expected.predicted]
    confidence = finding.ContentSequence[0].MeasuredValueSequence[0].NumericValue
    assert float(confidence) == pytest.approx(expected.confidence, abs=1e-5)
    share = items["Share of Grad-CAM evidence inside the lungs"].MeasuredValueSequence[0]
    assert float(share.NumericValue) == pytest.approx(100 * expected.lung_fraction, abs=0.01)
    assert "not a diagnostic device" in items["Not a diagnostic device"].TextValue
    pixels = overlay.pixel_array
    assert pixels.shape[2] == 3
    assert max(pixels.shape[:2]) == min(1024, max(film.Rows, film.Columns))


def test_twenty_studies_at_once_nothing_lost(hospital: dict) -> None:
    orthanc, node = hospital["orthanc"], hospital["node"]
    films = [xray_dataset(png) for png in real_pngs(20)]
    started = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(orthanc.upload, films))
    deadline = started + 240
    for film in films:
        instances = wait_for_study(orthanc, film.StudyInstanceUID, 3, deadline - time.monotonic())
        classes = sorted(str(i.SOPClassUID) for i in instances)
        assert classes == sorted([film.SOPClassUID, SR_CLASS, SC_CLASS]), film.SOPInstanceUID
    assert node.wait_idle(10)
    elapsed = time.monotonic() - started
    print(f"20 studies through Orthanc and the node in {elapsed:.1f} s")


def test_a_truncated_film_is_refused_and_a_ct_ignored(hospital: dict) -> None:
    orthanc, node = hospital["orthanc"], hospital["node"]
    broken = xray_dataset(real_pngs(1)[0])
    broken.PixelData = broken.PixelData[: len(broken.PixelData) // 2]
    ct = xray_dataset(real_pngs(1)[0], Modality="CT")
    ct.SOPClassUID = ct.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    refused, ignored = node.counts.refused, node.counts.ignored
    broken_id, ct_id = orthanc.upload(broken), orthanc.upload(ct)
    with pytest.raises(urllib.error.HTTPError):  # Orthanc hears the node's failure status
        orthanc.request("POST", "/modalities/covidcxr/store", broken_id.encode())
    orthanc.request("POST", "/modalities/covidcxr/store", ct_id.encode())  # success: ignored
    assert node.counts.ignored == ignored + 1
    assert node.counts.refused >= refused + 1
    assert node.wait_idle(30)
    time.sleep(1.0)
    assert len(orthanc.study_instances(broken.StudyInstanceUID)) == 1
    assert len(orthanc.study_instances(ct.StudyInstanceUID)) == 1
    good = xray_dataset(real_pngs(1)[0])  # and the node still works
    orthanc.upload(good)
    assert len(wait_for_study(orthanc, good.StudyInstanceUID, 3, timeout=60)) == 3


def node_command(orthanc: Orthanc, port: int, queue: Path) -> list[str]:
    # Through the command line, as an operator starts it.
    return [sys.executable, "-c", "import covidcxr.cli.dicom; from covidcxr.cli import app; app()",
            "dicom", "listen", "seed-cnn-db", "--seg", "unet-lite-db", "--port", str(port),
            "--send-to", orthanc.address, "--queue", str(queue), "--retry", "1"]  # fmt: skip


def start_listening(command: list[str], log: Path) -> subprocess.Popen:
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log.open("ab"), text=True)
    assert process.stdout is not None
    line = process.stdout.readline()  # printed once the models are loaded and the port bound
    assert "listening on" in line, (line, log.read_text())
    return process


def test_the_node_killed_mid_queue_resumes_and_loses_nothing(tmp_path: Path) -> None:
    orthanc_or_skip()
    port = free_port()
    orthanc = Orthanc(tmp_path / "orthanc", port)
    queue, log = tmp_path / "queue", tmp_path / "node.log"
    command = node_command(orthanc, port, queue)
    try:
        node = start_listening(command, log)
        films = [xray_dataset(png) for png in real_pngs(8)]
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(orthanc.upload, films))
        deadline = time.monotonic() + 120
        pending = queue / "pending"
        # Two reports stored: the first film is done and gone from the queue.
        while orthanc.count("SR") < 2 or not any(pending.glob("*.dcm")):
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        node.send_signal(signal.SIGKILL)
        node.wait(10)
        left = len(list(pending.glob("*.dcm")))
        assert 1 <= left < 8, left
        node = start_listening(command, log)
        for film in films:
            instances = wait_for_study(orthanc, film.StudyInstanceUID, 3, timeout=120)
            assert len(by_class(instances).get(SR_CLASS, [])) == 1, log.read_text()
            assert len(by_class(instances).get(SC_CLASS, [])) == 1
        assert f"resuming {left} film(s)" in log.read_text()
        node.send_signal(signal.SIGTERM)
        assert node.wait(30) == 0 or os.name != "posix"
    finally:
        if node.poll() is None:
            node.kill()
        orthanc.close()
    print(json.dumps({"left_in_queue_at_kill": left}))


def test_watch_mode_finds_fetches_and_stores_through_dicomweb_and_resumes(
    node_models: Any, tmp_path: Path
) -> None:
    from dicomweb_client import DICOMwebClient

    from covidcxr.dicomnode.web import ProcessedLog, watch_once

    orthanc_or_skip()
    orthanc = Orthanc(tmp_path / "orthanc", free_port(), route=False)
    try:
        films = [xray_dataset(png) for png in real_pngs(2)]
        ct = xray_dataset(real_pngs(1)[0], Modality="CT")
        ct.SOPClassUID = ct.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        for dataset in [*films, ct]:
            orthanc.upload(dataset)
        client = DICOMwebClient(f"{orthanc.url}/dicom-web")
        state = tmp_path / "done.txt"
        counts = watch_once(node_models, client, ProcessedLog(state))
        assert (counts.analysed, counts.failed) == (2, 0)
        for film in films:
            found = by_class(orthanc.study_instances(film.StudyInstanceUID))
            assert len(found[SR_CLASS]) == 1 and len(found[SC_CLASS]) == 1
            (report,) = found[SR_CLASS]
            assert report.StudyInstanceUID == film.StudyInstanceUID
            evidence = report.CurrentRequestedProcedureEvidenceSequence[0]
            referenced = evidence.ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
            assert referenced.ReferencedSOPInstanceUID == film.SOPInstanceUID
        assert len(orthanc.study_instances(ct.StudyInstanceUID)) == 1  # never asked for
        assert set(state.read_text().split()) == {f.SOPInstanceUID for f in films}
        # A restart reads the state: nothing is analysed twice; a new film is.
        late = xray_dataset(real_pngs(3)[2])
        orthanc.upload(late)
        again = watch_once(node_models, client, ProcessedLog(state))
        assert again.analysed == 1
        assert orthanc.count("SR") == 3
    finally:
        orthanc.close()
