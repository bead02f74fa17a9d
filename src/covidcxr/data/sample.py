"""The record every layout reader produces: one image, its label and what is known about it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Sample:
    """One labelled image of a dataset.

    ``path`` is absolute. ``group`` names a set of images that must stay in one split (a patient,
    or a near-duplicate group); ``None`` until known. ``source`` is where the image came from
    (e.g. the host of the metadata URL); ``None`` when the dataset does not say.
    """

    path: Path
    label: int
    class_name: str
    mask_path: Path | None = None
    source: str | None = None
    group: str | None = None
