"""Fixtures of the DICOM node's tests: the shipped models, a receiving SCP, Orthanc."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from dicomnode.node_helpers import Receiver


@pytest.fixture(autouse=True, scope="module")
def pydicom_validation_restored() -> Iterator[None]:
    """A node switches pydicom's value checks off for its process
    (:func:`covidcxr.dicomnode.scp.keep_values_out_of_logs`); the other tests get them back."""
    from pydicom import config

    modes = config.settings.reading_validation_mode, config.settings.writing_validation_mode
    yield
    config.settings.reading_validation_mode, config.settings.writing_validation_mode = modes


@pytest.fixture(scope="session")
def node_models() -> Any:
    """The shipped classifier and lung model, loaded once."""
    from covidcxr.dicomnode.analysis import NodeModels

    return NodeModels("seed-cnn-db", "unet-lite-db")


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    pacs = Receiver()
    yield pacs
    pacs.close()
