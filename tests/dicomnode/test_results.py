"""The SR and the Secondary Capture of one real X-ray: in the film's study, new series, new
UIDs derived from the film's, references to it, and the finding's contents."""

from __future__ import annotations

from io import BytesIO
from typing import Any

import highdicom as hd
import numpy as np
import pydicom
import pytest

from covidcxr.dicomnode.results import (
    OVERLAY_SIZE,
    build_overlay,
    build_report,
    result_uids,
)
from covidcxr.inference.artifact import NOTICE
from covidcxr.io import load_image_bytes
from dicomnode.node_helpers import PATIENT, dicom_bytes, real_pngs, xray_dataset

STUDY_ATTRIBUTES = ("StudyInstanceUID", "StudyDate", "StudyTime", "StudyID", *PATIENT)


@pytest.fixture(scope="module")
def analysed(node_models: Any) -> dict[str, Any]:
    source = xray_dataset(real_pngs(1)[0])  # a COVID film
    image = load_image_bytes(dicom_bytes(source), "film").image
    finding = node_models.analyse(image)
    model = node_models.description
    uids = result_uids(source, model.digest)
    report = build_report(source, finding, model, uids)
    overlay = build_overlay(source, image, finding, model, uids)
    # Through the bytes a PACS would store, and back.
    report, overlay = (pydicom.dcmread(BytesIO(dicom_bytes(d))) for d in (report, overlay))
    return {"source": source, "image": image, "finding": finding, "model": model,
            "report": report, "overlay": overlay}  # fmt: skip


def items_named(container: Any, meaning: str) -> list[Any]:
    return [
        i for i in container.ContentSequence if i.ConceptNameCodeSequence[0].CodeMeaning == meaning
    ]


def test_both_join_the_film_study_in_new_series(analysed: dict) -> None:
    source = analysed["source"]
    for result in (analysed["report"], analysed["overlay"]):
        for name in STUDY_ATTRIBUTES:
            assert result.get(name) == source.get(name), name
        assert result.SeriesInstanceUID != source.SeriesInstanceUID
        assert result.SOPInstanceUID != source.SOPInstanceUID
    report, overlay = analysed["report"], analysed["overlay"]
    assert report.SeriesInstanceUID != overlay.SeriesInstanceUID
    assert report.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.33"  # Comprehensive SR
    assert overlay.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7"  # Secondary Capture


def test_uids_are_the_same_when_a_film_is_analysed_again(analysed: dict) -> None:
    again = result_uids(analysed["source"], analysed["model"].digest)
    assert again.report_instance == analysed["report"].SOPInstanceUID
    assert again.overlay_instance == analysed["overlay"].SOPInstanceUID
    other = result_uids(xray_dataset(real_pngs(1)[0]), analysed["model"].digest)
    assert other.report_instance != again.report_instance


def test_the_report_holds_the_finding_and_references_the_film(analysed: dict, node_models) -> None:
    report, source, finding = analysed["report"], analysed["source"], analysed["finding"]

    assert report.ConceptNameCodeSequence[0].CodeValue == "18748-4"
    assert report.CompletionFlag == "COMPLETE" and report.VerificationFlag == "UNVERIFIED"
    evidence = report.CurrentRequestedProcedureEvidenceSequence[0]
    assert evidence.StudyInstanceUID == source.StudyInstanceUID
    referenced = evidence.ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert referenced.ReferencedSOPInstanceUID == source.SOPInstanceUID
    (image,) = items_named(report, "Source image")
    assert image.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID

    (predicted,) = items_named(report, "Finding")
    meanings = {"Normal": "Normal", "COVID": "COVID-19", "Viral Pneumonia": "Viral pneumonia"}
    assert predicted.ConceptCodeSequence[0].CodeMeaning == meanings[finding.predicted]
    assert finding.predicted == max(finding.probabilities, key=finding.probabilities.get)
    (confidence,) = items_named(predicted, "Calibrated confidence")
    assert float(confidence.MeasuredValueSequence[0].NumericValue) == pytest.approx(
        finding.confidence, abs=1e-5
    )
    (calibration,) = items_named(predicted, "Calibration method")
    temperature = node_models.classifier.card.temperature
    assert temperature != 1.0  # the shipped model is calibrated
    assert calibration.TextValue.startswith(f"temperature scaling, T = {temperature:.3f}")
    (table,) = items_named(report, "Class probabilities")
    probabilities = {
        item.ContentSequence[0].ConceptCodeSequence[0].CodeMeaning: float(
            item.MeasuredValueSequence[0].NumericValue
        )
        for item in table.ContentSequence
    }
    assert probabilities == pytest.approx(
        {"Normal": finding.probabilities["Normal"], "COVID-19": finding.probabilities["COVID"],
         "Viral pneumonia": finding.probabilities["Viral Pneumonia"]}, abs=1e-5)  # fmt: skip
    assert sum(probabilities.values()) == pytest.approx(1.0, abs=1e-4)
    (share,) = items_named(report, "Share of Grad-CAM evidence inside the lungs")
    assert float(share.MeasuredValueSequence[0].NumericValue) == pytest.approx(
        100 * finding.lung_fraction, abs=0.01
    )
    assert 0 < finding.lung_fraction < 1
    texts = {i.ConceptNameCodeSequence[0].CodeMeaning: i.TextValue for i in report.ContentSequence
             if i.ValueType == "TEXT"}  # fmt: skip
    assert texts["Not a diagnostic device"] == NOTICE
    assert texts["Algorithm Name"] == "seed-cnn-db"
    assert analysed["model"].digest[:16] in texts["Algorithm Version"]
    assert "COVID-19 Radiography Database" in texts["Training data"]
    assert texts["Lung segmentation model"] == "unet-lite-db"


def test_highdicom_reads_the_report_back(analysed: dict) -> None:
    report = hd.sr.ComprehensiveSR.from_dataset(analysed["report"])
    source = analysed["source"]
    assert report.get_evidence() == [
        (source.StudyInstanceUID, source.SeriesInstanceUID, source.SOPInstanceUID,
         source.SOPClassUID)
    ]  # fmt: skip


def test_the_overlay_shows_the_film_heatmap_and_lung_outline(analysed: dict) -> None:
    overlay, source, image = analysed["overlay"], analysed["source"], analysed["image"]
    assert overlay.PhotometricInterpretation == "RGB" and overlay.SamplesPerPixel == 3
    assert overlay.BurnedInAnnotation == "YES"
    assert list(overlay.ImageType)[:2] == ["DERIVED", "SECONDARY"]
    assert overlay.SourceImageSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    pixels = overlay.pixel_array
    height, width = image.shape
    assert max(pixels.shape[:2]) == min(OVERLAY_SIZE, max(height, width))
    assert pixels.shape[0] / pixels.shape[1] == pytest.approx(height / width, abs=0.01)
    cyan = np.all(pixels == (0, 255, 255), axis=2)
    assert cyan.mean() > 0.002  # the lung outline
    below_banner = pixels[60:].astype(int)
    colour = np.abs(below_banner[..., 0] - below_banner[..., 2])
    assert (colour > 40).mean() > 0.01  # heat colours, not only grey
    banner = pixels[:10]
    assert (banner == 0).mean() > 0.5  # the black banner line at the top
