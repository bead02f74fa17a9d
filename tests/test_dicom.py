"""covidcxr.dicom.header_summary: only checked header values leave covidcxr, never free text."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from covidcxr.dicom import DEFINED_TERMS, MAX_TEXT_LENGTH, SUMMARY_TAGS, header_summary
from covidcxr.io import ImageReadError
from helpers import write_dicom

# The files here hold values DICOM forbids on purpose (free text in a CS, control characters):
# pydicom rightly warns when writing them.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:pydicom")

PIXELS = (np.arange(20 * 30).reshape(20, 30) % 4096).astype(np.uint16)


def test_defined_terms_are_kept(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "chest.dcm", PIXELS, ViewPosition="PA", BodyPartExamined="CHEST")
    summary = header_summary(path.read_bytes())
    assert summary.values == {
        "Modality": "DX",
        "PhotometricInterpretation": "MONOCHROME2",
        "ViewPosition": "PA",
        "BodyPartExamined": "CHEST",
        "Rows": 20,
        "Columns": 30,
        "BitsStored": 12,
    }
    assert summary.dropped == {}
    assert header_summary(path) == summary  # a path reads the same as bytes


def test_free_text_in_a_coded_attribute_is_dropped_and_never_echoed(tmp_path: Path) -> None:
    path = write_dicom(
        tmp_path / "leaky.dcm",
        PIXELS,
        ViewPosition="DOE^JOHN",  # a person's name where a view should be
        BodyPartExamined="Thorax of Mr Smith",
        Modality="XRAY",
    )
    summary = header_summary(path.read_bytes())
    for name in ("ViewPosition", "BodyPartExamined", "Modality"):
        assert name not in summary.values
        assert "defined terms" in summary.dropped[name]
    everything = repr(summary)
    assert "DOE" not in everything and "JOHN" not in everything and "Smith" not in everything
    assert summary.values["Rows"] == 20  # the rest is still there


def test_view_positions_of_dicom_are_all_accepted(tmp_path: Path) -> None:
    for view in sorted(DEFINED_TERMS["ViewPosition"]):
        path = write_dicom(tmp_path / f"{view}.dcm", PIXELS, ViewPosition=view)
        assert header_summary(path).values["ViewPosition"] == view
    assert {"AP", "PA", "LL", "RL", "RLD", "LLD", "RLO", "LLO"} == DEFINED_TERMS["ViewPosition"]


def test_numbers_out_of_range_are_dropped(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "odd.dcm", PIXELS, BitsStored=12)
    from pydicom import dcmread

    dataset = dcmread(path)
    dataset.Rows = 0
    summary = header_summary(dataset)
    assert "Rows" not in summary.values and "range" in summary.dropped["Rows"]


def test_other_text_loses_control_characters_and_is_cut(tmp_path: Path) -> None:
    path = write_dicom(
        tmp_path / "text.dcm",
        PIXELS,
        SeriesDescription="Chest\x1b[2J\x00 PA\u202e" + "x" * 200,
    )
    summary = header_summary(path, tags=("SeriesDescription",))
    text = summary.values["SeriesDescription"]
    assert isinstance(text, str) and len(text) == MAX_TEXT_LENGTH
    assert text.startswith("Chest[2J PA") and "\x1b" not in text and "\u202e" not in text
    assert all(ch.isprintable() for ch in text)


def test_absent_attributes_are_left_out(tmp_path: Path) -> None:
    summary = header_summary(write_dicom(tmp_path / "plain.dcm", PIXELS))
    assert "ViewPosition" not in summary.values and "ViewPosition" not in summary.dropped
    assert set(summary.values) <= set(SUMMARY_TAGS)


def test_bytes_that_are_not_dicom_raise_image_read_error() -> None:
    with pytest.raises(ImageReadError, match="the upload"):
        header_summary(b"\x00" * 3)
