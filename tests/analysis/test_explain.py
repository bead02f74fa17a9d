"""Grad-CAM: shapes for every registered classifier, a network whose answer we know the
location of, lung-crop mapping, hooks removed, overlays, summaries and explain_files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib import colormaps
from PIL import Image
from torch import nn

import covidcxr.analysis.explain as explain
from covidcxr.analysis.explain import (
    METHODS,
    OUTLINE_COLOUR,
    explain_files,
    lung_saliency_fraction,
    saliency_maps,
    saliency_overlay,
    summarise_lung_fractions,
)
from covidcxr.inference.artifact import Classifier, ModelCard, Segmenter
from covidcxr.io import read_image
from covidcxr.models import create_model, list_models
from covidcxr.models.registry import ModelSpec, get_model_spec

CLASSES = ["COVID", "Normal", "Viral Pneumonia"]
# Regions of RegionNet's 16×16 feature grid (rows, cols), i.e. twice that in its 32×32 input.
TOP_RIGHT = (slice(1, 8), slice(8, 15))
BOTTOM_LEFT = (slice(9, 16), slice(0, 7))
LEFT_HALF = (slice(0, 16), slice(0, 8))
EVERYWHERE = (slice(0, 16), slice(0, 16))


def random_images(*shapes: tuple[int, int], seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.random(shape, dtype=np.float32) for shape in shapes]


def classifier_for(network: nn.Module, tmp_path: Path, **card_fields) -> Classifier:
    spec = network.spec
    card = ModelCard(
        model=spec.name,
        class_names=card_fields.pop("class_names", CLASSES),
        input_size=spec.input_size,
        in_channels=3,
        mean=list(spec.mean),
        std=list(spec.std),
        target_layer=spec.target_layer,
        **card_fields,
    )
    return Classifier(network, card, folder=tmp_path)


class RegionMask(nn.Module):
    """Multiplies channel ``c`` by the fixed 0/1 mask of class ``c``'s region."""

    def __init__(self, regions, size: int = 16) -> None:
        super().__init__()
        masks = torch.zeros(len(regions), size, size)
        for channel, (rows, cols) in enumerate(regions):
            masks[channel, rows, cols] = 1.0
        self.register_buffer("masks", masks[None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.masks


class RegionNet(nn.Module):
    """Two classes at 32×32; class ``c``'s logit is the mean of channel ``c`` over region
    ``regions[c]`` of the 16×16 feature grid and nothing else, so its Grad-CAM at ``regions``
    (the target layer) can only be that region. Channel activations are ``0.25 × sum of the
    input channels + 0.1`` (> 0 everywhere). Class 1 wins unless ``bias`` says otherwise.
    ``fail_with`` raises that exception in forward passes that record gradients."""

    def __init__(self, regions, bias=(0.0, 1.0), fail_with: type[Exception] | None = None):
        super().__init__()
        self.spec = ModelSpec(
            name="region-net",
            input_size=32,
            in_channels=3,
            mean=(0.0, 0.0, 0.0),
            std=(1.0, 1.0, 1.0),
            target_layer="regions",
            frozen_trunk=False,
            default_weights=None,
            defaults={},
            description="test: class c looks only at one region",
            test_only=True,
        )
        self.conv = nn.Conv2d(3, len(regions), kernel_size=1)
        self.pool = nn.AvgPool2d(2)
        self.regions = RegionMask(regions)
        self.head = nn.Linear(len(regions), len(regions))
        with torch.no_grad():
            self.conv.weight.fill_(0.25)
            self.conv.bias.fill_(0.1)
            self.head.weight.copy_(torch.eye(len(regions)))
            self.head.bias.copy_(torch.tensor(bias))
        self.fail_with = fail_with

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.regions(self.pool(torch.relu(self.conv(x))))
        if self.fail_with is not None and torch.is_grad_enabled():
            raise self.fail_with("deliberate failure in the forward pass")
        return self.head(features.mean(dim=(2, 3)))


def input_region_mask(region, size: int = 32) -> np.ndarray:
    """The bool (32, 32) input-pixel mask of a 16×16 grid region."""
    rows, cols = region
    mask = np.zeros((size // 2, size // 2), dtype=bool)
    mask[rows, cols] = True
    return np.kron(mask, np.ones((2, 2), dtype=bool))


class StubSegmenter(Segmenter):
    """Returns the same lung mask for every image."""

    def __init__(self, mask: np.ndarray) -> None:
        self.mask = mask
        self.calls = 0

    def predict_masks(self, images, batch_size=8, postprocess=None):
        self.calls += 1
        return [self.mask.copy() for _ in images]


def all_hooks(network: nn.Module) -> list:
    return [
        hook
        for module in network.modules()
        for hooks in (module._forward_hooks, module._backward_hooks, module._forward_pre_hooks)
        for hook in hooks.values()
    ]


# --- every registered classifier ----------------------------------------------------------


@pytest.mark.parametrize("name", list_models(include_test=True, task="classification"))
def test_maps_have_each_images_size_for_every_registered_classifier(name, tmp_path):
    torch.manual_seed(0)
    classifier = classifier_for(create_model(name, weights=None), tmp_path)
    # 224-pixel models are slow on CPU: one image and Grad-CAM only; the small ones get both
    # shapes and both methods.
    small = classifier.card.input_size <= 100
    shapes = [(33, 47), (61, 40)] if small else [(33, 47)]
    images = random_images(*shapes)
    expected = classifier.predict_proba(images)
    for method in METHODS if small else METHODS[:1]:
        maps, probabilities = saliency_maps(classifier, images, method)
        assert [m.shape for m in maps] == shapes
        for saliency in maps:
            assert saliency.dtype == np.float32
            assert np.isfinite(saliency).all()
            assert saliency.min() >= 0.0 and saliency.max() <= 1.0
            # Gradients reached the layer (frozen trunks too): the map is not empty.
            assert saliency.max() > 0.0
        np.testing.assert_allclose(probabilities, expected, rtol=1e-5, atol=1e-6)
    layer = classifier.network.get_submodule(classifier.network.spec.target_layer)
    assert not layer._forward_hooks and not layer._backward_hooks
    assert all(p.grad is None for p in classifier.network.parameters())


def test_module_docstring_names_every_classifiers_target_layer():
    for name in list_models(include_test=True, task="classification"):
        spec = get_model_spec(name)
        line = next((x for x in explain.__doc__.splitlines() if x.startswith(name + " ")), None)
        assert line is not None, f"{name} missing from explain's layer table"
        assert f"``{spec.target_layer}``" in line


# --- a network whose answer sits in a known place -----------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_saliency_concentrates_where_the_class_looks(method, tmp_path):
    classifier = classifier_for(
        RegionNet([BOTTOM_LEFT, TOP_RIGHT]), tmp_path, class_names=["zero", "one"]
    )
    images = random_images((61, 40), (33, 47))
    top_right, bottom_left = input_region_mask(TOP_RIGHT), input_region_mask(BOTTOM_LEFT)

    maps, _ = saliency_maps(classifier, images, method, targets=[1, 1])
    for saliency in maps:
        assert lung_saliency_fraction(saliency, top_right) > 0.8
        assert lung_saliency_fraction(saliency, bottom_left) < 0.2

    maps, _ = saliency_maps(classifier, images, method, targets=[0, 0])
    for saliency in maps:
        assert lung_saliency_fraction(saliency, bottom_left) > 0.8
        assert lung_saliency_fraction(saliency, top_right) < 0.2


def test_default_target_is_the_predicted_class_and_probabilities_are_calibrated(tmp_path):
    classifier = classifier_for(
        RegionNet([BOTTOM_LEFT, TOP_RIGHT], bias=(0.0, 2.0)),
        tmp_path,
        class_names=["zero", "one"],
        temperature=3.0,
    )
    images = random_images((61, 40), (33, 47))
    default_maps, probabilities = saliency_maps(classifier, images, batch_size=1)
    class_one_maps, _ = saliency_maps(classifier, images, targets=[1, 1])
    assert probabilities.argmax(axis=1).tolist() == [1, 1]
    for default, class_one in zip(default_maps, class_one_maps, strict=True):
        np.testing.assert_array_equal(default, class_one)
    np.testing.assert_allclose(probabilities, classifier.predict_proba(images), rtol=1e-6)
    # Temperature 3 flattens the softmax: check against the uncalibrated logits.
    with torch.no_grad():
        logits = classifier.network(torch.from_numpy(np.zeros((1, 3, 32, 32), np.float32)))
    uncalibrated = torch.softmax(logits, dim=1)[0, 1].item()
    assert probabilities[0, 1] < uncalibrated


def test_crop_maps_go_back_into_the_lung_box_and_nowhere_else(tmp_path):
    # Class 1 looks at the left half of what the network sees: the left half of the box.
    network = RegionNet([EVERYWHERE, LEFT_HALF])
    classifier = classifier_for(
        network, tmp_path, class_names=["zero", "one"], lungs={"mode": "crop", "margin": 0.0}
    )
    height, width = 61, 40
    lungs = np.zeros((height, width), dtype=bool)
    lungs[10:50, 8:32] = True
    segmenter = StubSegmenter(lungs)
    classifier.use_segmenter(segmenter)
    images = random_images((height, width))

    maps, probabilities = saliency_maps(classifier, images, targets=[1])
    saliency = maps[0]
    assert saliency.shape == (height, width)
    outside = ~lungs
    assert np.all(saliency[outside] == 0.0)
    left_of_box = np.zeros_like(lungs)
    left_of_box[10:50, 8:20] = True
    assert (saliency[left_of_box] > 0).mean() > 0.9
    assert lung_saliency_fraction(saliency, left_of_box) > 0.8
    # The network saw what Classifier.prepare makes: same probabilities as predict_proba.
    np.testing.assert_allclose(probabilities, classifier.predict_proba(images), rtol=1e-6)

    # Masks passed in replace the segmenter's: a box on the right moves the map there.
    calls = segmenter.calls
    right = np.zeros((height, width), dtype=bool)
    right[20:40, 25:38] = True
    maps, _ = saliency_maps(classifier, images, targets=[1], lung_masks=[right])
    assert segmenter.calls == calls
    assert np.all(maps[0][~right] == 0.0) and maps[0][right].max() > 0.5


def test_mask_mode_maps_cover_the_whole_image(tmp_path):
    classifier = classifier_for(
        RegionNet([EVERYWHERE, TOP_RIGHT]),
        tmp_path,
        class_names=["zero", "one"],
        lungs={"mode": "mask", "margin": 0.05},
    )
    lungs = np.ones((61, 40), dtype=bool)
    classifier.use_segmenter(StubSegmenter(lungs))
    maps, _ = saliency_maps(classifier, random_images((61, 40)), targets=[1])
    assert maps[0].shape == (61, 40)
    assert lung_saliency_fraction(maps[0], input_region_mask(TOP_RIGHT)) > 0.8


# --- the network is left as it was ----------------------------------------------------------


@pytest.mark.parametrize("context", ["plain", "no_grad", "inference_mode"])
def test_hooks_removed_parameters_untouched_and_mode_restored(context, tmp_path):
    torch.manual_seed(0)
    network = create_model("tiny-frozen-cnn", weights=None)
    classifier = classifier_for(network, tmp_path)
    network.train()
    before = {name: value.clone() for name, value in network.state_dict().items()}
    flags = {name: p.requires_grad for name, p in network.named_parameters()}
    scope = {"plain": torch.enable_grad, "no_grad": torch.no_grad}.get(
        context, torch.inference_mode
    )
    with scope():
        maps, _ = saliency_maps(classifier, random_images((33, 47)), "gradcam++")
    assert maps[0].max() > 0
    layer = network.get_submodule(network.spec.target_layer)
    assert not layer._forward_hooks and not layer._backward_hooks
    assert all_hooks(network) == []
    assert network.training and network.head.training
    assert not network.trunk.training  # the frozen trunk stays in eval mode
    for name, value in network.state_dict().items():
        assert torch.equal(value, before[name]), name
    assert {name: p.requires_grad for name, p in network.named_parameters()} == flags
    assert all(p.grad is None for p in network.parameters())


@pytest.mark.parametrize(
    ("raised", "expected"), [(IndexError, RuntimeError), (ValueError, ValueError)]
)
def test_a_failing_forward_pass_is_reported_and_leaves_no_hooks(raised, expected, tmp_path):
    # pytorch-grad-cam's __exit__ swallows IndexError; saliency_maps must not let it.
    network = RegionNet([BOTTOM_LEFT, TOP_RIGHT], fail_with=raised)
    classifier = classifier_for(network, tmp_path, class_names=["zero", "one"])
    with pytest.raises(expected, match="deliberate failure"):
        saliency_maps(classifier, random_images((33, 47)))
    assert all_hooks(network) == []


def test_bad_arguments_are_rejected_with_the_expected_values(tmp_path):
    classifier = classifier_for(create_model("tiny-cnn", weights=None), tmp_path)
    images = random_images((33, 47))
    with pytest.raises(ValueError, match="'gradcam', 'gradcam\\+\\+'"):
        saliency_maps(classifier, images, method="scorecam")
    with pytest.raises(ValueError, match=r"class indices in \[0, 2\]"):
        saliency_maps(classifier, images, targets=[3])
    with pytest.raises(ValueError, match="one class index per image"):
        saliency_maps(classifier, images, targets=[0, 1])
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        saliency_maps(classifier, [images[0] * 255])
    maps, probabilities = saliency_maps(classifier, [])
    assert maps == [] and probabilities.shape == (0, 3)


# --- lung fractions and their summary -------------------------------------------------------


def test_lung_fraction_of_a_hand_made_map():
    saliency = np.zeros((4, 6), dtype=np.float32)
    saliency[:, :3] = 3.0
    saliency[:, 3:] = 1.0
    saliency[0, 5] = -5.0  # negative saliency counts as none
    left = np.array([[True, False], [True, False]])  # 2×2, resized to the map's 4×6
    assert lung_saliency_fraction(saliency, left) == pytest.approx(36 / 47)
    assert lung_saliency_fraction(saliency, ~left) == pytest.approx(11 / 47)
    assert lung_saliency_fraction(np.zeros((4, 6), np.float32), left) is None
    with pytest.raises(ValueError, match="bool"):
        lung_saliency_fraction(saliency, left.astype(np.uint8))


def test_summary_of_lung_fractions_by_class_and_correctness():
    summary = summarise_lung_fractions(
        [0.9, 0.5, None, 0.7],
        true_labels=[0, 1, 1, "COVID"],
        predicted_labels=[0, 0, 1, "COVID"],
        class_names=CLASSES,
    )
    assert summary["images"] == 4 and summary["no_saliency"] == 1
    assert summary["overall"] == {"mean": pytest.approx(0.7), "count": 3}
    assert summary["per_class"]["COVID"] == {"mean": pytest.approx(0.8), "count": 2}
    assert summary["per_class"]["Normal"] == {"mean": 0.5, "count": 1}
    assert summary["per_class"]["Viral Pneumonia"] == {"mean": None, "count": 0}
    assert summary["correct"] == {"mean": pytest.approx(0.8), "count": 2}
    assert summary["wrong"] == {"mean": 0.5, "count": 1}
    assert json.loads(json.dumps(summary)) == summary
    with pytest.raises(ValueError, match="one entry per image"):
        summarise_lung_fractions([0.5], [0, 1], [0, 1], CLASSES)
    with pytest.raises(ValueError, match="'Lung_Opacity' is not one of"):
        summarise_lung_fractions([0.5], ["Lung_Opacity"], [0], CLASSES)
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        summarise_lung_fractions([1.5], [0], [0], CLASSES)


# --- overlays -------------------------------------------------------------------------------


def test_overlay_blends_heat_only_where_there_is_saliency_and_draws_the_outline():
    image = random_images((33, 47))[0]
    grey = np.rint(image * 255).astype(np.uint8)
    saliency = np.zeros_like(image)
    saliency[5:15, 10:30] = 1.0
    rgb = saliency_overlay(image, saliency)
    assert rgb.shape == (33, 47, 3) and rgb.dtype == np.uint8
    cold = saliency == 0
    assert np.array_equal(rgb[cold], np.repeat(grey[cold][:, None], 3, axis=1))
    # Where saliency is 1: 55 % grey X-ray, 45 % inferno's top colour (a pale yellow).
    top_colour = np.array(colormaps["inferno"](1.0)[:3])
    expected = np.rint((0.55 * image[5:15, 10:30, None] + 0.45 * top_colour) * 255)
    np.testing.assert_array_equal(rgb[5:15, 10:30], expected.astype(np.uint8))

    lungs = np.zeros((16, 16), dtype=bool)  # any size: resized to the image
    lungs[4:12, 4:12] = True
    with_outline = saliency_overlay(image, saliency, lungs)
    outline = np.all(with_outline == OUTLINE_COLOUR, axis=2)
    assert outline.any()
    assert not np.all(rgb == OUTLINE_COLOUR, axis=2).any()
    assert np.array_equal(with_outline[~outline], rgb[~outline])
    with pytest.raises(ValueError, match="image's shape"):
        saliency_overlay(image, saliency[:, :40])
    with pytest.raises(ValueError, match="alpha"):
        saliency_overlay(image, saliency, alpha=2.0)


# --- explain_files on real X-rays -----------------------------------------------------------


def test_explain_files_on_the_real_sample_with_the_dataset_masks(real_dataset, tmp_path):
    classifier = classifier_for(
        RegionNet([EVERYWHERE, EVERYWHERE]), tmp_path / "model", class_names=["zero", "one"]
    )
    viral = real_dataset / "Viral Pneumonia"
    masks = {path: viral / "masks" / path.name for path in (viral / "images").glob("*.png")}
    normal = real_dataset / "Normal" / "images" / "Normal-6.png"  # no mask
    broken = tmp_path / "inputs" / "broken.png"
    broken.parent.mkdir()
    broken.write_bytes(b"not a png at all")
    duplicate = viral / "images" / "Viral Pneumonia-1.png"  # also inside the folder
    missing = tmp_path / "inputs" / "missing.png"
    progress = []

    result = explain_files(
        classifier,
        [viral, normal, broken, duplicate, missing],
        tmp_path / "out",
        method="gradcam++",
        masks=masks,
        progress=lambda done, total: progress.append((done, total)),
    )
    failed = {path: reason for path, reason in result.failures}
    assert set(failed) == {broken, missing}
    assert "no such file" in failed[missing]
    assert len(result.rows) == len(masks) + 2
    assert progress[-1] == (len(masks) + 3, len(masks) + 3)
    overlays = [Path(row["overlay"]) for row in result.rows]
    assert len(set(overlays)) == len(overlays)
    assert (tmp_path / "out" / "Viral Pneumonia-1_gradcam++_2.png") in overlays
    for row, overlay in zip(result.rows, overlays, strict=True):
        height, width = read_image(row["path"]).shape
        with Image.open(overlay) as picture:
            assert picture.size == (width, height) and picture.mode == "RGB"
            pixels = np.asarray(picture)
        assert row["predicted"] in {"zero", "one"} and 0.5 <= row["confidence"] <= 1.0
        has_outline = np.all(pixels == OUTLINE_COLOUR, axis=2).any()
        if Path(row["path"]) == normal:
            assert row["lung_fraction"] is None and not has_outline
        else:
            assert 0.0 <= row["lung_fraction"] <= 1.0 and has_outline
            assert Path(row["path"]).parent == viral / "images"


@pytest.mark.parametrize("source", ["seg_model", "classifier"])
def test_explain_files_takes_lungs_from_a_segmenter(source, real_dataset, tmp_path):
    image_path = real_dataset / "Viral Pneumonia" / "images" / "Viral Pneumonia-2.png"
    lungs = np.zeros((299, 299), dtype=bool)
    lungs[40:260, 30:270] = True
    segmenter = StubSegmenter(lungs)
    lung_fields = {"lungs": {"mode": "crop", "margin": 0.0}} if source == "classifier" else {}
    classifier = classifier_for(
        RegionNet([EVERYWHERE, LEFT_HALF]), tmp_path, class_names=["zero", "one"], **lung_fields
    )
    if source == "classifier":
        classifier.use_segmenter(segmenter)  # as if bundled in the model folder
    result = explain_files(
        classifier,
        [image_path],
        tmp_path / "out",
        seg_model=segmenter if source == "seg_model" else None,
    )
    assert result.failures == []
    (row,) = result.rows
    assert segmenter.calls == 1  # the classifier's lungs are segmented once, for both uses
    assert row["lung_fraction"] is not None
    if source == "classifier":
        assert row["lung_fraction"] == pytest.approx(1.0)  # a crop model sees only the box
    assert Path(row["overlay"]).name == "Viral Pneumonia-2_gradcam.png"


def test_explain_files_needs_a_segmenter_for_a_lung_focused_model(real_dataset, tmp_path):
    classifier = classifier_for(
        create_model("tiny-cnn", weights=None), tmp_path, lungs={"mode": "mask"}
    )
    with pytest.raises(ValueError, match="--seg-model"):
        explain_files(classifier, [real_dataset], tmp_path / "out")
    assert not (tmp_path / "out").exists()  # failed before reading or writing anything
