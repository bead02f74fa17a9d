"""recipes/real_data.py on fake snapshot trees made of real films: it reads only the parts we may
train on, leaves out what is not the database's and the twins of the test sample, and writes a
database layout with a dataset card that training turns into the model card."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from covidcxr.data.layouts import dataset_card, discover
from covidcxr.io import read_image
from helpers import REAL_DATASET, REPO, real_images


@pytest.fixture(scope="module")
def real_data():
    spec = importlib.util.spec_from_file_location("real_data", REPO / "recipes" / "real_data.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def _save(path: Path, image: np.ndarray, size: int | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    picture = Image.fromarray(np.rint(image * 255).astype(np.uint8))
    if size is not None:
        picture = picture.resize((size, size), Image.Resampling.BILINEAR)
    picture.save(path)


@pytest.fixture(scope="module")
def snapshots(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Three fake snapshots. The lundis one holds real films the sample does not (flipped and
    rotated copies of sample films are distinct pictures to the matcher), one true twin of a
    sample film (resized to 256, as lundis did), an ``others (1).jpg``, a TB folder and a
    test/ folder whose files are not images at all: reading them would fail the run."""
    root = tmp_path_factory.mktemp("snapshots")
    films = [read_image(p) for p in real_images(REAL_DATASET)]
    lundis = root / "lundis"
    for half in ("train", "validation"):
        for number, (folder, film) in enumerate(
            zip(["COVID", "Normal", "Viral Pneumonia"] * 2, films[:6], strict=True), start=1
        ):
            distinct = np.rot90(film.T if half == "train" else film[::-1], k=1)
            _save(lundis / half / folder / f"{folder}-{number + 10 * (half == 'train')}.png",
                  np.ascontiguousarray(distinct), 256)  # fmt: skip
    twin_source = REAL_DATASET / "Viral Pneumonia" / "images" / "Viral Pneumonia-3.png"
    _save(lundis / "train/Viral Pneumonia/Viral Pneumonia-30.png", read_image(twin_source), 256)
    other = Image.fromarray(np.rint(films[7] * 255).astype(np.uint8)).resize((256, 256))
    other.save(lundis / "train" / "Normal" / "others (1).jpg", format="JPEG")
    for poisoned in ("test/COVID/COVID-99.png", "train/TB/TB-1.png"):
        (lundis / poisoned).parent.mkdir(parents=True, exist_ok=True)
        (lundis / poisoned).write_text("never read this")
    paediatric = root / "rtchanon" / "COVID-19_Radiography_Dataset" / "Normal"
    for number, film in zip(range(63, 66), films[10:13], strict=True):
        _save(paediatric / f"Normal-{number}.png", np.ascontiguousarray(film[:, ::-1]), 224)
    (paediatric / "Normal-1.png").write_text("outside the paediatric range: never read")
    masks = root / "unet" / "Viral Pneumonia"
    (masks / "masks").mkdir(parents=True)
    for number in (1, 2, 5):  # 1 is a sample film (a twin), 2 is even (held out), 5 is kept
        name = f"Viral Pneumonia-{number}.png"
        source = REAL_DATASET / "Viral Pneumonia"
        film = read_image(source / "images" / name)
        mask = np.asarray(Image.open(source / "masks" / name).convert("L"))
        if number == 5:  # transposed: a picture the sample does not hold
            film, mask = np.ascontiguousarray(film.T), np.ascontiguousarray(mask.T)
        _save(masks / "images" / name, film)
        Image.fromarray(mask).save(masks / "masks" / name)
    return {"lundis": lundis, "paediatric": root / "rtchanon", "masks": root / "unet"}


def test_lays_out_only_what_may_be_trained_on(real_data, snapshots, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(real_data, "PAEDIATRIC_RANGE", range(63, 66))
    out = tmp_path / "db"
    code = real_data.main([
        "--lundis", str(snapshots["lundis"]), "--paediatric", str(snapshots["paediatric"]),
        "--vp-masks", str(snapshots["masks"]), "--exclude-like", str(REAL_DATASET),
        "--out", str(out), "--workers", "0",
    ])  # fmt: skip
    assert code == 0
    classify = discover(out / "classify")
    names = sorted(s.path.name for s in classify.samples)
    assert classify.counts() == {"Normal": 4 + 3, "COVID": 4, "Viral Pneumonia": 4}
    assert "Viral Pneumonia-30.png" not in names  # the sample's twin
    assert not any("others" in n for n in names)
    assert {f"Normal-paediatric-{n}.png" for n in (63, 64, 65)} <= set(names)
    sources = {s.path.name: s.source for s in classify.samples}
    assert sources["Normal-paediatric-63.png"] == "kaggle.com/paultimothymooney"
    assert sources["Normal-2.png"] == "kaggle.com/c/rsna-pneumonia-detection-challenge"
    assert sources["COVID-1.png"] is None  # unknown, not guessed
    card = dataset_card(classify.root)
    assert card["synthetic"] is False and "research use" in card["licence"]
    assert card["excluded_counts"] == {
        "not a database file name (another collection)": 1,
        "near-duplicate of the test sample": 1,
    }
    assert card["twins_of_excluded_references"][0]["twin_of"].endswith("Viral Pneumonia-3.png")
    segment = discover(out / "segment")
    assert [s.path.name for s in segment.samples] == ["Viral Pneumonia-5.png"]  # 1 twin, 2 even
    assert all(s.mask_path is not None for s in segment.samples)
    assert json.loads((segment.root / "covidcxr-dataset.json").read_text())["class_counts"] == {
        "Viral Pneumonia": 1
    }


def test_a_snapshot_missing_paediatric_films_is_refused(real_data, snapshots, tmp_path) -> None:
    with pytest.raises(SystemExit, match=r"paediatric normals .* missing"):
        real_data.main([
            "--lundis", str(snapshots["lundis"]), "--paediatric", str(snapshots["paediatric"]),
            "--vp-masks", str(snapshots["masks"]), "--out", str(tmp_path / "db"),
        ])  # fmt: skip
