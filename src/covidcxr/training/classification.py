"""The classification :class:`~covidcxr.training.run.Job`: the network, loaders (with cached
trunk features for frozen backbones), and the scoring, calibration, out-of-distribution
reference, figures and saved model of a finished run."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch

from covidcxr.training.config import NO_WEIGHTS, TrainConfig
from covidcxr.training.run import (
    METRICS_FILE,
    Job,
    ProgressFactory,
    training_data_record,
)
from covidcxr.wording import plural


def setup_classification(
    config: TrainConfig, spec, run_dir: Path, progress_factory: ProgressFactory, log
) -> Job:
    from covidcxr.models import create_model
    from covidcxr.training.data import describe_splits, prepare_data
    from covidcxr.training.module import ClassifierModule

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
    from covidcxr.training.data import class_weights

    if config.balance != "weights":
        return None
    return class_weights(data.splits["train"].labels, len(data.class_names))


def _loaders(config, spec, network, data, use_features: bool, progress_factory: ProgressFactory):
    """Train and validation DataLoaders; with a frozen trunk and no augmentation the trunk runs
    once per image here, and training sees its cached outputs (``features``)."""
    from torch.utils.data import DataLoader

    from covidcxr.inference.batched import extract_features
    from covidcxr.training.data import (
        EpochShuffleSampler,
        FeatureDataset,
        TensorImageDataset,
        augmentation,
        batched,
        sample_weights,
    )

    train, val = data.splits["train"], data.splits["val"]
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
        train_set = FeatureDataset(features["train"], train.labels, train.samples)
        val_set = FeatureDataset(features["val"], val.labels, val.samples)
    else:
        transform = augmentation(config.augmentation) if config.augment else None
        train_set = TensorImageDataset(train.images, train.labels, transform, train.samples)
        val_set = TensorImageDataset(val.images, val.labels, samples=val.samples)
    weights = None
    if config.balance == "sampler":
        weights = sample_weights(train.labels, len(data.class_names))
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
    from covidcxr.inference.batched import predict_logits, run_batches

    if cached is not None:
        network.eval()
        return run_batches(network.forward_head, cached)
    return predict_logits(network, split.images, spec.mean, spec.std)


def _evaluate_run(config, spec, network, data, features, rows) -> dict[str, Any]:
    """Score the restored best weights on validation and test; the run's metrics.json.

    The temperature that calibrates the probabilities is fitted on the validation split and
    applied to every reported probability (it never changes which class wins)."""
    from covidcxr.analysis.bootstrap import bootstrap_intervals
    from covidcxr.analysis.calibration import calibration_summary
    from covidcxr.analysis.metrics import classification_metrics

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
    """The out-of-distribution reference (:mod:`covidcxr.inference.ood`): the restored network's
    trunk features and the images of the training split, thresholded on the validation split."""
    from covidcxr.inference.batched import extract_features
    from covidcxr.inference.ood import fit_reference

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


def _write_outputs(run_dir, config, spec, network, data, metrics, reference=None) -> Path:
    from covidcxr.analysis.metrics import confusion_matrix_csv
    from covidcxr.analysis.plots import plot_confusion_matrix
    from covidcxr.inference.artifact import ModelCard, save_classifier
    from covidcxr.inference.ood import OOD_FILE

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
    from covidcxr.analysis.calibration import plot_reliability

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

    from covidcxr.inference.artifact import CARD_FILE, SEGMENTER_DIR, WEIGHTS_FILE, read_card

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
