"""The two DICOM objects the node sends back for each film, built with highdicom:

* a Comprehensive SR (:func:`build_report`): the predicted class with its calibrated
  confidence, the probability of each class, the share of Grad-CAM's evidence inside the lungs,
  the model's name, version and training data, warnings, and the not-a-diagnostic-device
  notice; the source image is referenced as evidence and in the content tree;
* a Secondary Capture (:func:`build_overlay`): the film with the Grad-CAM heatmap, the lung
  outline and a one-line banner burnt in (RGB, at most :data:`OVERLAY_SIZE` px on its longest
  side), so that any viewer shows it; it references the source image (SourceImageSequence).

Both join the source's study: highdicom copies the patient and study attributes, each goes in a
new series, and their UIDs are derived from the source's SOP Instance UID and the model's
weights (:func:`result_uids`), so a film analysed twice (a restart, a resend) gives the same
objects, which an archive keeps once.

Codes: DCM and SNOMED CT where a concept has one (Finding, Probability, Algorithm Name...), the
private scheme :data:`CODING_SCHEME` ("99COVIDCXR") for the others.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from covidcxr.dicomnode.analysis import Finding, ModelDescription
from covidcxr.inference.artifact import NOTICE

CODING_SCHEME = "99COVIDCXR"
MANUFACTURER = "covidcxr (research use only)"
#: Longest side of the Secondary Capture, px (a radiograph may be 4,000 px: 48 MB as RGB).
OVERLAY_SIZE = 1024
REPORT_SERIES_NUMBER = 9901
OVERLAY_SERIES_NUMBER = 9902
REPORT_SERIES_DESCRIPTION = "covidcxr AI result (research use only, not for diagnosis)"
OVERLAY_SERIES_DESCRIPTION = "covidcxr Grad-CAM overlay (research use only, not for diagnosis)"

#: SNOMED CT concepts for the classes covidcxr's models know; other names get a private code.
CLASS_CODES = {
    "Normal": ("17621005", "SCT", "Normal"),
    "COVID": ("840539006", "SCT", "COVID-19"),
    "Viral Pneumonia": ("75570004", "SCT", "Viral pneumonia"),
    "Lung Opacity": ("LUNGOPACITY", CODING_SCHEME, "Lung opacity"),
}


def _code(value: str, scheme: str, meaning: str) -> Any:
    from highdicom.sr import CodedConcept

    return CodedConcept(value=value, scheme_designator=scheme, meaning=meaning)


def class_code(name: str) -> Any:
    """The coded concept of class ``name`` (SNOMED CT for Normal, COVID, Viral Pneumonia)."""
    if name in CLASS_CODES:
        return _code(*CLASS_CODES[name])
    private = "".join(ch for ch in name.upper() if ch.isalnum())[:16] or "CLASS"
    return _code(private, CODING_SCHEME, name)


#: Concepts of the report's content items.
REPORT_TITLE = ("18748-4", "LN", "Diagnostic imaging report")
FINDING = ("121071", "DCM", "Finding")
PROBABILITY = ("122157", "DCM", "Probability")
CONFIDENCE = ("CONFIDENCE", CODING_SCHEME, "Calibrated confidence")
CALIBRATION = ("CALIBRATION", CODING_SCHEME, "Calibration method")
CLASS_PROBABILITIES = ("PROBABILITIES", CODING_SCHEME, "Class probabilities")
LUNG_SHARE = ("LUNGSHARE", CODING_SCHEME, "Share of Grad-CAM evidence inside the lungs")
ALGORITHM_NAME = ("111001", "DCM", "Algorithm Name")
ALGORITHM_VERSION = ("111003", "DCM", "Algorithm Version")
TRAINING_DATA = ("TRAININGDATA", CODING_SCHEME, "Training data")
LUNG_MODEL = ("LUNGMODEL", CODING_SCHEME, "Lung segmentation model")
WARNING = ("WARNING", CODING_SCHEME, "Warning")
DEVICE_NOTICE = ("NOTICE", CODING_SCHEME, "Not a diagnostic device")
SOURCE_IMAGE = ("121324", "DCM", "Source image")
NO_UNITS = ("1", "UCUM", "no units")
PERCENT = ("%", "UCUM", "percent")


@dataclass(frozen=True)
class ResultUids:
    """UIDs of one film's results (see :func:`result_uids`)."""

    report_series: str
    report_instance: str
    overlay_series: str
    overlay_instance: str


def result_uids(source: Any, digest: str) -> ResultUids:
    """Deterministic UIDs (``2.25.`` + a UUID made from a SHA-256) for the results of ``source`` (a
    ``pydicom.Dataset``) by the model whose weights digest is ``digest``: the films of one
    source series share one report series and one overlay series."""
    import hashlib
    import uuid

    def uid(*parts: str) -> str:
        # A name-based UUID (version 5 layout) under the 2.25 root: pydicom's
        # generate_uid ignores its entropy sources when there is no prefix.
        digest_bytes = hashlib.sha256("\x00".join(["covidcxr", digest, *parts]).encode()).digest()
        return f"2.25.{uuid.UUID(bytes=digest_bytes[:16], version=5).int}"

    series, instance = str(source.SeriesInstanceUID), str(source.SOPInstanceUID)
    return ResultUids(
        report_series=uid("report-series", series),
        report_instance=uid("report", instance),
        overlay_series=uid("overlay-series", series),
        overlay_instance=uid("overlay", instance),
    )


def build_report(source: Any, finding: Finding, model: ModelDescription, uids: ResultUids) -> Any:
    """The Comprehensive SR (``highdicom.sr.ComprehensiveSR``) of ``finding`` on ``source``
    (the analysed film, a ``pydicom.Dataset``; pixel data not needed)."""
    import highdicom as hd
    from highdicom.sr import (
        CodeContentItem,
        ContainerContentItem,
        ImageContentItem,
        NumContentItem,
        RelationshipTypeValues,
        TextContentItem,
    )

    contains = RelationshipTypeValues.CONTAINS
    confidence = NumContentItem(
        name=_code(*CONFIDENCE),
        value=round(finding.confidence, 6),
        unit=_code(*NO_UNITS),
        relationship_type=RelationshipTypeValues.HAS_PROPERTIES,
    )
    calibration = TextContentItem(
        name=_code(*CALIBRATION),
        value=model.calibration,
        relationship_type=RelationshipTypeValues.HAS_PROPERTIES,
    )
    predicted = CodeContentItem(
        name=_code(*FINDING),
        value=class_code(finding.predicted),
        relationship_type=contains,
    )
    predicted.ContentSequence = hd.sr.ContentSequence([confidence, calibration])
    per_class = []
    for name, probability in finding.probabilities.items():
        item = NumContentItem(
            name=_code(*PROBABILITY),
            value=round(probability, 6),
            unit=_code(*NO_UNITS),
            relationship_type=contains,
        )
        item.ContentSequence = hd.sr.ContentSequence(
            [
                CodeContentItem(
                    name=_code(*FINDING),
                    value=class_code(name),
                    relationship_type=RelationshipTypeValues.HAS_CONCEPT_MOD,
                )
            ]
        )
        per_class.append(item)
    probabilities = ContainerContentItem(
        name=_code(*CLASS_PROBABILITIES), relationship_type=contains
    )
    probabilities.ContentSequence = hd.sr.ContentSequence(per_class)

    def text(concept: tuple[str, str, str], value: str) -> Any:
        # An SR text (UT) holds any length, but one line per item reads best in viewers.
        return TextContentItem(name=_code(*concept), value=value, relationship_type=contains)

    items: list[Any] = [
        text(DEVICE_NOTICE, NOTICE),
        predicted,
        probabilities,
    ]
    if finding.lung_fraction is not None:
        items.append(
            NumContentItem(
                name=_code(*LUNG_SHARE),
                value=round(100.0 * finding.lung_fraction, 2),
                unit=_code(*PERCENT),
                relationship_type=contains,
            )
        )
    items += [text(WARNING, warning) for warning in finding.warnings]
    items += [
        text(ALGORITHM_NAME, model.name),
        text(ALGORITHM_VERSION, model.version),
        text(TRAINING_DATA, model.training_data),
    ]
    if model.segmenter is not None:
        items.append(text(LUNG_MODEL, model.segmenter))
    items.append(
        ImageContentItem(
            name=_code(*SOURCE_IMAGE),
            referenced_sop_class_uid=str(source.SOPClassUID),
            referenced_sop_instance_uid=str(source.SOPInstanceUID),
            relationship_type=contains,
        )
    )
    root = ContainerContentItem(name=_code(*REPORT_TITLE))
    root.ContentSequence = hd.sr.ContentSequence(items)
    report = hd.sr.ComprehensiveSR(
        evidence=[source],
        content=root,
        series_instance_uid=uids.report_series,
        series_number=REPORT_SERIES_NUMBER,
        sop_instance_uid=uids.report_instance,
        instance_number=int(source.get("InstanceNumber") or 1),
        manufacturer=MANUFACTURER,
        is_complete=True,
        series_description=REPORT_SERIES_DESCRIPTION,
    )
    report.CodingSchemeIdentificationSequence = [_private_scheme()]
    return report


def build_overlay(
    source: Any,
    image: np.ndarray,
    finding: Finding,
    model: ModelDescription,
    uids: ResultUids,
) -> Any:
    """The Secondary Capture (``highdicom.sc.SCImage``, RGB) of ``image`` (the film in the
    covidcxr convention, float32 ``(H, W)`` in [0, 1]) with ``finding``'s heatmap, lung outline
    and a banner burnt in."""
    import highdicom as hd
    from pydicom.dataset import Dataset

    pixels = overlay_pixels(image, finding, model)
    orientation = source.get("PatientOrientation")
    overlay = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=source,
        pixel_array=pixels,
        photometric_interpretation="RGB",
        bits_allocated=8,
        coordinate_system="PATIENT",
        series_instance_uid=uids.overlay_series,
        series_number=OVERLAY_SERIES_NUMBER,
        sop_instance_uid=uids.overlay_instance,
        instance_number=int(source.get("InstanceNumber") or 1),
        manufacturer=MANUFACTURER,
        patient_orientation=tuple(orientation)
        if orientation and len(orientation) == 2
        else ("", ""),
        transfer_syntax_uid="1.2.840.10008.1.2.1",
    )
    overlay.SeriesDescription = OVERLAY_SERIES_DESCRIPTION
    overlay.ImageType = ["DERIVED", "SECONDARY"]
    overlay.BurnedInAnnotation = "YES"
    overlay.DerivationDescription = (
        f"Grad-CAM of {model.name} over the film"
        + (f", lung outline by {model.segmenter}" if model.segmenter else "")
        + "; research use only, not for diagnosis"
    )
    reference = Dataset()
    reference.ReferencedSOPClassUID = source.SOPClassUID
    reference.ReferencedSOPInstanceUID = source.SOPInstanceUID
    overlay.SourceImageSequence = [reference]
    return overlay


def overlay_pixels(image: np.ndarray, finding: Finding, model: ModelDescription) -> np.ndarray:
    """uint8 RGB ``(h, w, 3)``: :func:`~covidcxr.analysis.explain.saliency_overlay` of the film
    at most :data:`OVERLAY_SIZE` px on its longest side, with a banner naming the model, the
    predicted class and its confidence, and that this is not for diagnosis."""
    from PIL import Image, ImageDraw, ImageFont

    from covidcxr.analysis.explain import saliency_overlay
    from covidcxr.data.transforms import resize_float_map, resize_mask

    height, width = image.shape
    scale = min(1.0, OVERLAY_SIZE / max(height, width))
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    shown = np.clip(resize_float_map(image, size), 0.0, 1.0)
    heat = np.clip(resize_float_map(finding.saliency, size), 0.0, 1.0)
    mask = None if finding.lung_mask is None else resize_mask(finding.lung_mask, size)
    picture = Image.fromarray(saliency_overlay(shown, heat, mask))
    banner = (
        f"covidcxr {model.name}: {finding.predicted} {100 * finding.confidence:.0f} %"
        + (
            ""
            if finding.lung_fraction is None
            else f", {100 * finding.lung_fraction:.0f} % in lungs"
        )
        + " - RESEARCH USE ONLY, NOT FOR DIAGNOSIS"
    )
    font_size = max(10, size[1] // 60)
    font = ImageFont.load_default(size=font_size)
    draw = ImageDraw.Draw(picture)
    box = draw.textbbox((0, 0), banner, font=font)
    draw.rectangle((0, 0, size[1], box[3] + 2 * (font_size // 3)), fill=(0, 0, 0))
    draw.text((font_size // 3, font_size // 3), banner, fill=(255, 255, 255), font=font)
    return np.asarray(picture, dtype=np.uint8)


def _private_scheme() -> Any:
    from pydicom.dataset import Dataset

    scheme = Dataset()
    scheme.CodingSchemeDesignator = CODING_SCHEME
    scheme.CodingSchemeName = "covidcxr result concepts"
    scheme.CodingSchemeResponsibleOrganization = "covidcxr"
    return scheme
