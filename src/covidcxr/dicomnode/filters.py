"""Which DICOM objects the node analyses: frontal chest radiographs, and nothing else.

:func:`why_ignored` reads only the header (SOP class, Modality, BodyPartExamined, ViewPosition
and the view code), through :func:`covidcxr.dicom.header_summary`'s checks, so that a free-text
value is never echoed in a log line. The rule:

* the SOP class is Computed Radiography or Digital X-Ray (for presentation or for processing);
  everything else (CT, MR, structured reports, secondary captures, our own results) is ignored;
* Modality, when present, is CR or DX;
* BodyPartExamined, when present, is a chest term (:data:`CHEST_PARTS`);
* the view, when the header gives one, is frontal: ViewPosition AP or PA, and no view code
  (ViewCodeSequence) that names a lateral or oblique projection.

A header that says nothing about the body part or the view is analysed: many modalities leave
them empty, and the model's out-of-distribution check flags films unlike its training ones.
"""

from __future__ import annotations

from typing import Any

from covidcxr.dicom import header_summary

#: SOP classes of projection radiographs: CR, DX for presentation, DX for processing.
XRAY_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.1": "Computed Radiography Image Storage",
    "1.2.840.10008.5.1.4.1.1.1.1": "Digital X-Ray Image Storage - For Presentation",
    "1.2.840.10008.5.1.4.1.1.1.1.1": "Digital X-Ray Image Storage - For Processing",
}
XRAY_MODALITIES = frozenset({"CR", "DX"})
#: BodyPartExamined values of a chest film: PS3.16 Annex L's, and THORAX, which is not one
#: but which modalities write.
CHEST_PARTS = frozenset({"CHEST", "LUNG", "THORAX"})
FRONTAL_VIEWS = frozenset({"AP", "PA"})
#: Words in a view code's meaning (ViewCodeSequence, CID 4010) that rule a film out.
NOT_FRONTAL_WORDS = ("lateral", "oblique", "decubitus")


def why_ignored(dataset: Any) -> str | None:
    """None when ``dataset`` (a parsed ``pydicom.Dataset``, pixel data not needed) is a frontal
    chest radiograph to analyse, else why not, in words that quote no free-text value (they may
    be logged)."""
    sop_class = str(dataset.get("SOPClassUID", ""))
    if sop_class not in XRAY_SOP_CLASSES:
        return f"not a CR or DX image (SOP class {sop_class or 'missing'})"
    summary = header_summary(dataset, ("Modality", "BodyPartExamined", "ViewPosition"))
    for name in ("Modality", "BodyPartExamined", "ViewPosition"):
        if name in summary.dropped and not (name == "BodyPartExamined" and _chest_words(dataset)):
            return f"its {name} is not a defined term"
    values = summary.values
    modality = values.get("Modality")
    if modality is not None and modality not in XRAY_MODALITIES:
        return f"Modality {modality}, not CR or DX"
    part = values.get("BodyPartExamined")
    if part is not None and part not in CHEST_PARTS and not _chest_words(dataset):
        return f"BodyPartExamined {part}, not the chest"
    view = values.get("ViewPosition")
    if view is not None and view not in FRONTAL_VIEWS:
        return f"ViewPosition {view}, not a frontal (AP or PA) view"
    for item in dataset.get("ViewCodeSequence") or []:
        meaning = str(item.get("CodeMeaning", "")).lower()
        if any(word in meaning for word in NOT_FRONTAL_WORDS):
            return "its view code names a lateral, oblique or decubitus view"
    return None


def _chest_words(dataset: Any) -> bool:
    """BodyPartExamined is one of :data:`CHEST_PARTS`, defined term or not."""
    return str(dataset.get("BodyPartExamined", "")).strip().upper() in CHEST_PARTS
