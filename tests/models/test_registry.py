"""Names, specs and argument checking of the model registry (no network, no big forwards)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest
import torch

from covidcxr.models import TASKS, ModelSpec, create_model, get_model_spec, list_models

PAPER_AND_BACKBONES = ["seed-cnn", "vgg16", "densenet121", "resnet50", "efficientnet-lite0"]
TEST_NETWORKS = {"tiny-cnn", "tiny-frozen-cnn", "tiny-unet"}


def test_list_models_puts_paper_models_first_and_hides_test_networks():
    assert list_models() == [*PAPER_AND_BACKBONES, "unet", "unet-lite"]
    with_tests = list_models(include_test=True)
    assert set(with_tests) - set(list_models()) == TEST_NETWORKS
    assert all(get_model_spec(name).test_only for name in TEST_NETWORKS)


def test_list_models_by_task():
    assert list_models(task="classification") == PAPER_AND_BACKBONES
    assert list_models(task="segmentation") == ["unet", "unet-lite"]
    assert list_models(include_test=True, task="segmentation") == ["unet", "unet-lite", "tiny-unet"]
    for task in TASKS:
        assert all(get_model_spec(n).task == task for n in list_models(True, task=task))
    by_task = [n for task in TASKS for n in list_models(include_test=True, task=task)]
    assert sorted(by_task) == sorted(list_models(include_test=True))


def test_list_models_rejects_an_unknown_task():
    with pytest.raises(ValueError, match=r"classification, segmentation, got 'detection'"):
        list_models(task="detection")


def test_listing_order_does_not_depend_on_which_family_is_imported_first():
    """Importing a family module before the first lookup registers it early; the listing
    still follows the family order."""
    code = (
        "import covidcxr.models.transfer, covidcxr.models.unet\n"
        "from covidcxr.models.registry import list_models\n"
        "print(','.join(list_models(include_test=True)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert result.stdout.strip().split(",") == list_models(include_test=True)


def test_listing_the_models_imports_no_heavy_library():
    code = (
        "import sys\n"
        "from covidcxr.models import get_model_spec, list_models\n"
        "list_models(include_test=True); get_model_spec('unet')\n"
        "print(','.join(m for m in ('monai', 'torchvision', 'timm') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert result.stdout.strip() == ""


@pytest.mark.parametrize(
    ("typo", "suggestion"),
    [
        ("vgg-16", "vgg16"),
        ("seedcnn", "seed-cnn"),
        ("resnet-50", "resnet50"),
        ("VGG16", "vgg16"),
        ("U-Net", "unet"),
    ],
)
def test_unknown_name_suggests_the_closest_and_lists_all(typo, suggestion):
    with pytest.raises(ValueError, match=f"Did you mean '{suggestion}'") as caught:
        create_model(typo)
    message = str(caught.value)
    assert all(name in message for name in list_models())
    with pytest.raises(ValueError, match=f"'{suggestion}'"):
        get_model_spec(typo)


def test_unknown_name_without_close_match_still_lists_models():
    with pytest.raises(ValueError, match=r"unknown model name 'xyzzy'.*Available models: seed-cnn"):
        get_model_spec("xyzzy")


def test_paper_specs():
    seed = get_model_spec("seed-cnn")
    assert (seed.input_size, seed.in_channels, seed.mean, seed.std) == (100, 3, (0,) * 3, (1,) * 3)
    assert seed.frozen_trunk is False and seed.default_weights is None
    assert dict(seed.presets["paper"]) == {
        "max_epochs": 50,
        "fractions": (0.7, 0.1, 0.2),
        "batch_size": 64,
        "learning_rate": 1e-3,
        "patience": 3,
        "lr_schedule": "none",
    }
    assert dict(seed.defaults) == {**seed.presets["paper"], "max_epochs": 100, "patience": 10}
    vgg = get_model_spec("vgg16")
    assert (vgg.input_size, vgg.frozen_trunk, vgg.default_weights) == (224, True, "imagenet")
    assert vgg.mean == (0.485, 0.456, 0.406) and vgg.std == (0.229, 0.224, 0.225)
    assert dict(vgg.defaults) == {
        "max_epochs": 10,
        "fractions": (0.75, 0.125, 0.125),
        "batch_size": 64,
        "learning_rate": 1e-3,
        "patience": 3,
        "lr_schedule": "none",
    }
    assert dict(vgg.presets["paper"]) == {}
    lite = get_model_spec("efficientnet-lite0")
    assert lite.mean == (0.5, 0.5, 0.5) and lite.std == (0.5, 0.5, 0.5)
    for name in ("densenet121", "resnet50", "efficientnet-lite0"):
        spec = get_model_spec(name)
        assert spec.frozen_trunk and spec.default_weights == "imagenet"
        assert spec.defaults == vgg.defaults


@pytest.mark.parametrize("name", list_models(include_test=True))
def test_spec_is_frozen_hashable_and_complete(name):
    spec = get_model_spec(name)
    assert isinstance(spec, ModelSpec) and spec.name == name
    assert spec.task in TASKS and spec.input_size > 0
    assert spec.in_channels == (3 if spec.task == "classification" else 1)
    assert len(spec.mean) == len(spec.std) == spec.in_channels and all(s > 0 for s in spec.std)
    assert {"max_epochs", "fractions", "batch_size", "learning_rate"} <= set(spec.defaults)
    assert abs(sum(spec.defaults["fractions"]) - 1) < 1e-9
    assert spec.description
    hash(spec)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.input_size = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        spec.defaults["max_epochs"] = 1  # type: ignore[index]


def spec_fields(**overrides) -> dict:
    spec = get_model_spec("tiny-cnn")
    return {f.name: getattr(spec, f.name) for f in dataclasses.fields(spec)} | overrides


def test_spec_task_defaults_to_classification_and_is_checked():
    fields = spec_fields()
    del fields["task"]
    assert ModelSpec(**fields).task == "classification"
    with pytest.raises(ValueError, match=r"task should be one of .*, got 'detection'"):
        ModelSpec(**spec_fields(task="detection"))


def test_spec_normalisation_needs_one_value_per_channel():
    with pytest.raises(ValueError, match=r"one value per input channel \(1\), got mean=\(0.0, 0"):
        ModelSpec(**spec_fields(in_channels=1))
    ModelSpec(**spec_fields(in_channels=1, mean=(0.5,), std=(0.5,)))


@pytest.mark.parametrize("num_classes", [0, -1, 2.5, True])
def test_bad_num_classes(num_classes):
    with pytest.raises(ValueError, match="num_classes must be a positive integer"):
        create_model("tiny-cnn", num_classes=num_classes)


@pytest.mark.parametrize("weights", ["imagenet", "some/file.pth"])
def test_models_without_pretrained_weights_refuse_them(weights):
    with pytest.raises(ValueError, match="'seed-cnn' has no pretrained weights"):
        create_model("seed-cnn", weights=weights)


def test_weights_of_the_wrong_type():
    with pytest.raises(TypeError, match="weights must be None, 'imagenet' or a path"):
        create_model("resnet50", weights=3)  # type: ignore[arg-type]


def test_network_carries_its_spec_and_default_weights_apply():
    torch.manual_seed(0)
    network = create_model("seed-cnn")  # default weights: None for the CNN, so no download
    assert network.spec is get_model_spec("seed-cnn")
    assert network.num_classes == 3 and network.num_features == 1600
    segmenter = create_model("tiny-unet")  # default num_classes: 1 mask channel
    assert segmenter.spec is get_model_spec("tiny-unet") and segmenter.num_classes == 1


def test_suggestions_come_from_the_same_task_and_never_test_networks():
    with pytest.raises(ValueError) as caught:
        get_model_spec("resnet", task="classification")
    message = str(caught.value)
    assert "Available classification models: seed-cnn" in message
    assert "unet" not in message and "tiny" not in message
    with pytest.raises(ValueError, match=r"Did you mean 'unet-lite'.*Available segmentation"):
        get_model_spec("unet-lit", task="segmentation")
