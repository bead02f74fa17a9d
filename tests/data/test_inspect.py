"""``data inspect``: counts, file facts, duplicates, unreadable files (never fatal), figures."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from covidcxr.data.inspect import format_report, inspect_dataset


@pytest.fixture()
def messy_dataset(tmp_path: Path, real_dataset: Path) -> Path:
    """Real images in the newest layout, plus a resized duplicate and three bad files."""
    root = tmp_path / "COVID-19_Radiography_Dataset"
    for folder in ("COVID", "Normal", "Viral Pneumonia"):
        for kind in ("images", "masks"):
            (root / folder / kind).mkdir(parents=True)
        for image in sorted((real_dataset / folder / "images").glob("*.png"))[:4]:
            shutil.copy(image, root / folder / "images" / image.name)
            mask = real_dataset / folder / "masks" / image.name
            if mask.exists():
                shutil.copy(mask, root / folder / "masks" / image.name)
    original = root / "COVID" / "images" / "COVID-1.png"
    with Image.open(original) as image:
        image.resize((256, 256)).save(root / "COVID" / "images" / "COVID-900.png")
    images = root / "Normal" / "images"
    (images / "Normal-901.png").touch()
    (images / "Normal-902.png").write_text("this is not a picture\n" * 10)
    (images / "Normal-903.png").write_bytes(original.read_bytes()[:4000])
    return root


def test_inspect_lists_everything_and_survives_bad_files(
    messy_dataset: Path, tmp_path: Path
) -> None:
    figures = tmp_path / "figures"
    report = inspect_dataset(messy_dataset, out_dir=figures, workers=0)

    assert report.layout == "radiography-database"
    assert report.counts == {"Normal": 7, "COVID": 5, "Viral Pneumonia": 4}
    assert report.total == 16
    unreadable = dict(report.unreadable)
    assert set(unreadable) == {f"Normal/images/Normal-90{i}.png" for i in (1, 2, 3)}
    assert "empty" in unreadable["Normal/images/Normal-901.png"]
    assert "not a PNG" in unreadable["Normal/images/Normal-902.png"]
    assert "truncated" in unreadable["Normal/images/Normal-903.png"]

    readable = 16 - 3
    assert sum(report.image_sizes.values()) == readable
    assert report.image_sizes.get("299x299", 0) >= 4  # the Viral Pneumonia files
    assert report.image_sizes.get("256x256") == 1  # the resized duplicate
    assert "RGB" in report.image_modes or "L" in report.image_modes
    assert report.bit_depths == {"8": readable}
    assert report.mask_sizes.get("256x256", 0) >= 4 and "RGB" in report.mask_modes
    assert report.masks_per_class["Viral Pneumonia"] == 4

    assert ["COVID/images/COVID-1.png", "COVID/images/COVID-900.png"] in [
        sorted(group) for group in report.duplicate_groups
    ]
    assert report.cross_class_duplicate_groups == 0

    names = sorted(Path(p).name for p in report.figures)
    assert names == [
        "class_counts.png",
        "intensity_histograms.png",
        "near_duplicates.png",
        "samples_COVID.png",
        "samples_Normal.png",
        "samples_Viral_Pneumonia.png",
    ]
    for figure in report.figures:
        with Image.open(figure) as image:
            image.load()
            assert image.width > 200 and image.height > 200
            assert np.asarray(image.convert("L")).std() > 5  # something was drawn

    as_json = json.loads(json.dumps(report.to_dict()))
    assert as_json["total"] == 16 and len(as_json["unreadable"]) == 3
    text = format_report(report)
    assert "Unreadable files: 3" in text and "Normal-902.png" in text
    assert "Near-duplicates: 1 groups" in text


def test_inspect_real_sample_in_parallel(real_dataset: Path) -> None:
    report = inspect_dataset(real_dataset, workers=2)
    assert report.counts == {"Normal": 15, "COVID": 14, "Viral Pneumonia": 15}
    assert not report.unreadable
    assert report.image_modes["L"] == 43 and report.image_modes["RGB"] == 1
    assert report.image_sizes["299x299"] == 15 and report.image_sizes["224x224"] == 10
    assert report.sources["COVID"] == {"unknown": 14}


def test_inspect_without_duplicates(real_dataset: Path) -> None:
    report = inspect_dataset(real_dataset, duplicates=False, workers=0)
    assert report.duplicate_groups == [] and report.total == 44
