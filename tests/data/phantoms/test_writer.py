"""Tests for the synthetic phantom dataset: layout, determinism, masks, and that the classes
differ in the lungs only (not in global brightness or file properties) yet are learnable."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import openpyxl
import pytest
import torch
from PIL import Image
from scipy import ndimage

from covidcxr.data.classes import class_names
from covidcxr.data.phantoms import (
    FOLDER_NAMES,
    PhantomSummary,
    render_phantom,
    write_phantoms,
)

THREE_FOLDERS = tuple(FOLDER_NAMES[name] for name in class_names(3))
PER_CLASS = 40


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> PhantomSummary:
    """40 phantoms per class (3 classes, seed 0), shared by the read-only tests below."""
    return write_phantoms(tmp_path_factory.mktemp("phantoms") / "radiography", PER_CLASS, seed=0)


def _image_paths(root: Path, folder: str) -> list[Path]:
    return [root / folder / "images" / f"{folder}-{i}.png" for i in range(1, PER_CLASS + 1)]


def _grey(path: Path) -> np.ndarray:
    """(H, W) float64 in [0, 1]; RGB files must have three equal channels."""
    with Image.open(path) as image:
        pixels = np.asarray(image)
    if pixels.ndim == 3:
        assert pixels.shape[2] == 3
        assert (pixels == pixels[..., :1]).all(), f"{path} has unequal RGB channels"
        pixels = pixels[..., 0]
    return pixels.astype(np.float64) / 255


def _tree_digest(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def _quadratic_features(x: np.ndarray) -> np.ndarray:
    """(N, F) -> (N, 1 + F + F²): a bias, the features and their pairwise products."""
    quadratic = (x[:, :, None] * x[:, None, :]).reshape(len(x), -1)
    return np.hstack([np.ones((len(x), 1)), x, quadratic])


def _cross_validated_accuracy(features: np.ndarray, labels: np.ndarray, folds: int = 5) -> dict:
    """Accuracy of a nearest-centroid and a softmax-regression classifier (numpy only), with
    stratified ``folds``-fold cross-validation on standardised ``features`` (N, F)."""
    classes = np.unique(labels)
    order = np.random.default_rng(0).permutation(len(labels))
    fold_of = np.empty(len(labels), dtype=int)
    for label in classes:
        members = order[labels[order] == label]
        fold_of[members] = np.arange(members.size) % folds
    correct = {"nearest_centroid": 0, "logistic_regression": 0}
    for fold in range(folds):
        train, test = fold_of != fold, fold_of == fold
        mean, std = features[train].mean(0), features[train].std(0) + 1e-12
        x_train, x_test = (features[train] - mean) / std, (features[test] - mean) / std
        y_train = labels[train]
        centroids = np.stack([x_train[y_train == label].mean(0) for label in classes])
        distances = ((x_test[:, None, :] - centroids[None]) ** 2).sum(-1)
        correct["nearest_centroid"] += int((classes[distances.argmin(1)] == labels[test]).sum())

        # Softmax regression on quadratic features, fitted by plain gradient descent.
        design = _quadratic_features(x_train)
        weights = np.zeros((design.shape[1], classes.size))
        targets = (y_train[:, None] == classes[None]).astype(float)
        for _ in range(2000):
            logits = design @ weights
            probabilities = np.exp(logits - logits.max(1, keepdims=True))
            probabilities /= probabilities.sum(1, keepdims=True)
            weights -= 0.1 * design.T @ (probabilities - targets) / len(design)
        predicted = classes[(_quadratic_features(x_test) @ weights).argmax(1)]
        correct["logistic_regression"] += int((predicted == labels[test]).sum())
    return {name: count / len(labels) for name, count in correct.items()}


# --------------------------------------------------------------------------------------------
# Layout
# --------------------------------------------------------------------------------------------


def test_layout_round_trip(dataset: PhantomSummary) -> None:
    root = dataset.root
    assert dataset.counts == {"Normal": PER_CLASS, "COVID": PER_CLASS, "Viral Pneumonia": PER_CLASS}
    assert dataset.total == 3 * PER_CLASS
    assert dataset.seconds > 0
    assert sorted(p.name for p in root.iterdir()) == sorted(
        [
            *THREE_FOLDERS,
            *(f"{folder}.metadata.xlsx" for folder in THREE_FOLDERS),
            "covidcxr-dataset.json",
        ]
    )
    from covidcxr.data.layouts import dataset_card

    card = dataset_card(root)
    assert card["synthetic"] is True and card["class_counts"]["COVID"] == PER_CLASS
    assert "--per-class 40" in card["generator"]
    assert not (root / "Lung_Opacity").exists()
    # The staging directory was renamed into place; nothing is left beside the dataset.
    assert [p.name for p in root.parent.iterdir()] == [root.name]

    modes: list[str] = []
    for folder in THREE_FOLDERS:
        expected = {f"{folder}-{i}.png" for i in range(1, PER_CLASS + 1)}
        assert {p.name for p in (root / folder / "images").iterdir()} == expected
        assert {p.name for p in (root / folder / "masks").iterdir()} == expected
        for name in sorted(expected):
            with Image.open(root / folder / "images" / name) as image:
                assert image.format == "PNG" and image.size == (299, 299)
                assert image.mode in ("L", "RGB")
                modes.append(image.mode)
            with Image.open(root / folder / "masks" / name) as mask:
                assert mask.format == "PNG" and mask.size == (256, 256) and mask.mode == "RGB"
            mask_pixels = np.asarray(Image.open(root / folder / "masks" / name))
            assert (mask_pixels == mask_pixels[..., :1]).all()
            assert set(np.unique(mask_pixels)) == {0, 255}
    # A few images are stored as RGB (three equal channels, checked in _grey), like the DB.
    rgb_count = modes.count("RGB")
    assert 0 < rgb_count <= 0.15 * len(modes)
    for path in (root / "COVID" / "images").iterdir():
        _grey(path)


def test_metadata_rows_match_the_files(dataset: PhantomSummary) -> None:
    root = dataset.root
    hosts: set[str] = set()
    github_owners: set[str] = set()
    for folder in THREE_FOLDERS:
        workbook = openpyxl.load_workbook(root / f"{folder}.metadata.xlsx", read_only=True)
        rows = list(workbook.active.iter_rows(values_only=True))
        created = workbook.properties.created
        workbook.close()
        assert rows[0] == ("FILE NAME", "FORMAT", "SIZE", "URL")
        body = rows[1:]
        stems = {p.stem for p in (root / folder / "images").iterdir()}
        assert len(body) == len(stems) == PER_CLASS
        # Readers must match case-insensitively: the real DB writes NORMAL-1 for Normal-1.png.
        assert {name.lower() for name, *_ in body} == {stem.lower() for stem in stems}
        if folder == "Normal":
            assert all(name.startswith("NORMAL-") for name, *_ in body)
        else:
            assert {name for name, *_ in body} == stems
        assert {fmt for _, fmt, _, _ in body} == {"PNG"}
        assert {size for _, _, size, _ in body} == {"299*299"}
        for *_, url in body:
            assert url.startswith("https://")
            host = url.split("/")[2]
            assert host.endswith(".example"), url
            hosts.add(host)
            if host == "github.example":
                github_owners.add(url.split("/")[3])
        assert created is not None and created.year == 2021
    assert len(hosts) >= 3
    assert len(github_owners) == 2, "two sources should share the GitHub-like host"


def test_four_classes_add_lung_opacity(tmp_path: Path) -> None:
    summary = write_phantoms(
        tmp_path / "four", per_class=2, num_classes=4, image_size=64, mask_size=48, seed=3
    )
    assert summary.counts == {"Normal": 2, "COVID": 2, "Viral Pneumonia": 2, "Lung Opacity": 2}
    assert FOLDER_NAMES["Lung Opacity"] == "Lung_Opacity"
    folder = tmp_path / "four" / "Lung_Opacity"
    assert sorted(p.name for p in (folder / "images").iterdir()) == [
        "Lung_Opacity-1.png",
        "Lung_Opacity-2.png",
    ]
    with Image.open(folder / "images" / "Lung_Opacity-1.png") as image:
        assert image.size == (64, 64)
    with Image.open(folder / "masks" / "Lung_Opacity-2.png") as mask:
        assert mask.size == (48, 48)
    workbook = openpyxl.load_workbook(tmp_path / "four" / "Lung_Opacity.metadata.xlsx")
    rows = list(workbook.active.iter_rows(values_only=True))
    assert [row[0] for row in rows[1:]] == ["Lung_Opacity-1", "Lung_Opacity-2"]
    assert rows[1][2] == "64*64"


def test_progress_reports_every_image(tmp_path: Path) -> None:
    calls: list[tuple[int, int]] = []
    write_phantoms(
        tmp_path / "ds",
        per_class=2,
        image_size=48,
        mask_size=40,
        progress=lambda d, t: calls.append((d, t)),
    )
    assert calls == [(done, 6) for done in range(1, 7)]


# --------------------------------------------------------------------------------------------
# Determinism
# --------------------------------------------------------------------------------------------


def test_same_seed_gives_identical_bytes(tmp_path: Path) -> None:
    first = write_phantoms(tmp_path / "a", per_class=3, seed=11).root
    second = write_phantoms(tmp_path / "b", per_class=3, seed=11).root
    digest = _tree_digest(first)
    assert len(digest) == 3 * (3 + 3 + 1) + 1  # images, masks, sheets; the dataset card
    assert digest == _tree_digest(second)  # PNGs, metadata sheets and card alike

    other = _tree_digest(write_phantoms(tmp_path / "c", per_class=3, seed=12).root)
    images = [name for name in digest if "/images/" in name]
    assert all(digest[name] != other[name] for name in images)

    # The first images do not depend on how many are made.
    fewer = _tree_digest(write_phantoms(tmp_path / "d", per_class=2, seed=11).root)
    assert all(fewer[name] == digest[name] for name in fewer if name.endswith(".png"))


# --------------------------------------------------------------------------------------------
# Images and masks
# --------------------------------------------------------------------------------------------


def test_masks_lie_on_the_dark_lung_fields(dataset: PhantomSummary) -> None:
    """Inside the mask (air) the image is clearly darker than the body just around it. (An
    upside-down mask still gives a gap of about 0.08 on a typical image, and up to 0.13.)"""
    ring_structure = ndimage.generate_binary_structure(2, 1)
    gaps = []
    for folder in THREE_FOLDERS:
        for image_path in _image_paths(dataset.root, folder):
            image = _grey(image_path)
            mask_path = dataset.root / folder / "masks" / image_path.name
            with Image.open(mask_path) as mask_image:
                mask = mask_image.convert("L").resize((299, 299), Image.Resampling.NEAREST)
            lung = np.asarray(mask) > 127
            _, lungs = ndimage.label(lung)
            assert lungs == 2, f"{mask_path}: expected two lungs, got {lungs} regions"
            ring = ndimage.binary_dilation(lung, ring_structure, iterations=10) & ~lung
            inside, around = image[lung].mean(), image[ring].mean()
            assert inside < around - 0.05, f"{image_path}: lungs {inside:.3f}, around {around:.3f}"
            gaps.append(around - inside)
    assert np.median(gaps) > 0.15


# --------------------------------------------------------------------------------------------
# The class shows in the lungs, not in global statistics or file properties
# --------------------------------------------------------------------------------------------


def test_classifier_helper_finds_a_real_signal() -> None:
    """The helper below is strong enough to fail the separability tests if a signal existed."""
    labels = np.repeat(np.arange(3), PER_CLASS)
    noise = np.random.default_rng(0).normal(0, 0.3, (labels.size, 2))
    accuracy = _cross_validated_accuracy(labels[:, None] + noise, labels)
    assert min(accuracy.values()) > 0.85


def test_classes_not_separable_by_brightness_or_file_size(dataset: PhantomSummary) -> None:
    brightness, file_size, labels = [], [], []
    for label, folder in enumerate(THREE_FOLDERS):
        for path in _image_paths(dataset.root, folder):
            image = _grey(path)
            brightness.append([image.mean(), image.std()])
            file_size.append([path.stat().st_size])
            labels.append(label)
    labels_array = np.array(labels)
    by_brightness = _cross_validated_accuracy(np.array(brightness), labels_array)
    by_file_size = _cross_validated_accuracy(np.array(file_size, dtype=float), labels_array)
    print(f"accuracy on [mean, std]: {by_brightness}; on PNG size: {by_file_size}")
    assert max(by_brightness.values()) < 0.5, by_brightness
    assert max(by_file_size.values()) < 0.5, by_file_size


class _TinyNet(torch.nn.Module):
    """Four small conv layers and a linear head on mean- and max-pooled features."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        layers: list[torch.nn.Module] = []
        for channels_in, channels_out, kernel in ((1, 8, 5), (8, 16, 3), (16, 32, 3)):
            layers += [
                torch.nn.Conv2d(channels_in, channels_out, kernel, padding=kernel // 2),
                torch.nn.ReLU(),
                torch.nn.MaxPool2d(2),
            ]
        layers += [torch.nn.Conv2d(32, 32, 3, padding=1), torch.nn.ReLU()]
        self.features = torch.nn.Sequential(*layers)
        self.head = torch.nn.Linear(64, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:  # (B, 1, H, W) -> (B, classes)
        features = self.features(images)
        return self.head(torch.cat([features.mean((2, 3)), features.amax((2, 3))], dim=1))


def _shrink(pixels: np.ndarray, side: int = 64) -> np.ndarray:
    """(H, W) uint8 -> (side, side) float32 centred on 0."""
    small = Image.fromarray(pixels).resize((side, side), Image.Resampling.BILINEAR)
    return np.asarray(small, dtype=np.float32) / 255 - 0.5


@pytest.mark.slow
def test_small_cnn_learns_the_classes(dataset: PhantomSummary) -> None:
    """A tiny CNN trained on 60 rendered phantoms per class (seed 1, 64×64) recognises the
    held-out shared dataset (seed 0, read back from PNG)."""
    train_images, train_labels = [], []
    for label, class_name in enumerate(class_names(3)):
        for number in range(60):
            image, _ = render_phantom(class_name, np.random.default_rng([1, label, number]))
            train_images.append(_shrink(np.round(image * 255).astype(np.uint8)))
            train_labels.append(label)
    test_images, test_labels = [], []
    for label, folder in enumerate(THREE_FOLDERS):
        for path in _image_paths(dataset.root, folder):
            test_images.append(_shrink(np.round(_grey(path) * 255).astype(np.uint8)))
            test_labels.append(label)
    x_train, y_train = torch.tensor(np.stack(train_images))[:, None], torch.tensor(train_labels)
    x_test, y_test = torch.tensor(np.stack(test_images))[:, None], torch.tensor(test_labels)

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        torch.manual_seed(0)
        model = _TinyNet(num_classes=3)
        epochs, batch = 20, 16
        optimizer = torch.optim.Adam(model.parameters())
        steps = epochs * ((len(y_train) + batch - 1) // batch)
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=4e-3, total_steps=steps)
        order = torch.Generator().manual_seed(0)
        for _ in range(epochs):
            model.train()
            permutation = torch.randperm(len(y_train), generator=order)
            for start in range(0, len(permutation), batch):
                chosen = permutation[start : start + batch]
                loss = torch.nn.functional.cross_entropy(model(x_train[chosen]), y_train[chosen])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                schedule.step()
        model.eval()
        with torch.no_grad():
            accuracy = (model(x_test).argmax(1) == y_test).float().mean().item()
    finally:
        torch.set_num_threads(threads)
    print(f"held-out accuracy of the tiny CNN: {accuracy:.3f}")
    assert accuracy >= 0.7


# --------------------------------------------------------------------------------------------
# Errors and safety
# --------------------------------------------------------------------------------------------


def test_refuses_a_non_empty_directory_without_overwrite(tmp_path: Path) -> None:
    target = tmp_path / "existing"
    target.mkdir()
    (target / "keep.txt").write_text("precious")
    with pytest.raises(FileExistsError, match="overwrite=True") as caught:
        write_phantoms(target, per_class=1, image_size=48, mask_size=40)
    assert str(target) in str(caught.value)
    assert (target / "keep.txt").read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing"]

    write_phantoms(target, per_class=1, image_size=48, mask_size=40, overwrite=True)
    assert not (target / "keep.txt").exists()
    assert (target / "COVID" / "images" / "COVID-1.png").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing"]


def test_an_empty_directory_is_filled(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    write_phantoms(tmp_path / "empty", per_class=1, image_size=48, mask_size=40)
    assert (tmp_path / "empty" / "Normal.metadata.xlsx").is_file()


def test_a_file_in_the_way_is_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="not a directory"):
        write_phantoms(tmp_path / "file", per_class=1, overwrite=True)


def test_refuses_to_overwrite_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    with pytest.raises(ValueError, match="refusing to overwrite"):
        write_phantoms(tmp_path, per_class=1, overwrite=True)
    assert (tmp_path / "work").is_dir()


def test_an_interrupted_run_leaves_nothing_behind(tmp_path: Path) -> None:
    def stop_after_three(done: int, total: int) -> None:
        if done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_phantoms(
            tmp_path / "ds", per_class=4, image_size=48, mask_size=40, progress=stop_after_three
        )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"per_class": 0}, "per_class should be an integer >= 1, got 0"),
        ({"per_class": 2.5}, "per_class should be an integer >= 1, got 2.5"),
        ({"per_class": 1, "num_classes": 2}, "num_classes should be 3 .* or 4 .*got 2"),
        (
            {"per_class": 1, "image_size": 16},
            "image_size should be an integer >= 32 pixels, got 16",
        ),
        ({"per_class": 1, "mask_size": 31}, "mask_size should be an integer >= 32 pixels, got 31"),
    ],
)
def test_bad_arguments_say_what_was_expected(tmp_path: Path, arguments: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        write_phantoms(tmp_path / "ds", **arguments)
    assert not (tmp_path / "ds").exists()


def test_class_names_are_checked() -> None:
    with pytest.raises(
        ValueError, match=r"'Tuberculosis'.*Normal, COVID, Viral Pneumonia, Lung Opacity"
    ):
        render_phantom("Tuberculosis", np.random.default_rng(0))
    with pytest.raises(ValueError, match="size should be an integer >= 32 pixels, got 20"):
        render_phantom("Normal", np.random.default_rng(0), size=20)
    image, _ = render_phantom("covid-19", np.random.default_rng(0), size=40)  # an alias
    assert image.shape == (40, 40)
