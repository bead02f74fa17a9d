"""Training datasets: every item and batch says which image it is (``path``, ``group``,
``source``), one image at a time and through a DataLoader's batch path alike."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from covidcxr.data.sample import Sample
from covidcxr.training.config import AugmentConfig
from covidcxr.training.data import (
    EpochShuffleSampler,
    FeatureDataset,
    TensorImageDataset,
    augmentation,
    batched,
)
from covidcxr.training.segmentation import SegmentationDataset


def samples(count: int) -> list[Sample]:
    return [
        Sample(
            Path(f"/films/{index}.png"),
            index % 3,
            "Normal",
            source="rsna" if index % 2 else None,
            group=f"g{index // 2}",
        )
        for index in range(count)
    ]


def test_one_item_names_its_image() -> None:
    images = torch.zeros(5, 1, 8, 8, dtype=torch.uint8)
    dataset = TensorImageDataset(images, torch.arange(5) % 3, samples=samples(5))
    item = dataset[3]
    assert (item["path"], item["group"], item["source"]) == ("/films/3.png", "g1", "rsna")
    assert dataset[(2, 7)]["source"] == ""  # unknown: an empty string, which collates


@pytest.mark.parametrize("augment", [False, True])
def test_batches_name_their_images_in_order(augment: bool) -> None:
    images = torch.arange(6, dtype=torch.uint8).view(6, 1, 1, 1).expand(6, 1, 8, 8).clone()
    transform = augmentation(AugmentConfig()) if augment else None
    dataset = TensorImageDataset(images, torch.arange(6) % 3, transform, samples(6))
    loader = DataLoader(
        dataset, batch_size=4, sampler=EpochShuffleSampler(6, seed=1), collate_fn=batched
    )
    for batch in loader:
        assert batch["path"] == [f"/films/{int(i)}.png" for i in batch["index"]]
        assert batch["group"] == [f"g{int(i) // 2}" for i in batch["index"]]
        if not augment:  # the pixels came from the image the path names
            assert batch["image"][:, 0, 0, 0].tolist() == batch["index"].tolist()


def test_features_and_segmentation_batches_name_their_images() -> None:
    features = FeatureDataset(torch.randn(4, 16), torch.arange(4) % 3, samples(4))
    batch = features.__getitems__([(2, 5), 0])
    assert batch["path"] == ["/films/2.png", "/films/0.png"]
    images = torch.zeros(4, 1, 8, 8, dtype=torch.uint8)
    lungs = SegmentationDataset(images, images.clone(), flip=True, samples=samples(4))
    assert lungs.__getitems__([(1, 3), (3, 4)])["source"] == ["rsna", "rsna"]
    assert lungs[0]["path"] == "/films/0.png"


def test_without_samples_items_keep_their_old_keys() -> None:
    dataset = TensorImageDataset(torch.zeros(2, 1, 4, 4, dtype=torch.uint8), torch.zeros(2))
    assert set(dataset[0]) == {"image", "label", "index"}


def test_samples_that_do_not_match_the_images_are_refused() -> None:
    with pytest.raises(ValueError, match="3 samples for 4 images"):
        FeatureDataset(torch.randn(4, 16), torch.zeros(4), samples(3))
