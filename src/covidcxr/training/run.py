"""What every training run shares: the run folder's file names, the task's :class:`Job`, the
result, the process rank, and the record of the data a model was trained on."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from covidcxr.training.config import TrainConfig

ProgressFactory = Callable[[str], Callable[[int, int], None] | None]


CONFIG_FILE = "config.yaml"


METRICS_FILE = "metrics.json"


CHECKPOINT_DIR = "checkpoints"


@dataclass
class RunResult:
    """What a finished run produced (``metrics`` is the content of ``metrics.json``)."""

    run_dir: Path
    model_dir: Path
    metrics: dict[str, Any]
    history: list[dict[str, float]]


def launch_rank() -> int:
    """This process's global rank as the launcher (Lightning, torchrun, SLURM) set it."""
    for variable in ("RANK", "LOCAL_RANK", "SLURM_PROCID"):
        if os.environ.get(variable, "").isdigit():
            return int(os.environ[variable])
    return 0


@dataclass
class Job:
    """What one task (classification, segmentation) brings to the shared training run: its
    network and LightningModule, train / validation loaders, and ``finish(history) -> metrics``
    which scores the restored best weights and writes the task's figures and saved model."""

    network: Any
    module: Any
    loaders: tuple[Any, Any]
    finish: Callable[[list[dict[str, float]]], dict[str, Any]]
    summary: Callable[[dict[str, Any]], str]


def training_data_record(config: TrainConfig, data) -> dict[str, Any]:
    """What the card says the model has seen: the dataset's own card (sources, exclusions,
    synthetic or not), where it was read, and the class counts of each split."""
    from covidcxr.data.layouts import dataset_card, discover

    root = discover(config.data, config.num_classes).root
    card = dataset_card(root) or {}
    record: dict[str, Any] = {
        key: card[key]
        for key in ("name", "synthetic", "sources", "licence", "excluded_counts", "generator")
        if key in card
    }
    record.setdefault("name", root.name)
    record.setdefault("synthetic", False)  # phantoms always write a dataset card that says so
    record["root"] = str(root)
    given = config.split is not None  # the user's own split CSV: its method is theirs
    record["split"] = {
        "file": SPLIT_RECORD,
        "method": (
            f"given ({Path(config.split).name})"
            if given
            else "stratified by class, near-duplicate groups kept whole"
        ),
        "seed": None if given else config.seed,
        "counts": {
            name: {
                class_name: int((split.labels == label).sum())
                for label, class_name in enumerate(data.class_names)
            }
            for name, split in data.splits.items()
        },
    }
    return record


SPLIT_RECORD = "splits.csv (in the run folder)"
