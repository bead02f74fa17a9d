"""Which objects the node analyses: frontal chest CR / DX films; CT, laterals, reports and
other body parts are ignored, with reasons that quote no free text."""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset

from covidcxr.dicomnode.filters import why_ignored

DX = "1.2.840.10008.5.1.4.1.1.1.1"
CR = "1.2.840.10008.5.1.4.1.1.1"
CT = "1.2.840.10008.5.1.4.1.1.2"
SR = "1.2.840.10008.5.1.4.1.1.88.33"
SC = "1.2.840.10008.5.1.4.1.1.7"


def header(**attributes: object) -> Dataset:
    dataset = Dataset()
    for name, value in attributes.items():
        setattr(dataset, name, value)
    return dataset


@pytest.mark.parametrize(
    "attributes",
    [
        {"SOPClassUID": DX, "Modality": "DX", "BodyPartExamined": "CHEST", "ViewPosition": "PA"},
        {"SOPClassUID": CR, "Modality": "CR", "ViewPosition": "AP"},
        {"SOPClassUID": DX + ".1"},  # DX for processing, a header that says nothing more
        {"SOPClassUID": DX, "BodyPartExamined": "THORAX", "ViewPosition": ""},
    ],
)
def test_frontal_chest_films_are_analysed(attributes: dict) -> None:
    assert why_ignored(header(**attributes)) is None


@pytest.mark.parametrize(
    ("attributes", "reason"),
    [
        ({"SOPClassUID": CT, "Modality": "CT"}, "not a CR or DX image"),
        ({"SOPClassUID": SR, "Modality": "SR"}, "not a CR or DX image"),
        ({"SOPClassUID": SC, "Modality": "OT"}, "not a CR or DX image"),  # our own overlays
        ({"Modality": "DX"}, "SOP class missing"),
        ({"SOPClassUID": DX, "ViewPosition": "LL"}, "ViewPosition LL, not a frontal"),
        ({"SOPClassUID": CR, "ViewPosition": "RL"}, "ViewPosition RL"),
        ({"SOPClassUID": DX, "BodyPartExamined": "KNEE"}, "BodyPartExamined KNEE, not the chest"),
        ({"SOPClassUID": DX, "Modality": "MG"}, "Modality MG, not CR or DX"),
    ],
)
def test_other_objects_are_ignored_with_a_reason(attributes: dict, reason: str) -> None:
    assert reason in why_ignored(header(**attributes))


def test_a_lateral_view_code_is_ignored() -> None:
    view = Dataset()
    view.CodeValue, view.CodingSchemeDesignator = "399173006", "SCT"
    view.CodeMeaning = "left lateral"
    film = header(SOPClassUID=DX, ViewCodeSequence=[view])
    assert "lateral" in why_ignored(film)


@pytest.mark.filterwarnings("ignore:Invalid value for VR CS:UserWarning")
def test_free_text_is_never_quoted() -> None:
    film = header(SOPClassUID=DX, ViewPosition="DOE^JANE", BodyPartExamined="CHEST")
    reason = why_ignored(film)
    assert reason == "its ViewPosition is not a defined term"
    assert "DOE" not in reason
