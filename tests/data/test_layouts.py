"""Dataset discovery across the database's releases, generic trees and CSV manifests."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from covidcxr.data.classes import canonical_class_name, class_names, label_of
from covidcxr.data.layouts import (
    LAYOUT_CLASS_FOLDERS,
    LAYOUT_MANIFEST,
    LAYOUT_RADIOGRAPHY,
    LAYOUT_RADIOGRAPHY_FLAT,
    discover,
    source_from_url,
)
from helpers import gradient, write_dicom, write_png


def write_sheet(path: Path, rows: list[tuple[str, str]]) -> Path:
    """A metadata sheet like the database's: FILE NAME, FORMAT, SIZE, URL."""
    from openpyxl import Workbook

    workbook = Workbook()
    sheet = workbook.active
    sheet.append(["FILE NAME", "FORMAT", "SIZE", "URL"])
    for name, url in rows:
        sheet.append([name, "PNG", "299*299", url])
    workbook.save(path)
    return path


def newest_layout(root: Path, per_class: dict[str, int]) -> Path:
    """A small dataset in the database's newest layout: 31×29 images, 16×16 RGB masks."""
    rgb_mask = np.zeros((16, 16, 3), dtype=np.uint8)
    rgb_mask[4:12, 2:7] = 255
    for folder, count in per_class.items():
        for i in range(1, count + 1):
            write_png(root / folder / "images" / f"{folder}-{i}.png", gradient(31, 29))
            write_png(root / folder / "masks" / f"{folder}-{i}.png", rgb_mask)
    return root


# --------------------------------------------------------------------------- real sample


def test_real_sample_counts_masks_and_layout(real_dataset: Path) -> None:
    index = discover(real_dataset)
    assert index.layout == LAYOUT_RADIOGRAPHY
    assert index.counts() == {"Normal": 15, "COVID": 14, "Viral Pneumonia": 15}
    masks = {name: 0 for name in index.class_names}
    for sample in index.samples:
        assert sample.path.is_file() and sample.path.is_absolute()
        assert sample.label == index.class_names.index(sample.class_name)
        if sample.mask_path is not None:
            assert sample.mask_path.stem == sample.path.stem
            assert sample.mask_path.parent.name == "masks"
            masks[sample.class_name] += 1
    assert masks == {"Normal": 1, "COVID": 14, "Viral Pneumonia": 15}
    assert not index.problems and not index.excluded


def test_parent_folder_is_accepted(real_dataset: Path) -> None:
    assert discover(real_dataset.parent).root == real_dataset.resolve()


def test_nested_download_folder(tmp_path: Path) -> None:
    newest_layout(tmp_path / "archive" / "COVID-19_Radiography_Dataset", {"COVID": 2, "Normal": 1})
    index = discover(tmp_path)
    assert index.root.name == "COVID-19_Radiography_Dataset"
    assert index.counts()["COVID"] == 2


def test_samples_are_in_natural_order(tmp_path: Path) -> None:
    newest_layout(tmp_path, {"COVID": 11})
    names = [s.path.stem for s in discover(tmp_path).samples]
    assert names == [f"COVID-{i}" for i in range(1, 12)]


# --------------------------------------------------------------------------- newest layout


def test_newest_layout_with_metadata_and_lung_opacity(tmp_path: Path) -> None:
    newest_layout(tmp_path, {"COVID": 2, "Normal": 3, "Viral Pneumonia": 1, "Lung_Opacity": 2})
    write_sheet(
        tmp_path / "Normal.metadata.xlsx",
        [  # the real sheets name Normal images NORMAL-n
            ("NORMAL-1", "https://www.kaggle.com/c/rsna-pneumonia-detection-challenge/data"),
            ("NORMAL-2", "https://www.kaggle.com/paultimothymooney/chest-xray-pneumonia"),
        ],
    )
    write_sheet(
        tmp_path / "COVID.metadata.xlsx",
        [("COVID-1", "https://sirm.org/category/covid-19/"), ("COVID-2", "eurorad.org")],
    )
    three = discover(tmp_path)
    assert three.layout == LAYOUT_RADIOGRAPHY
    assert three.counts() == {"Normal": 3, "COVID": 2, "Viral Pneumonia": 1}
    assert three.excluded == {"Lung Opacity": 2}
    sources = {s.path.stem: s.source for s in three.samples}
    assert sources["Normal-1"] == "kaggle.com/c/rsna-pneumonia-detection-challenge"
    assert sources["Normal-2"] == "kaggle.com/paultimothymooney"
    assert sources["Normal-3"] is None
    assert sources["COVID-1"] == "sirm.org" and sources["COVID-2"] == "eurorad.org"
    assert all(s.mask_path is not None for s in three.samples)

    four = discover(tmp_path, num_classes=4)
    assert four.class_names == ("Normal", "COVID", "Viral Pneumonia", "Lung Opacity")
    assert four.counts()["Lung Opacity"] == 2 and not four.excluded
    assert {s.label for s in four.samples if s.class_name == "Lung Opacity"} == {3}


def test_damaged_metadata_sheet_is_reported_not_fatal(tmp_path: Path) -> None:
    newest_layout(tmp_path, {"COVID": 1})
    (tmp_path / "COVID.metadata.xlsx").write_text("not a workbook")
    index = discover(tmp_path)
    assert len(index.samples) == 1
    assert [p.name for p, _ in index.problems] == ["COVID.metadata.xlsx"]


def test_orphan_mask_is_reported(tmp_path: Path) -> None:
    newest_layout(tmp_path, {"COVID": 1})
    write_png(tmp_path / "COVID" / "masks" / "COVID-99.png", gradient())
    (reason,) = [r for p, r in discover(tmp_path).problems if p.name == "COVID-99.png"]
    assert "without a matching image" in reason


# --------------------------------------------------------------------------- older releases


@pytest.mark.parametrize(
    ("folders", "files"),
    [
        (["COVID-19", "NORMAL", "Viral Pneumonia"], ["COVID-19", "NORMAL", "Viral Pneumonia"]),
        (["COVID-19", "Normal", "Viral Pneumonia"], ["COVID-19", "Normal", "Viral Pneumonia"]),
        (["covid-19", "normal", "viral pneumonia"], ["covid-19", "normal", "viral pneumonia"]),
    ],
)
def test_old_flat_layout_and_case_variants(
    tmp_path: Path, folders: list[str], files: list[str]
) -> None:
    for folder, stem in zip(folders, files, strict=True):
        for i in (1, 2):
            write_png(tmp_path / folder / f"{stem} ({i}).png", gradient())
    index = discover(tmp_path)
    assert index.layout == LAYOUT_RADIOGRAPHY_FLAT
    assert index.counts() == {"Normal": 2, "COVID": 2, "Viral Pneumonia": 2}
    assert all(s.mask_path is None for s in index.samples)


# --------------------------------------------------------------------------- generic trees


def test_generic_class_folders_with_dicom_jpeg_and_masks(tmp_path: Path) -> None:
    pixels = (np.arange(30 * 20).reshape(30, 20) % 4096).astype(np.uint16)
    write_dicom(tmp_path / "covid_19" / "patient-7" / "study-1" / "IM0001", pixels)
    write_dicom(tmp_path / "covid_19" / "patient-8" / "chest.dcm", pixels)
    write_png(tmp_path / "healthy" / "a.png", gradient())
    write_png(tmp_path / "healthy" / "masks" / "a.png", gradient() > 100)
    (tmp_path / "healthy" / "b.jpg").write_bytes((tmp_path / "healthy" / "a.png").read_bytes())
    write_png(tmp_path / "Viral_Pneumonia" / "c.png", gradient())
    (tmp_path / "Viral_Pneumonia" / "notes.txt").write_text("not an image")
    (tmp_path / "Viral_Pneumonia" / ".DS_Store").write_bytes(b"\0")
    (tmp_path / "unrelated").mkdir()

    index = discover(tmp_path)
    assert index.layout == LAYOUT_CLASS_FOLDERS
    assert index.counts() == {"Normal": 2, "COVID": 2, "Viral Pneumonia": 1}
    by_name = {s.path.name: s for s in index.samples}
    assert set(by_name) == {"IM0001", "chest.dcm", "a.png", "b.jpg", "c.png"}
    assert by_name["a.png"].mask_path == tmp_path / "healthy" / "masks" / "a.png"
    ignored = {p.name for p in index.ignored}
    assert {"notes.txt", "unrelated"} <= ignored and ".DS_Store" not in ignored


# --------------------------------------------------------------------------- manifests


def test_csv_manifest(tmp_path: Path) -> None:
    write_png(tmp_path / "img" / "one.png", gradient())
    write_png(tmp_path / "img" / "two.png", gradient())
    write_png(tmp_path / "img" / "three.png", gradient())
    write_png(tmp_path / "img" / "four.png", gradient())
    write_png(tmp_path / "img" / "one-mask.png", gradient() > 10)
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(
        "path,label,group,source,mask\n"
        "img/one.png,covid-19,patient-1,hospital-a,img/one-mask.png\n"
        f"{tmp_path / 'img' / 'two.png'},0,patient-2,,\n"
        "img/three.png,Lung_Opacity,patient-3,hospital-b,\n"
        "img/four.png,viral_pneumonia,,hospital-b,\n"
        "img/missing.png,Normal,patient-4,,\n"
        "img/one.png,covd,patient-5,,\n"
    )
    for target in (manifest, tmp_path):  # the CSV itself, or a folder holding manifest.csv
        index = discover(target)
        assert index.layout == LAYOUT_MANIFEST
        assert index.counts() == {"Normal": 1, "COVID": 1, "Viral Pneumonia": 1}
        assert index.excluded == {"Lung Opacity": 1}
        first = index.samples[[s.path.name for s in index.samples].index("one.png")]
        assert first.group == "patient-1" and first.source == "hospital-a"
        assert first.mask_path == tmp_path / "img" / "one-mask.png"
        reasons = [reason for _, reason in index.problems]
        assert any("line 6" in r and "missing" in r for r in reasons)
        assert any("line 7" in r and "unknown label 'covd'" in r for r in reasons)
    assert discover(manifest, num_classes=4).counts()["Lung Opacity"] == 1


def test_manifest_without_required_columns(tmp_path: Path) -> None:
    manifest = tmp_path / "list.csv"
    manifest.write_text("file,diagnosis\na.png,covid\n")
    with pytest.raises(ValueError, match="missing path, label"):
        discover(manifest)


# --------------------------------------------------------------------------- errors


def test_missing_path() -> None:
    with pytest.raises(FileNotFoundError, match="no-such-folder"):
        discover("no-such-folder")


def test_folder_without_a_dataset(tmp_path: Path) -> None:
    (tmp_path / "holiday-photos").mkdir()
    (tmp_path / "other").mkdir()
    with pytest.raises(ValueError, match=r"no dataset found.*holiday-photos"):
        discover(tmp_path)


def test_file_that_is_not_a_manifest(tmp_path: Path) -> None:
    image = write_png(tmp_path / "x.png", gradient())
    with pytest.raises(ValueError, match="CSV manifest"):
        discover(image)


def test_copied_real_files_keep_their_masks(tmp_path: Path, real_dataset: Path) -> None:
    for name in ("Viral Pneumonia-1", "Viral Pneumonia-140"):
        for kind in ("images", "masks"):
            target = tmp_path / "Viral Pneumonia" / kind / f"{name}.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(real_dataset / "Viral Pneumonia" / kind / f"{name}.png", target)
    index = discover(tmp_path)
    assert [s.mask_path is not None for s in index.samples] == [True, True]


# --------------------------------------------------------------------------- names


@pytest.mark.parametrize(
    ("alias", "expected"),
    [
        ("covid-19", "COVID"),
        ("COVID", "COVID"),
        ("Covid_19", "COVID"),
        ("NORMAL", "Normal"),
        ("viral_pneumonia", "Viral Pneumonia"),
        ("Viral Pneumonia", "Viral Pneumonia"),
        ("Lung_Opacity", "Lung Opacity"),
        ("lung opacity", "Lung Opacity"),
        ("bacterial", None),
    ],
)
def test_class_aliases(alias: str, expected: str | None) -> None:
    assert canonical_class_name(alias) == expected


def test_labels_are_fixed() -> None:
    assert [label_of(n, 4) for n in ("Normal", "COVID", "Viral Pneumonia", "Lung Opacity")] == [
        0,
        1,
        2,
        3,
    ]
    assert label_of("Lung_Opacity", 3) is None
    with pytest.raises(ValueError, match="got 5"):
        class_names(5)


@pytest.mark.parametrize(
    ("url", "source"),
    [
        (
            "https://github.com/ml-workgroup/covid-19-image-repository/tree/master/png",
            "github.com/ml-workgroup",
        ),
        ("https://github.com/armiro/COVID-CXNet", "github.com/armiro"),
        ("https://bimcv.cipf.es/bimcv-projects/bimcv-covid19/#1590858128006", "bimcv.cipf.es"),
        ("https://www.kaggle.com/datasets/someone/some-data", "kaggle.com/datasets/someone"),
        ("", None),
    ],
)
def test_source_from_url(url: str, source: str | None) -> None:
    assert source_from_url(url) == source


# --------------------------------------------------------------------------- entries left out


def test_broken_links_fifos_and_names_not_utf8_are_listed_not_dropped(tmp_path: Path) -> None:
    import os

    for i in (1, 2):
        write_png(tmp_path / "Normal" / f"Normal-{i}.png", gradient())
        write_png(tmp_path / "COVID" / f"COVID-{i}.png", gradient())
    (tmp_path / "Normal" / "gone.png").symlink_to(tmp_path / "deleted.png")
    os.mkfifo(tmp_path / "COVID" / "pipe.png")
    os.mkfifo(tmp_path / "COVID" / "IM0001")  # suffix-less: would be sniffed if it were a file
    latin1 = tmp_path / "Normal" / os.fsdecode(b"Normal-\xe9t\xe9.png")
    write_png(latin1, gradient())

    index = discover(tmp_path)  # must not block on the FIFOs
    assert index.counts() == {"Normal": 2, "COVID": 2, "Viral Pneumonia": 0}
    reasons = {path.name: reason for path, reason in index.problems}
    assert "broken symbolic link" in reasons["gone.png"] and "deleted.png" in reasons["gone.png"]
    assert "FIFO" in reasons["pipe.png"] and "not a regular file" in reasons["pipe.png"]
    assert "FIFO" in reasons["IM0001"]
    escaped = "Normal-\\xe9t\\xe9.png"
    assert "not valid UTF-8" in reasons[escaped] and "rename" in reasons[escaped]
    for path, reason in index.problems:  # every listed entry prints
        f"{path}: {reason}".encode()


def _manifest(tmp_path: Path, rows: list[str]) -> Path:
    manifest = tmp_path / "data" / "manifest.csv"
    manifest.parent.mkdir(parents=True, exist_ok=True)
    manifest.write_text("path,label\n" + "\n".join(rows) + "\n")
    return manifest


def test_manifest_paths_outside_its_folder_need_allow_outside(tmp_path: Path) -> None:
    write_png(tmp_path / "elsewhere" / "far.png", gradient())
    write_png(tmp_path / "elsewhere" / "farther.png", gradient())
    write_png(tmp_path / "data" / "img" / "near.png", gradient())
    manifest = _manifest(
        tmp_path,
        [
            "img/near.png,Normal",
            "../elsewhere/far.png,COVID",
            f"{tmp_path / 'elsewhere' / 'farther.png'},Viral Pneumonia",
        ],
    )
    with pytest.raises(ValueError, match="outside the manifest's folder") as caught:
        discover(manifest)
    message = str(caught.value)
    assert "line 3: ../elsewhere/far.png" in message and "line 4:" in message
    assert "allow_outside=True" in message and "--allow-outside" in message
    index = discover(manifest, allow_outside=True)
    assert sorted(s.path.name for s in index.samples) == ["far.png", "farther.png", "near.png"]


def test_manifest_absolute_path_inside_its_folder_is_fine(tmp_path: Path) -> None:
    image = write_png(tmp_path / "data" / "img" / "a.png", gradient())
    index = discover(_manifest(tmp_path, [f"{image},Normal", "img/../img/a.png,Normal"]))
    assert [s.path for s in index.samples] == [image]
    (reason,) = [r for _, r in index.problems]
    assert "line 3" in reason and "listed again (first on line 2)" in reason


def test_manifest_file_under_two_labels_is_refused_naming_the_rows(tmp_path: Path) -> None:
    write_png(tmp_path / "data" / "img" / "a.png", gradient())
    write_png(tmp_path / "data" / "img" / "b.png", gradient())
    manifest = _manifest(
        tmp_path, ["img/a.png,Normal", "img/b.png,COVID", "img/./a.png,covid-19", "img/b.png,1"]
    )
    with pytest.raises(ValueError, match=r"1 file\(s\) listed under two labels") as caught:
        discover(manifest)
    message = str(caught.value)
    assert "a.png on line 2 (Normal) and line 4 (COVID)" in message
    assert str(manifest) in message and "remove or correct" in message
    # labels that are aliases of one class are no conflict: "1" is COVID
    assert "b.png" not in message


def test_manifest_missing_files_and_unknown_labels_are_counted_and_listed(tmp_path: Path) -> None:
    import os

    write_png(tmp_path / "data" / "img" / "a.png", gradient())
    os.mkfifo(tmp_path / "data" / "img" / "pipe.png")
    (tmp_path / "data" / "img" / "gone.png").symlink_to(tmp_path / "nowhere.png")
    manifest = _manifest(
        tmp_path,
        [
            "img/a.png,Normal",
            "img/missing.png,COVID",
            "img/a.png,pneumothorax",
            ",Normal",
            "img/pipe.png,COVID",
            "img/gone.png,COVID",
        ],
    )
    index = discover(manifest)
    assert [s.path.name for s in index.samples] == ["a.png"]
    reasons = [reason for _, reason in index.problems]
    assert len(reasons) == 5
    assert "line 3" in reasons[0] and "missing" in reasons[0]
    assert "line 4" in reasons[1] and "unknown label 'pneumothorax'" in reasons[1]
    assert "line 5" in reasons[2] and "empty path" in reasons[2]
    assert "line 6" in reasons[3] and "not a regular file" in reasons[3]
    assert "line 7" in reasons[4] and "broken symbolic link" in reasons[4]


def test_manifest_that_is_not_utf8_names_itself(tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.csv"
    manifest.write_bytes(b"path,label\nimg/\xe9.png,Normal\n")
    with pytest.raises(ValueError, match="not UTF-8") as caught:
        discover(manifest)
    assert str(manifest) in str(caught.value) and "save it as UTF-8" in str(caught.value)


def test_a_zip_archive_gets_the_command_that_unpacks_it(tmp_path: Path) -> None:
    import zipfile

    archive = tmp_path / "archive.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("COVID-19_Radiography_Dataset/COVID/images/COVID-1.png", b"x")
    with pytest.raises(ValueError, match=r"zip archive.*python -m zipfile -e .*archive.zip"):
        discover(archive)
