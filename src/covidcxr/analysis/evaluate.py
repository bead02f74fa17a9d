"""``covidcxr evaluate``: score a saved model on any dataset, with the run's outputs."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

ProgressFactory = Callable[[str], Callable[[int, int], None] | None]


def evaluate(
    model: str | Path,
    data: str | Path,
    out: str | Path,
    split_file: str | Path | None = None,
    subset: str = "test",
    workers: int | None = None,
    cache_dir: str | Path | None = None,
    progress_factory: ProgressFactory = lambda _: None,
    seg_model: str | Path | None = None,
    external: Sequence[str | Path] = (),
) -> dict[str, Any]:
    """Score the model at ``model`` (a model folder or a run folder) on the dataset at ``data``:
    every image it holds, or only the ``subset`` rows of ``split_file`` (e.g. the run's
    ``splits.csv``). Writes ``metrics.json``, ``confusion_matrix.png`` / ``.csv`` and
    ``predictions.csv`` to ``out`` and returns the metrics. Unreadable images are skipped and
    listed in the metrics. A classifier trained on lungs only segments them with ``seg_model``
    or its bundled segmenter, else with the dataset's own masks.

    Each ``external`` set (a folder in any layout, or a manifest) is scored whole as well, into
    ``out/external/NAME``, and ``metrics["external"]`` compares it with the main one: per class
    sensitivity, specificity and PPV with their bootstrap intervals and how far each falls from
    the main set's, per source, and a verdict that says so when the figures collapse
    (:func:`compare_sets`)."""
    from covidcxr.analysis.metrics import classification_metrics, confusion_matrix_csv
    from covidcxr.analysis.plots import plot_confusion_matrix
    from covidcxr.data.cache import ImageCache
    from covidcxr.data.layouts import discover
    from covidcxr.data.splits import read_split_csv
    from covidcxr.inference.artifact import load_model
    from covidcxr.perf import tune_allocator

    tune_allocator()
    classifier = load_model(model)
    if classifier.card.task != "classification":
        raise ValueError(f"{model}: is a segmentation model; use `covidcxr segment evaluate`")
    names = classifier.class_names
    index = discover(data, len(names))
    if split_file is not None:
        samples, splits = read_split_csv(Path(split_file), index.root)
        samples = [s for s, split in zip(samples, splits, strict=True) if split == subset]
        if not samples:
            raise ValueError(f"{split_file}: no rows in the {subset!r} split")
    else:
        samples = list(index.samples)
    if not samples:
        raise ValueError(f"{data}: no images of the classes {', '.join(names)}")
    size = classifier.card.input_size
    if classifier.lung_mode != "none":  # the model's own preparation: the lungs it was shown
        batch = _lung_focused(classifier, samples, seg_model, workers, progress_factory)
    else:
        batch = ImageCache(Path(cache_dir) if cache_dir else None).get_many(
            [s.path for s in samples],
            (size, size),
            workers=workers,
            progress=progress_factory(f"Loading images at {size}x{size}"),
        )
    keep = np.flatnonzero(batch.ok)
    if keep.size == 0:
        raise ValueError(f"{data}: none of the {len(samples)} images could be read")
    images = torch.from_numpy(batch.array[keep]).unsqueeze(1)
    labels = torch.tensor([samples[i].label for i in keep], dtype=torch.int64)
    analysis = classifier.analyse_prepared(images, progress=progress_factory("Predicting"))
    probabilities = analysis.probabilities
    scores = classification_metrics(probabilities, labels, names)
    from covidcxr.analysis.bootstrap import bootstrap_intervals
    from covidcxr.analysis.calibration import expected_calibration_error
    from covidcxr.analysis.probes import per_source_metrics
    from covidcxr.io import unique_name

    intervals = bootstrap_intervals(probabilities, labels.numpy(), names)
    ece = expected_calibration_error(probabilities, labels.numpy())
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    metrics = {
        "model": classifier.card.model,
        "model_path": str(classifier.folder),
        "data": str(index.root),
        "subset": subset if split_file is not None else "all",
        "class_names": names,
        "test_accuracy": scores["accuracy"],
        "test": scores,
        "test_intervals": intervals,
        "test_ece": ece,
        "temperature": classifier.card.temperature,
        "unfamiliar": None if analysis.unfamiliar is None else int(analysis.unfamiliar.sum()),
        "unreadable": [{"path": str(p), "reason": r} for p, r in batch.failures],
        "per_source": per_source_metrics(
            np.asarray(probabilities), labels.numpy(), [samples[i].source for i in keep], names
        ),
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    title = f"{classifier.card.model} on {index.root.name} ({scores['num_samples']} images)"
    plot_confusion_matrix(scores["confusion_matrix"], names, out / "confusion_matrix.png", title)
    confusion_matrix_csv(scores, out / "confusion_matrix.csv", names)
    with (out / "predictions.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "predicted", *[f"p_{n}" for n in names]])
        for position, row in zip(keep, probabilities, strict=True):
            sample = samples[position]
            predicted = names[int(np.argmax(row))]
            writer.writerow([sample.path, sample.class_name, predicted, *np.round(row, 6)])
    if external:
        names_used: set[str] = set()
        metrics["external"] = []
        for folder in external:
            name = unique_name(Path(folder).expanduser().resolve().name or "external", names_used)
            scored = evaluate(
                classifier.folder,
                folder,
                out / "external" / name,
                workers=workers,
                cache_dir=cache_dir,
                progress_factory=progress_factory,
                seg_model=seg_model,
            )
            metrics["external"].append({"name": name, **compare_sets(metrics, scored)})
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    return metrics


COLLAPSE_ACCURACY_DROP = 0.10
"""An external set whose accuracy falls this far below the main set's has collapsed."""
COLLAPSE_SENSITIVITY_DROP = 0.20
"""... or where one class's sensitivity falls this far."""


def compare_sets(internal: dict[str, Any], external: dict[str, Any]) -> dict[str, Any]:
    """How an external set's figures (an :func:`evaluate` result) stand against the internal
    ones: per class sensitivity, specificity and PPV with intervals and their differences, the
    per-source table, and a one-sentence verdict (collapsed when accuracy falls by
    :data:`COLLAPSE_ACCURACY_DROP` or a class's sensitivity by
    :data:`COLLAPSE_SENSITIVITY_DROP`)."""
    per_class: dict[str, Any] = {}
    drops = []
    inside = internal["test_intervals"]["per_class"]
    for name, figures in external["test_intervals"]["per_class"].items():
        entry: dict[str, Any] = {}
        for key in ("sensitivity", "specificity", "ppv"):
            value, base = figures[key]["value"], inside.get(name, {}).get(key, {}).get("value")
            entry[key] = {**figures[key], "internal": base}
            entry[key]["difference"] = None if value is None or base is None else value - base
        per_class[name] = entry
        change = entry["sensitivity"]["difference"]
        if change is not None and change <= -COLLAPSE_SENSITIVITY_DROP:
            drops.append(f"{name} sensitivity {100 * change:+.1f} points")
    accuracy_change = external["test_accuracy"] - internal["test_accuracy"]
    if accuracy_change <= -COLLAPSE_ACCURACY_DROP:
        drops.insert(0, f"accuracy {100 * accuracy_change:+.1f} points")
    images = external["test"]["num_samples"]
    if drops:
        verdict = (
            f"On {external['data']} ({images:,} images) the model's figures collapse: "
            + ", ".join(drops)
            + " against the internal test set. Its internal figures do not describe these films."
        )
    else:
        verdict = (
            f"On {external['data']} ({images:,} images) accuracy is "
            f"{100 * external['test_accuracy']:.1f} % ({100 * accuracy_change:+.1f} points against "
            "the internal test set); no class's sensitivity falls by "
            f"{100 * COLLAPSE_SENSITIVITY_DROP:.0f} points or more."
        )
    return {
        "data": external["data"],
        "num_images": images,
        "accuracy": external["test_intervals"]["accuracy"],
        "accuracy_difference": accuracy_change,
        "per_class": per_class,
        "per_source": external["per_source"],
        "collapsed": bool(drops),
        "verdict": verdict,
    }


def _lung_focused(
    classifier: Any,
    samples: list[Any],
    seg_model: str | Path | None,
    workers: int | None,
    progress_factory: ProgressFactory,
) -> Any:
    """The samples as a classifier trained with ``--lungs crop|mask`` sees them, exactly as
    :meth:`~covidcxr.inference.artifact.Classifier.prepare` does: lungs from ``seg_model``, else the
    classifier's bundled segmenter, else the dataset's own masks."""
    from covidcxr.data.lungs import load_lung_focused

    segmenter = None
    if seg_model is not None:
        classifier.use_segmenter(seg_model)
    try:
        segmenter = classifier.segmenter
    except ValueError:  # trained on the dataset's masks and given no segmenter: use the masks
        segmenter = None
    mode = classifier.lung_mode
    return load_lung_focused(
        samples,
        mode,
        float(classifier.card.lungs.get("margin", 0.05)),
        classifier.card.input_size,
        segmenter,
        workers,
        progress_factory(f"Focusing on the lungs ({mode})"),
    )
