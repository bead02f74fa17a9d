"""Grouped stratified splits: proportions, seeds, groups, tiny classes, CSV files."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from covidcxr import atomic
from covidcxr.data.duplicates import group_near_duplicates, perceptual_hash
from covidcxr.data.sample import Sample
from covidcxr.data.splits import (
    CSV_COLUMNS,
    assign_splits,
    read_split_csv,
    split_leakage,
    write_split_csv,
)
from covidcxr.io import read_image

REAL_SAMPLE = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "real-sample"
REAL_DATASET = REAL_SAMPLE / "COVID-19_Radiography_Dataset"
REAL_CLASSES = {"Normal": 0, "COVID": 1, "Viral Pneumonia": 2}


def counts_per_class(labels, assigned, names=("train", "val", "test")) -> dict[int, list[int]]:
    counts = Counter(zip(labels, assigned, strict=True))
    return {label: [counts[label, name] for name in names] for label in sorted(set(labels))}


def test_singleton_groups_reach_the_fractions_per_class() -> None:
    labels = [0] * 1000 + [1] * 300 + [2] * 150
    rng = np.random.default_rng(0)
    labels = rng.permutation(labels).tolist()
    assigned = assign_splits(labels, groups=list(range(len(labels))))
    assert assigned.shape == (len(labels),)
    assert counts_per_class(labels, assigned) == {
        0: [700, 100, 200],
        1: [210, 30, 60],
        2: [105, 15, 30],
    }


def test_grouped_split_stays_within_one_group_of_the_fractions() -> None:
    rng = np.random.default_rng(1)
    labels: list[int] = []
    groups: list[str] = []
    for group in range(900):
        size = int(rng.choice([1, 1, 1, 2, 3, 5]))
        labels += [group % 3] * size
        groups += [f"g{group}"] * size
    order = rng.permutation(len(labels))
    labels = [labels[i] for i in order]
    groups = [groups[i] for i in order]
    assigned = assign_splits(labels, groups)
    assert split_leakage(groups, assigned) == 0
    for label, counts in counts_per_class(labels, assigned).items():
        total = sum(counts)
        for count, fraction in zip(counts, (0.7, 0.1, 0.2), strict=True):
            assert abs(count - fraction * total) <= 5, (label, counts)


def test_custom_fractions_and_names() -> None:
    labels = [0] * 800 + [1] * 400 + [2] * 16
    names = ("fit", "tune", "hold-out")
    assigned = assign_splits(
        labels, list(range(len(labels))), fractions=(0.75, 0.125, 0.125), names=names
    )
    assert set(assigned) == set(names)
    assert counts_per_class(labels, assigned, names) == {
        0: [600, 100, 100],
        1: [300, 50, 50],
        2: [12, 2, 2],
    }


def test_same_seed_same_split_other_seed_other_split() -> None:
    labels = [index % 3 for index in range(600)]
    groups = [index % 300 for index in range(600)]  # pairs of one label
    first = assign_splits(labels, groups, seed=7)
    np.testing.assert_array_equal(assign_splits(labels, groups, seed=7), first)
    other = assign_splits(labels, groups, seed=8)
    assert (other != first).sum() > 100
    assert counts_per_class(labels, other) == counts_per_class(labels, first)


def test_a_group_follows_its_majority_label() -> None:
    labels = [0, 0, 1] + [1] * 9 + [0] * 9
    groups = ["mixed"] * 3 + list(range(18))
    assigned = assign_splits(labels, groups)
    assert len(set(assigned[:3])) == 1
    assert split_leakage(groups, assigned) == 0


def test_none_groups_are_singletons() -> None:
    labels = [0] * 100
    assigned = assign_splits(labels, [None] * 100)
    assert counts_per_class(labels, assigned) == {0: [70, 10, 20]}


@pytest.mark.parametrize(
    ("class_size", "expected"),
    [(1, [1, 0, 0]), (2, [1, 0, 1]), (3, [2, 0, 1]), (4, [3, 0, 1]), (5, [3, 1, 1])],
)
def test_tiny_class_fills_the_largest_splits_first_and_warns(
    class_size: int, expected: list[int]
) -> None:
    labels = [0] * 100 + [2] * class_size
    groups = list(range(len(labels)))
    missing = [
        name for name, count in zip(("train", "val", "test"), expected, strict=True) if count == 0
    ]
    if missing:
        with pytest.warns(UserWarning, match=f"class 2 has {class_size} samples.*{missing[-1]}"):
            assigned = assign_splits(labels, groups)
    else:
        assigned = assign_splits(labels, groups)
    counts = counts_per_class(labels, assigned)
    assert counts[2] == expected
    assert counts[0] == [70, 10, 20]


def test_one_big_group_takes_its_whole_class() -> None:
    labels = [1] * 10 + [0] * 50
    groups = ["patient"] * 10 + list(range(50))
    with pytest.warns(UserWarning, match="class 1 has 10 samples in 1 groups"):
        assigned = assign_splits(labels, groups)
    assert set(assigned[:10]) == {"train"}


def test_empty_input_gives_empty_split() -> None:
    assert assign_splits([], []).shape == (0,)


def write_resized_and_jpeg_copies(source: Path, folder: Path) -> list[Path]:
    image = Image.open(source).convert("L")
    stem = source.stem.replace(" ", "_")
    resized = folder / f"{stem}_256.png"
    scale = 256 / max(image.size)
    image.resize((round(image.width * scale), round(image.height * scale))).save(resized)
    jpeg = folder / f"{stem}_q75.jpg"
    image.save(jpeg, quality=75)
    return [resized, jpeg]


def test_real_duplicates_grouped_by_hash_never_straddle_splits(tmp_path: Path) -> None:
    paths: list[Path] = []
    labels: list[int] = []
    for class_name, label in REAL_CLASSES.items():
        for source in sorted((REAL_DATASET / class_name / "images").glob("*.png")):
            for path in [source, *write_resized_and_jpeg_copies(source, tmp_path)]:
                paths.append(path)
                labels.append(label)
    assert len(paths) == 3 * 44
    hashes = np.stack([perceptual_hash(read_image(path)) for path in paths])
    groups = group_near_duplicates(hashes)
    assert groups.max() + 1 == 44

    for seed in range(5):
        assigned = assign_splits(labels, groups, seed=seed)
        assert split_leakage(groups, assigned) == 0
        assert set(assigned) == {"train", "val", "test"}
    # The same images split one by one put copies on both sides: the check above can fail.
    ungrouped = assign_splits(labels, list(range(len(paths))))
    assert split_leakage(groups, ungrouped) > 10


def test_split_leakage_counts_groups_in_several_splits() -> None:
    groups = ["a", "a", "b", "b", "b", "c", None, None]
    splits = ["train", "test", "val", "val", "train", "test", "train", "test"]
    assert split_leakage(groups, splits) == 2
    assert split_leakage(groups, ["train"] * 8) == 0
    with pytest.raises(ValueError, match="got 8 groups and 7 splits"):
        split_leakage(groups, splits[:7])


@pytest.mark.parametrize(
    ("keywords", "message"),
    [
        ({"fractions": (0.7, 0.2, 0.2)}, r"sum to 1, got \[0.7, 0.2, 0.2\]"),
        ({"fractions": (0.8, 0.0, 0.2)}, "positive numbers"),
        ({"fractions": (1.2, -0.1, -0.1)}, "positive numbers"),
        ({"fractions": (0.5, float("nan"), 0.5)}, "positive numbers"),
        ({"fractions": (0.5, 0.5)}, "got 2 fractions .* and 3 names"),
        ({"names": ("train", "train", "test")}, "distinct"),
        ({"names": ("train", "", "test")}, "non-empty strings"),
        ({"fractions": (), "names": ()}, "at least one split"),
        ({"groups": [0, 1]}, "got 3 labels and 2 groups"),
        ({"labels": [0, 1.5, 2]}, "integers, got 1.5 at index 1"),
        ({"labels": [0, "COVID", 2]}, "integers, got 'COVID'"),
        ({"groups": [[0], [1], [2]]}, "hashable"),
        ({"seed": "zero"}, "seed should be an integer"),
    ],
)
def test_assign_splits_rejects_bad_arguments(keywords: dict, message: str) -> None:
    arguments = {"labels": [0, 1, 2], "groups": [0, 1, 2], **keywords}
    with pytest.raises(ValueError, match=message):
        assign_splits(**arguments)


def make_samples(root: Path, outside: Path) -> list[Sample]:
    return [
        Sample(root / "COVID" / "images" / "COVID-1.png", 1, "COVID", root / "COVID/masks/1.png"),
        Sample(
            root / "Viral Pneumonia" / "images" / "Viral Pneumonia-2.png",
            2,
            "Viral Pneumonia",
            source='kermany, "pediatric"',
            group="dup-3",
        ),
        Sample(outside / "elsewhere, odd.png", 0, "Normal", group="7", source="rsna"),
    ]


def test_split_csv_round_trip(tmp_path: Path) -> None:
    root, outside = tmp_path / "data", tmp_path / "other"
    samples = make_samples(root, outside)
    splits = ["train", "val", "test"]
    target = tmp_path / "runs" / "split.csv"
    write_split_csv(target, samples, splits, root)

    lines = target.read_text(encoding="utf-8").splitlines()
    assert lines[0] == ",".join(CSV_COLUMNS)
    assert lines[1] == "COVID/images/COVID-1.png,1,COVID,train,,,COVID/masks/1.png"
    assert lines[2].startswith("Viral Pneumonia/images/Viral Pneumonia-2.png,2,")
    assert str(outside) in lines[3]
    assert read_split_csv(target, root) == (samples, splits)
    assert sorted(path.name for path in target.parent.iterdir()) == ["split.csv"]

    # Overwriting replaces the content.
    write_split_csv(target, samples[:1], ["test"], root)
    assert read_split_csv(target, root) == (samples[:1], ["test"])


def test_split_csv_moves_with_its_root(tmp_path: Path) -> None:
    old_root, new_root = tmp_path / "old", tmp_path / "new"
    samples = make_samples(old_root, tmp_path / "other")[:2]
    target = tmp_path / "split.csv"
    write_split_csv(target, samples, ["train", "test"], old_root)
    moved, _ = read_split_csv(target, new_root)
    assert moved[0].path == new_root / "COVID" / "images" / "COVID-1.png"
    assert moved[0].mask_path == new_root / "COVID" / "masks" / "1.png"


def test_failed_write_keeps_the_old_file_and_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "data"
    samples = make_samples(root, tmp_path / "other")
    target = tmp_path / "split.csv"
    write_split_csv(target, samples, ["train", "val", "test"], root)
    before = target.read_bytes()

    def failing_replace(source: str, destination: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(atomic.os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        write_split_csv(target, samples[:1], ["val"], root)
    assert target.read_bytes() == before
    assert [path.name for path in tmp_path.iterdir() if path.is_file()] == ["split.csv"]


def test_write_split_csv_rejects_mismatched_or_empty_splits(tmp_path: Path) -> None:
    samples = make_samples(tmp_path, tmp_path)
    with pytest.raises(ValueError, match="got 3 samples and 2 splits"):
        write_split_csv(tmp_path / "s.csv", samples, ["train", "val"], tmp_path)
    with pytest.raises(ValueError, match="split 1 should be a non-empty string"):
        write_split_csv(tmp_path / "s.csv", samples, ["train", "", "test"], tmp_path)
    assert not (tmp_path / "s.csv").exists()


HEADER = ",".join(CSV_COLUMNS)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "line 1: the file is empty"),
        ("path,label,class_name,group,source,mask_path\n", "line 1: missing column.*split"),
        (f"{HEADER}\na.png,0,Normal,train,,,\nb.png,x,Normal,test,,,\n", "line 3: label .* 'x'"),
        (f"{HEADER}\na.png,0,Normal,train,,\n", "line 2: expected 7 fields .* got 6"),
        (f"{HEADER}\na.png,0,Normal,,,,\n", "line 2: the split cell is empty"),
        (f"{HEADER}\n,0,Normal,train,,,\n", "line 2: the path cell is empty"),
    ],
)
def test_read_split_csv_names_file_and_line_of_bad_content(
    tmp_path: Path, content: str, message: str
) -> None:
    target = tmp_path / "bad.csv"
    target.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=message) as raised:
        read_split_csv(target, tmp_path)
    assert str(target) in str(raised.value)


def test_read_split_csv_accepts_extra_columns_blank_lines_and_bom(tmp_path: Path) -> None:
    target = tmp_path / "edited.csv"
    target.write_text(
        f"\ufeffnote,{HEADER}\nhello,a.png,0,Normal,val,,,\n\n", encoding="utf-8", newline=""
    )
    samples, splits = read_split_csv(target, tmp_path)
    assert samples == [Sample(tmp_path / "a.png", 0, "Normal")]
    assert splits == ["val"]


def test_read_split_csv_missing_file_hints_at_writer(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="write_split_csv"):
        read_split_csv(tmp_path / "nope.csv", tmp_path)


def test_written_file_is_readable_by_others(tmp_path: Path) -> None:
    target = tmp_path / "split.csv"
    write_split_csv(target, [], [], tmp_path)
    assert target.stat().st_mode & 0o044 == 0o044


# ------------------------------------------------------------------ split_dataset (end to end)


def test_split_dataset_keeps_duplicates_and_manifest_groups_together(
    tmp_path: Path, real_dataset: Path
) -> None:
    from covidcxr.data.splits import split_dataset

    images = tmp_path / "images"
    images.mkdir()
    rows = ["path,label,group"]
    for class_name in ("COVID", "Normal", "Viral Pneumonia"):
        for source in sorted((real_dataset / class_name / "images").glob("*.png")):
            target = images / source.name.replace(" ", "_")
            with Image.open(source) as picture:
                picture.convert("L").save(target)
                if source.stem.endswith("-1"):  # a near-duplicate copy of one image per class
                    picture.convert("L").resize((200, 180)).save(images / f"copy-{target.name}")
                    rows.append(f"images/copy-{target.name},{class_name},")
            patient = "patient-A" if source.stem in ("COVID-2", "COVID-3") else ""
            rows.append(f"images/{target.name},{class_name},{patient}")
    (images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    rows.append("images/broken.png,Normal,")
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("\n".join(rows) + "\n")

    result = split_dataset(manifest, tmp_path / "run" / "splits.csv", seed=1, workers=0)

    assert [p.name for p, _ in result.unreadable] == ["broken.png"]
    assert len(result.samples) == 44 + 3
    assert result.duplicate_groups >= 3
    groups = [s.group for s in result.samples]
    assert split_leakage(groups, result.splits) == 0
    split_of = {s.path.name: split for s, split in zip(result.samples, result.splits, strict=True)}
    for original in ("COVID-1.png", "Normal-1.png", "Viral_Pneumonia-1.png"):
        assert split_of[original] == split_of[f"copy-{original}"]
    assert split_of["COVID-2.png"] == split_of["COVID-3.png"]  # same patient in the manifest
    counts = result.counts()
    assert sum(counts["train"].values()) > sum(counts["test"].values()) > 0
    assert "1 unreadable image left out" in result.describe()

    # the CSV reads back against the dataset's root
    samples, splits = read_split_csv(result.path, manifest.parent)
    assert [s.path for s in samples] == [s.path for s in result.samples]
    assert splits == list(result.splits)

    again = split_dataset(manifest, tmp_path / "again.csv", seed=1, workers=0)
    assert again.splits == result.splits


def test_write_split_csv_refuses_a_name_that_is_not_utf8_naming_it(tmp_path: Path) -> None:
    import os

    bad = tmp_path / os.fsdecode(b"Normal-\xff.png")
    sample = Sample(path=bad, label=0, class_name="Normal")
    with pytest.raises(ValueError, match="not valid UTF-8") as caught:
        write_split_csv(tmp_path / "splits.csv", [sample], ["train"], tmp_path)
    assert "Normal-\\xff.png" in str(caught.value) and "rename" in str(caught.value)
    assert not (tmp_path / "splits.csv").exists()


def test_split_dataset_lists_manifest_problems_and_refuses_outside_paths(
    tmp_path: Path, real_dataset: Path
) -> None:
    from covidcxr.data.splits import split_dataset

    data = tmp_path / "data"
    rows = ["path,label"]
    for class_name in REAL_CLASSES:
        for source in sorted((real_dataset / class_name / "images").glob("*.png"))[:5]:
            target = data / source.name
            target.parent.mkdir(exist_ok=True)
            target.write_bytes(source.read_bytes())
            rows.append(f"{target.name},{class_name}")
    rows += ["no-such.png,Normal", "COVID-1.png,tuberculosis"]
    manifest = data / "manifest.csv"
    manifest.write_text("\n".join(rows) + "\n")

    result = split_dataset(manifest, tmp_path / "splits.csv", workers=0)
    assert len(result.samples) == 15
    problems = {path.name: reason for path, reason in result.problems}
    assert "line 17" in problems["no-such.png"] and "missing" in problems["no-such.png"]
    assert "line 18: unknown label 'tuberculosis'" in problems["manifest.csv"]
    assert "2 entries skipped or wrong before reading" in result.describe()

    (tmp_path / "outside.png").write_bytes((data / "COVID-1.png").read_bytes())
    manifest.write_text("\n".join([*rows, "../outside.png,COVID"]) + "\n")
    with pytest.raises(ValueError, match="allow_outside=True"):
        split_dataset(manifest, tmp_path / "splits.csv", workers=0)
    allowed = split_dataset(manifest, tmp_path / "splits.csv", workers=0, allow_outside=True)
    assert len(allowed.samples) == 16
