"""``train(config) -> RunResult``: one engine for every classifier (Lightning underneath).

A run folder (``config.out``) ends up holding::

    config.yaml            the resolved settings (repeat the run with --config config.yaml)
    splits.csv             the split used (reused on --resume and by extra processes)
    history.csv            one row per epoch: train/val loss and accuracy, images/s
    checkpoints/last.ckpt  written atomically after every epoch (--resume continues from it)
    checkpoints/best.ckpt  lowest validation loss so far (its weights are restored at the end)
    metrics.json           test accuracy, per-class precision / recall / specificity / F1, AUC
    curves.png             accuracy and loss, train vs validation
    confusion_matrix.png   test confusion matrix, counts and row-normalised (+ .csv)
    model/                 the self-describing saved model (see covidcxr.artifact)
"""

from __future__ import annotations

import json
import os
import shutil
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from covidcxr.config import NO_WEIGHTS, TrainConfig, resolve
from covidcxr.config import save_yaml as save_config
from covidcxr.wording import plural

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.json"
CHECKPOINT_DIR = "checkpoints"

ProgressFactory = Callable[[str], Callable[[int, int], None] | None]


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


def train(
    config: TrainConfig,
    *,
    resume: bool = False,
    callbacks: Sequence[Any] = (),
    progress_factory: ProgressFactory = lambda _: None,
    log: Callable[[str], None] = print,
) -> RunResult | None:
    """Train ``config.model`` on ``config.data``; returns the result on rank 0 (None on the other
    processes of a multi-device run). ``resume`` continues the run in ``config.out`` from its
    last checkpoint (pass the settings saved in its ``config.yaml``; a larger ``max_epochs``
    extends the run)."""
    from covidcxr.engine.perf import tune_allocator

    started = time.perf_counter()
    tune_allocator()
    config = resolve(config)
    run_dir = Path(config.out)
    last_checkpoint = run_dir / CHECKPOINT_DIR / "last.ckpt"
    rank = launch_rank()
    if resume:
        saved = run_dir / CONFIG_FILE
        if not saved.is_file() or not last_checkpoint.is_file():
            raise FileNotFoundError(
                f"{run_dir}: nothing to resume (needs {CONFIG_FILE} and "
                f"{CHECKPOINT_DIR}/last.ckpt from an earlier `covidcxr train --out {run_dir}`)"
            )
        log(f"Resuming {run_dir} from {last_checkpoint}")
    elif (
        rank == 0
        and (run_dir / CHECKPOINT_DIR).is_dir()
        and any((run_dir / CHECKPOINT_DIR).iterdir())
    ):
        raise FileExistsError(
            f"{run_dir} already holds a run; pass --resume to continue it, or choose another --out"
        )
    with _removed_if_nothing_trained(run_dir, active=rank == 0 and not resume), quiet_lightning():
        if rank == 0:
            save_config(config, run_dir / CONFIG_FILE)
        return _fit(
            config, run_dir, resume, last_checkpoint, started, callbacks, progress_factory, log
        )


def _fit(
    config: TrainConfig,
    run_dir: Path,
    resume: bool,
    last_checkpoint: Path,
    started: float,
    callbacks: Sequence[Any],
    progress_factory: ProgressFactory,
    log: Callable[[str], None],
) -> RunResult | None:
    """Set up the task, fit, restore the best weights, score and save (see :func:`train`)."""
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import EarlyStopping, TQDMProgressBar

    from covidcxr.engine.callbacks import (
        AtomicModelCheckpoint,
        EpochHistory,
        EpochLines,
        EpochSeeding,
        PlateauSchedule,
    )
    from covidcxr.engine.module import PLATEAU_FACTOR, PLATEAU_PATIENCE
    from covidcxr.engine.segmentation import setup_segmentation
    from covidcxr.models import get_model_spec

    pl.seed_everything(config.seed, workers=True, verbose=False)
    spec = get_model_spec(config.model)
    setup = setup_segmentation if spec.task == "segmentation" else setup_classification
    job = setup(config, spec, run_dir, progress_factory, log)
    history = EpochHistory(run_dir / "history.csv", score=job.module.score_name)
    checkpoint = AtomicModelCheckpoint(
        dirpath=run_dir / CHECKPOINT_DIR,
        filename="best",
        monitor="val_loss",
        mode="min",
        save_top_k=1,
        enable_version_counter=False,
    )
    # Lightning's save_last writes last.ckpt only in epochs that improve the monitored loss;
    # this one writes it after every epoch, so a resume loses at most the epoch in progress.
    last = AtomicModelCheckpoint(
        after_last=[history.write],
        dirpath=run_dir / CHECKPOINT_DIR,
        filename="last",
        monitor=None,
        save_top_k=1,
        enable_version_counter=False,
    )
    all_callbacks = [
        EarlyStopping(monitor="val_loss", mode="min", patience=int(config.patience)),
        checkpoint,
        last,
        EpochSeeding(config.seed),
        history,
        *callbacks,
    ]
    if job.module.lr_schedule == "plateau":
        all_callbacks.append(PlateauSchedule(PLATEAU_FACTOR, PLATEAU_PATIENCE))
    bars = not config.quiet and _is_terminal()
    if bars:
        all_callbacks.append(TQDMProgressBar())
    else:  # a quiet run, or output into a file (SLURM): a plain line per epoch
        all_callbacks.append(EpochLines(history, log))
    trainer = pl.Trainer(
        max_epochs=config.max_epochs,
        accelerator=config.accelerator,
        devices=config.devices,
        strategy=config.strategy,
        num_nodes=config.num_nodes,
        precision=config.precision,
        callbacks=all_callbacks,
        logger=False,
        default_root_dir=run_dir,
        deterministic="warn",
        enable_progress_bar=bars,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    # (a frozen trunk stays in eval mode on purpose, so BatchNorm statistics do not move: the
    # warning about it is among LIGHTNING_WARNINGS)
    trainer.fit(job.module, *job.loaders, ckpt_path=last_checkpoint if resume else None)
    if not trainer.is_global_zero:
        return None

    best_path = checkpoint.best_model_path
    if best_path and Path(best_path).is_file():  # restore the best epoch's weights
        state = torch.load(best_path, map_location="cpu", weights_only=True)["state_dict"]
        job.module.load_state_dict(state)
    job.module.to("cpu")
    job.network.to(memory_format=torch.contiguous_format)
    metrics = job.finish(history.rows)
    metrics["seconds"] = round(time.perf_counter() - started, 2)
    (run_dir / METRICS_FILE).write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    if history.rows:
        from covidcxr.evaluation.plots import plot_training_curves

        plot_training_curves(history.rows, run_dir / "curves.png", job.module.score_name)
    log(job.summary(metrics))
    return RunResult(run_dir, run_dir / "model", metrics, history.rows)


#: What Lightning says that a covidcxr run says better or not at all: its hardware banner ("GPU
#: available: False..."), tips and adverts, and a deprecation inside Lightning itself.
LIGHTNING_LOGGERS = ("lightning.pytorch", "lightning.fabric")
LIGHTNING_WARNINGS = (r".*LeafSpec.*", r".*module\(s\) in eval mode.*")


@contextmanager
def quiet_lightning() -> Iterator[None]:
    """Lightning's INFO chatter and its own deprecation warnings off while a run trains; the
    loggers' levels are put back afterwards. Warnings that concern the user's run stay."""
    import logging

    import lightning.pytorch  # noqa: F401  (its import sets its loggers' levels: import first)

    loggers = [logging.getLogger(name) for name in LIGHTNING_LOGGERS]
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings():
        for pattern in LIGHTNING_WARNINGS:
            warnings.filterwarnings("ignore", message=pattern)
        for logger in loggers:
            logger.setLevel(logging.WARNING)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels, strict=True):
                logger.setLevel(level)


def _is_terminal() -> bool:
    """Whether progress bars have a terminal to draw on (Lightning's bars go to stderr)."""
    import sys

    return sys.stderr is not None and sys.stderr.isatty()


@contextmanager
def _removed_if_nothing_trained(run_dir: Path, active: bool) -> Iterator[None]:
    """A failure before the first checkpoint (no data, a bad setting, unreadable weights...)
    leaves no half-written run behind: what this run wrote into ``run_dir`` goes, and so does
    ``run_dir`` itself if the run made it. Once a checkpoint exists the run is resumable and
    stays. ``active`` is False on resume and on the extra processes of a multi-device run."""
    if not active:
        yield
        return
    existed = run_dir.exists()
    before = set(run_dir.iterdir()) if existed else set()
    try:
        yield
    except BaseException:
        checkpoints = run_dir / CHECKPOINT_DIR
        if not (checkpoints.is_dir() and any(checkpoints.iterdir())):
            for entry in set(run_dir.iterdir()) - before if run_dir.is_dir() else ():
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
            if not existed and run_dir.is_dir() and not any(run_dir.iterdir()):
                run_dir.rmdir()
        raise


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


def setup_classification(
    config: TrainConfig, spec, run_dir: Path, progress_factory: ProgressFactory, log
) -> Job:
    from covidcxr.engine.data import describe_splits, prepare_data
    from covidcxr.engine.module import ClassifierModule
    from covidcxr.models import create_model

    data = prepare_data(config, spec.input_size, run_dir, progress_factory)
    log(f"Split ({data.split_file}):\n{describe_splits(data)}")
    if data.unreadable:
        log(
            f"{plural(len(data.unreadable), 'unreadable image')} left out (listed in "
            f"{METRICS_FILE})"
        )
    torch.manual_seed(config.seed)  # the new head's initial weights depend on the seed only
    weights = None if config.weights == NO_WEIGHTS else config.weights
    network = create_model(config.model, num_classes=config.num_classes, weights=weights)
    if config.fine_tune:
        tuned = network.fine_tune(config.fine_tune)
        log(f"Fine-tuning the trunk's last {config.fine_tune} parts: {', '.join(tuned)}")
    channels_last = spec.input_size >= 64  # faster convolutions and pooling on CPU
    if channels_last:
        network = network.to(memory_format=torch.channels_last)
    use_features = (
        spec.frozen_trunk and not config.fine_tune and not config.augment and config.feature_cache
    )
    loaders, features = _loaders(config, spec, network, data, use_features, progress_factory)
    module = ClassifierModule(
        network,
        learning_rate=config.learning_rate,
        mean=spec.mean,
        std=spec.std,
        inputs="features" if use_features else "images",
        class_weights=_class_weights(config, data),
        lr_schedule=config.lr_schedule,
        channels_last=channels_last,
    )

    def finish(rows: list[dict[str, float]]) -> dict[str, Any]:
        metrics = _evaluate_run(config, spec, network, data, features, rows)
        metrics["unreadable"] = [{"path": str(p), "reason": r} for p, r in data.unreadable]
        logits = metrics.pop("_logits")
        reference = _fit_reference(config, spec, network, data, features, progress_factory)
        _write_outputs(run_dir, config, spec, network, data, metrics, reference)
        _plot_calibration(run_dir, data, logits, metrics["calibration"]["temperature"])
        return metrics

    return Job(network, module, loaders, finish, lambda m: _summary(run_dir, m))


def _class_weights(config: TrainConfig, data) -> torch.Tensor | None:
    from covidcxr.engine.data import class_weights

    if config.balance != "weights":
        return None
    return class_weights(data.splits["train"].labels, len(data.class_names))


def _loaders(config, spec, network, data, use_features: bool, progress_factory: ProgressFactory):
    """Train and validation DataLoaders; with a frozen trunk and no augmentation the trunk runs
    once per image here, and training sees its cached outputs (``features``)."""
    from torch.utils.data import DataLoader

    from covidcxr.engine.data import (
        EpochShuffleSampler,
        FeatureDataset,
        TensorImageDataset,
        augmentation,
        batched,
        sample_weights,
    )
    from covidcxr.engine.inference import extract_features

    features: dict[str, torch.Tensor] = {}
    if use_features:
        for name, split in data.splits.items():
            features[name] = extract_features(
                network,
                split.images,
                spec.mean,
                spec.std,
                config.batch_size,
                progress_factory(f"Backbone features ({name})"),
            )
        train_set = FeatureDataset(features["train"], data.splits["train"].labels)
        val_set = FeatureDataset(features["val"], data.splits["val"].labels)
    else:
        transform = augmentation(config.augmentation) if config.augment else None
        train_set = TensorImageDataset(
            data.splits["train"].images, data.splits["train"].labels, transform
        )
        val_set = TensorImageDataset(data.splits["val"].images, data.splits["val"].labels)
    weights = None
    if config.balance == "sampler":
        weights = sample_weights(data.splits["train"].labels, len(data.class_names))
    sampler = EpochShuffleSampler(len(train_set), config.seed, weights)
    common = {
        "batch_size": config.batch_size,
        "num_workers": config.loader_workers,
        "persistent_workers": config.loader_workers > 0,
        "collate_fn": batched,
    }
    return (
        DataLoader(train_set, sampler=sampler, **common),
        DataLoader(val_set, shuffle=False, **common),
    ), features


def _logits(network, spec, split, cached: torch.Tensor | None) -> torch.Tensor:
    from covidcxr.engine.inference import predict_logits, run_batches

    if cached is not None:
        network.eval()
        return run_batches(network.forward_head, cached)
    return predict_logits(network, split.images, spec.mean, spec.std)


def _evaluate_run(config, spec, network, data, features, rows) -> dict[str, Any]:
    """Score the restored best weights on validation and test; the run's metrics.json.

    The temperature that calibrates the probabilities is fitted on the validation split and
    applied to every reported probability (it never changes which class wins)."""
    from covidcxr.evaluation.bootstrap import bootstrap_intervals
    from covidcxr.evaluation.calibration import calibration_summary
    from covidcxr.evaluation.metrics import classification_metrics

    names = list(data.class_names)
    logits = {
        name: _logits(network, spec, split, features.get(name))
        for name, split in data.splits.items()
        if name in ("val", "test") and len(split)
    }
    test_labels = data.splits["test"].labels
    calibration = calibration_summary(
        logits["val"],
        data.splits["val"].labels,
        logits.get("test"),
        test_labels if "test" in logits else None,
    )
    temperature = float(calibration["temperature"])
    scores: dict[str, Any] = {"val": None, "test": None}
    probabilities: dict[str, torch.Tensor] = {}
    for name, values in logits.items():
        probabilities[name] = torch.softmax(values / temperature, dim=1)
        scores[name] = classification_metrics(probabilities[name], data.splits[name].labels, names)
    intervals = None
    if "test" in probabilities:
        intervals = bootstrap_intervals(probabilities["test"].numpy(), test_labels.numpy(), names)
    best = min(rows, key=lambda r: r["val_loss"]) if rows else {}
    speeds = sorted(r["train_images_per_second"] for r in rows)
    return {
        "model": config.model,
        "lungs": config.lungs,
        "class_names": names,
        "epochs_run": len(rows),
        "best_epoch": int(best.get("epoch", 0)),
        "stopped_early": len(rows) < config.max_epochs,
        "train_accuracy": best.get("train_accuracy"),
        "val_accuracy": scores["val"]["accuracy"] if scores["val"] else None,
        "test_accuracy": scores["test"]["accuracy"] if scores["test"] else None,
        "val": scores["val"],
        "test": scores["test"],
        "test_intervals": intervals,
        "calibration": calibration,
        "split_sizes": {name: len(split) for name, split in data.splits.items()},
        "train_images_per_second": speeds[len(speeds) // 2] if speeds else None,
        "cached_features": bool(features),
        "_logits": logits,  # for the reliability figure; removed before metrics.json is written
    }


def _fit_reference(config, spec, network, data, features, progress_factory: ProgressFactory):
    """The out-of-distribution reference (:mod:`covidcxr.ood`): the restored network's trunk
    features and the images of the training split, thresholded on the validation split."""
    from covidcxr.engine.inference import extract_features
    from covidcxr.ood import fit_reference

    def split_features(name: str) -> torch.Tensor:
        if name in features:
            return features[name]
        progress = progress_factory(f"Feature reference ({name})")
        images = data.splits[name].images
        return extract_features(network, images, spec.mean, spec.std, config.batch_size, progress)

    return fit_reference(
        split_features("train").numpy(),
        split_features("val").numpy(),
        data.splits["train"].images,
        data.splits["val"].images,
    )


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


def _write_outputs(run_dir, config, spec, network, data, metrics, reference=None) -> Path:
    from covidcxr.artifact import ModelCard, save_classifier
    from covidcxr.evaluation.metrics import confusion_matrix_csv
    from covidcxr.evaluation.plots import plot_confusion_matrix
    from covidcxr.ood import OOD_FILE

    names = list(data.class_names)
    if metrics["test"] is not None:
        matrix = metrics["test"]["confusion_matrix"]
        title = f"{config.model}: test split ({metrics['test']['num_samples']} images)"
        plot_confusion_matrix(matrix, names, run_dir / "confusion_matrix.png", title)
        confusion_matrix_csv(metrics["test"], run_dir / "confusion_matrix.csv", names)
    card = ModelCard.from_spec(
        spec,
        names,
        config=config.to_dict(),
        metrics=card_metrics(metrics),
        temperature=float(metrics["calibration"]["temperature"]),
        lungs={
            "mode": config.lungs,
            "margin": config.lung_margin,
            "masks": "segmenter" if config.seg_model else "dataset",
        },
        name=run_dir.resolve().name,
        training_data=training_data_record(config, data),
        ood={} if reference is None else reference.summary(),
    )
    model_dir = save_classifier(run_dir / "model", network, card)
    if reference is not None:
        reference.save(model_dir / OOD_FILE)
    if config.lungs != "none" and config.seg_model is not None:
        _bundle_segmenter(config.seg_model, model_dir)
    return model_dir


def card_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """The part of a run's metrics a model card carries: accuracies, per-class recall and
    specificity on the test split, and their bootstrap 95 % intervals."""
    kept = {
        k: metrics.get(k) for k in ("test_accuracy", "val_accuracy", "best_epoch", "epochs_run")
    }
    test = metrics.get("test")
    if test:
        kept["test_images"] = test["num_samples"]
        kept["test_per_class"] = {
            name: {key: scores[key] for key in ("recall", "specificity", "precision")}
            for name, scores in test["per_class"].items()
        }
        kept["test_macro_f1"] = test.get("macro_f1")
    if metrics.get("test_intervals"):
        kept["test_intervals"] = metrics["test_intervals"]
    return kept


def _plot_calibration(run_dir: Path, data, logits: dict, temperature: float) -> None:
    """reliability.png: the test split's reliability before and after temperature scaling (the
    validation split's when there is no test split)."""
    from covidcxr.evaluation.calibration import plot_reliability

    name = "test" if "test" in logits else "val"
    raw = torch.softmax(logits[name], dim=1)
    scaled = torch.softmax(logits[name] / temperature, dim=1)
    title = f"Reliability on the {name} split (temperature {temperature:.2f}, fitted on val)"
    plot_reliability(
        raw.numpy(),
        scaled.numpy(),
        data.splits[name].labels.numpy(),
        run_dir / "reliability.png",
        title=title,
    )


def _bundle_segmenter(seg_model: str, model_dir: Path) -> None:
    """Copy the lung segmenter into the classifier's folder: predicting needs it."""
    import shutil

    from covidcxr.artifact import CARD_FILE, SEGMENTER_DIR, WEIGHTS_FILE, read_card

    _, folder = read_card(seg_model)
    target = model_dir / SEGMENTER_DIR
    target.mkdir(exist_ok=True)
    for name in (CARD_FILE, WEIGHTS_FILE):
        shutil.copy2(folder / name, target / name)


def _summary(run_dir: Path, metrics: dict[str, Any]) -> str:
    def percent(value: float | None) -> str:
        return "n/a" if value is None else f"{100 * value:.2f} %"

    lines = [
        f"{metrics['model']}: {metrics['epochs_run']} epochs (best {metrics['best_epoch']}), "
        f"train {percent(metrics['train_accuracy'])}, val {percent(metrics['val_accuracy'])}, "
        f"test {percent(metrics['test_accuracy'])}",
        f"Outputs in {run_dir}: metrics.json, curves.png, confusion_matrix.png, model/",
    ]
    return "\n".join(lines)
