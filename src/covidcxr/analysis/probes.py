"""Shortcut probes: how much of a classifier's accuracy comes from the lungs.

Chest X-ray COVID classifiers are known to score well by reading where an image came from (the
hospital, adult vs child, text markers, borders) instead of the lungs: in the COVID-19
Radiography Database most Normal images come from RSNA, the Viral Pneumonia images are
paediatric, COVID comes from other hospitals, and some pictures are stored twice. Three probes
show how much of a model's accuracy is real:

* :func:`per_source_metrics`: accuracy and recall per image source, and the classes whose
  images all come from one source (a model can learn the source instead of the disease);
* :func:`lung_probe`: the classifier on images whose lungs are blacked out
  (``"lungs_removed"``) or whose surroundings are blacked out (``"lungs_only"``);
* :func:`duplicate_leakage`: near-duplicate images placed in more than one split.

Each returns a JSON-safe dict (plain ``int``, ``float``, ``str``, ``bool``, ``list``, ``dict``
or ``None``) whose ``"finding"`` is one plain-language sentence for the report.

**The lungs-removed flag.** With the lungs blacked out, :func:`lung_probe` sets ``flag`` when

* accuracy >= majority rate + :data:`FLAG_MIN_MARGIN` (0.15), and
* the one-sided binomial p-value of the number of correct images, against "each image is right
  with probability = majority rate", is below :data:`FLAG_MAX_P_VALUE` (0.01).

The majority rate (the share of the commonest class among ``labels``) is the accuracy of a model
that looks at nothing and always answers the commonest class, so it is the honest chance level
for accuracy on an imbalanced test set; 1/C is reported beside it. The p-value keeps a handful
of lucky images from raising the flag. The margin is there because a lung mask does not hold all
of the disease signal (it cuts off the heart border and the costophrenic angles, where effusions
and cardiomegaly show), so a small excess over chance is expected from a model that reads the
chest honestly; 15 points above the majority rate is more than such leftovers explain.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from covidcxr.data.sample import Sample

FLAG_MIN_MARGIN = 0.15
"""Accuracy above the majority rate, with the lungs removed, from which a model is flagged."""
FLAG_MAX_P_VALUE = 0.01
"""One-sided binomial p-value (accuracy vs the majority rate) below which a model is flagged."""
FLAG_RULE = (
    f"lungs_removed is flagged when accuracy >= majority rate + {FLAG_MIN_MARGIN:.2f} and the "
    f"one-sided binomial p-value against the majority rate is < {FLAG_MAX_P_VALUE}"
)
MAX_EXAMPLES = 10
"""Straddling duplicate groups listed by :func:`duplicate_leakage` (all are counted)."""
UNKNOWN_SOURCE = "unknown"
"""The name under which images without a source are reported."""

LungProbeMode = Literal["lungs_removed", "lungs_only"]
_MODES: tuple[str, ...] = ("lungs_removed", "lungs_only")


class ProbabilisticClassifier(Protocol):
    """What :func:`lung_probe` needs of a model (:class:`covidcxr.inference.artifact.Classifier` is
    one): class names and ``predict_proba(images) -> (N, C)`` for float (H, W) images in [0, 1]."""

    @property
    def class_names(self) -> list[str]: ...

    def predict_proba(self, inputs: Sequence[np.ndarray]) -> np.ndarray: ...


# --------------------------------------------------------------------------------------------
# Per source


def per_source_metrics(
    probabilities: np.ndarray,
    labels: Sequence[int] | np.ndarray,
    sources: Sequence[str | None],
    class_names: Sequence[str],
) -> dict[str, Any]:
    """Accuracy and per-class recall for each image source, and the single-source classes.

    ``probabilities`` is (N, C) (probabilities or any scores; the predicted class is the
    arg-max), ``labels`` (N,) integers in [0, C), ``sources`` (N,) source names (``None`` is
    reported as ``"unknown"``), C = ``len(class_names)``. Returns::

        {
            "num_images": int,
            "num_sources": int,                   # known sources ("unknown" not counted)
            "sources": {                          # largest source first
                source: {
                    "num_images": int,
                    "class_counts": {class_name: int},
                    "accuracy": float,
                    "recall": {class_name: float | None},   # None: no image of that class
                },
            },
            "dominant_source": {class_name: {"source": str, "share": float} | None},
            "single_source_classes": [
                {"class_name": str, "source": str, "num_images": int,
                 "source_purity": float,          # share of that source's images in the class
                 "warning": "all <class> images come from <source>: a model can learn the
                             source instead of the disease"},
            ],                                    # purest first
            "finding": str,
        }

    A class is single-source when all its images come from one known source while the data
    holds at least two known sources; images of unknown source never make a class
    single-source (nothing says they share one). ``source_purity`` 1.0 means the source holds
    that class only, so the source alone gives the class away.
    """
    names = _check_class_names(class_names)
    predictions, label_array = _predictions_and_labels(probabilities, labels, len(names))
    if len(sources) != label_array.size:
        raise ValueError(
            f"sources should have one entry per image ({label_array.size}), got {len(sources)}"
        )
    source_names = [UNKNOWN_SOURCE if source is None else str(source) for source in sources]
    by_source: dict[str, list[int]] = {}
    for index, source in enumerate(source_names):
        by_source.setdefault(source, []).append(index)
    ordered = sorted(by_source, key=lambda source: (-len(by_source[source]), source))

    per_source: dict[str, Any] = {}
    for source in ordered:
        members = np.asarray(by_source[source])
        source_labels, source_predictions = label_array[members], predictions[members]
        counts = np.bincount(source_labels, minlength=len(names))
        correct = source_predictions == source_labels
        per_source[source] = {
            "num_images": int(members.size),
            "class_counts": {name: int(counts[c]) for c, name in enumerate(names)},
            "accuracy": float(correct.mean()),
            "recall": {
                name: float(correct[source_labels == c].mean()) if counts[c] else None
                for c, name in enumerate(names)
            },
        }

    known = [source for source in ordered if source != UNKNOWN_SOURCE]
    dominant: dict[str, Any] = {}
    single: list[dict[str, Any]] = []
    for name in names:
        class_sources = {
            source: entry["class_counts"][name]
            for source, entry in per_source.items()
            if entry["class_counts"][name]
        }
        total = sum(class_sources.values())
        if not total:
            dominant[name] = None
            continue
        top, top_count = min(class_sources.items(), key=lambda item: (-item[1], item[0]))
        dominant[name] = {"source": top, "share": top_count / total}
        if top_count == total and top != UNKNOWN_SOURCE and len(known) >= 2:
            single.append(
                {
                    "class_name": name,
                    "source": top,
                    "num_images": total,
                    "source_purity": total / per_source[top]["num_images"],
                    "warning": (
                        f"all {name} images come from {top}: a model can learn the source "
                        "instead of the disease"
                    ),
                }
            )
    single.sort(key=lambda entry: -entry["source_purity"])  # stable: class order on ties

    return {
        "num_images": int(label_array.size),
        "num_sources": len(known),
        "sources": per_source,
        "dominant_source": dominant,
        "single_source_classes": single,
        "finding": _source_finding(per_source, known, single, int(label_array.size)),
    }


def _source_finding(
    per_source: dict[str, Any], known: list[str], single: list[dict[str, Any]], total: int
) -> str:
    if single:
        sentence = single[0]["warning"]
        if len(single) > 1:
            others = ", ".join(f"{e['class_name']} from {e['source']}" for e in single[1:])
            sentence += f" (also from a single source: {others})"
        return sentence[0].upper() + sentence[1:] + "."
    if not known:
        return (
            f"None of the {total} images has a known source, so accuracy cannot be compared "
            "across sources."
        )
    if len(per_source) == 1:
        return (
            f"All {total} images come from one source ({known[0]}), so per-source results "
            "cannot reveal a source shortcut."
        )
    accuracies = {source: entry["accuracy"] for source, entry in per_source.items()}
    low = min(accuracies, key=lambda source: (accuracies[source], source))
    high = max(accuracies, key=lambda source: (accuracies[source], source))
    return (
        f"Accuracy ranges from {_percent(accuracies[low])} ({low}, "
        f"{per_source[low]['num_images']} images) to {_percent(accuracies[high])} ({high}, "
        f"{per_source[high]['num_images']} images) across {len(per_source)} sources, and no "
        "class comes from a single source."
    )


# --------------------------------------------------------------------------------------------
# Lungs removed / lungs only


def lung_probe(
    classifier: ProbabilisticClassifier,
    images: Sequence[np.ndarray],
    lung_masks: Sequence[np.ndarray],
    labels: Sequence[int] | np.ndarray,
    mode: LungProbeMode,
    compare_intact: bool = True,
) -> dict[str, Any]:
    """Score ``classifier`` on images with the lungs blacked out, or with only the lungs left.

    ``images`` are float (H, W) in [0, 1], each of its own size; ``lung_masks`` (H', W') True
    inside the lungs, any size (resized to their image with
    :func:`covidcxr.data.transforms.resize_mask`; integer masks count non-zero as lung, float
    masks >= 0.5); ``labels`` (N,) integers in [0, C) for the classifier's C classes.
    ``mode`` is ``"lungs_removed"`` (every lung pixel set to 0: if accuracy stays far above
    chance, the model reads the image outside the lungs) or ``"lungs_only"`` (every pixel
    outside the lungs set to 0). Images whose mask holds no lung pixel are left out and counted
    (``skipped_empty_masks``): nothing could be removed from them. The probed images go through
    ``classifier.predict_proba`` unchanged, so a classifier that applies its own lung focus
    does so on the probed image. With ``compare_intact`` the unmodified images are scored too.

    Returns::

        {
            "mode": str, "num_images": int, "skipped_empty_masks": int,
            "accuracy": float, "intact_accuracy": float | None,
            "chance": {"majority_rate": float, "majority_class": str, "uniform": float},
            "margin_over_majority": float,     # accuracy - majority rate
            "p_value": float,                  # one-sided binomial, accuracy vs majority rate
            "flag": bool | None,               # lungs_removed only (see the module docstring)
            "flag_rule": str,
            "predicted_counts": {class_name: int},
            "recall": {class_name: float | None},
            "finding": str,
        }
    """
    from scipy.stats import binomtest

    from covidcxr.data.transforms import resize_mask

    if mode not in _MODES:
        raise ValueError(f"mode should be one of {', '.join(_MODES)}, got {mode!r}")
    names = _check_class_names(classifier.class_names)
    if len(images) != len(lung_masks):
        raise ValueError(
            f"images and lung_masks should have one entry per image, got {len(images)} images "
            f"and {len(lung_masks)} masks"
        )
    label_array = _check_labels(labels, len(names))
    if label_array.size != len(images):
        raise ValueError(
            f"labels should have one entry per image ({len(images)}), got {label_array.size}"
        )

    originals, probed, kept = [], [], []
    for index, (image, mask) in enumerate(zip(images, lung_masks, strict=True)):
        image = np.asarray(image)
        if image.ndim != 2 or image.size == 0:
            raise ValueError(
                f"image {index} should be a grey array (H, W) in [0, 1], got shape {image.shape}; "
                "read images with covidcxr.io.read_image"
            )
        lungs = resize_mask(_as_bool_mask(mask, index), image.shape)
        if not lungs.any():
            continue
        keep = ~lungs if mode == "lungs_removed" else lungs
        probed.append(np.where(keep, image, 0).astype(image.dtype, copy=False))
        originals.append(image)
        kept.append(index)
    if not kept:
        raise ValueError(
            f"every one of the {len(images)} lung masks is empty; nothing to probe (check that "
            "the masks match the images and that True / non-zero marks the lungs)"
        )
    label_array = label_array[kept]
    count = label_array.size

    predictions = _predict(classifier, probed, len(names))
    correct = predictions == label_array
    accuracy = float(correct.mean())
    intact_accuracy = (
        float((_predict(classifier, originals, len(names)) == label_array).mean())
        if compare_intact
        else None
    )
    class_counts = np.bincount(label_array, minlength=len(names))
    majority = int(np.argmax(class_counts))
    majority_rate = float(class_counts[majority] / count)
    p_value = float(
        binomtest(int(correct.sum()), count, majority_rate, alternative="greater").pvalue
    )
    margin = accuracy - majority_rate
    flag = (
        bool(margin >= FLAG_MIN_MARGIN and p_value < FLAG_MAX_P_VALUE)
        if mode == "lungs_removed"
        else None
    )
    predicted_counts = np.bincount(predictions, minlength=len(names))
    return {
        "mode": mode,
        "num_images": int(count),
        "skipped_empty_masks": len(images) - count,
        "accuracy": accuracy,
        "intact_accuracy": intact_accuracy,
        "chance": {
            "majority_rate": majority_rate,
            "majority_class": names[majority],
            "uniform": 1 / len(names),
        },
        "margin_over_majority": margin,
        "p_value": p_value,
        "flag": flag,
        "flag_rule": FLAG_RULE,
        "predicted_counts": {name: int(predicted_counts[c]) for c, name in enumerate(names)},
        "recall": {
            name: float(correct[label_array == c].mean()) if class_counts[c] else None
            for c, name in enumerate(names)
        },
        "finding": _lung_finding(mode, accuracy, intact_accuracy, majority_rate, flag),
    }


def _lung_finding(
    mode: str, accuracy: float, intact: float | None, majority_rate: float, flag: bool | None
) -> str:
    chance = _percent(majority_rate)
    if mode == "lungs_removed":
        if flag:
            return (
                f"With the lungs blacked out the model still scores {_percent(accuracy)} "
                f"(chance {chance}): it reads the image outside the lungs."
            )
        return (
            f"With the lungs blacked out the model scores {_percent(accuracy)} (chance "
            f"{chance}), not clearly above chance: the image outside the lungs alone does not "
            "let it classify (whether it needs that image as well is the lungs-only probe's "
            "question)."
        )
    whole = f", whole images {_percent(intact)}" if intact is not None else ""
    if intact is not None and intact > majority_rate:
        left = max(0.0, min(1.0, (accuracy - majority_rate) / (intact - majority_rate)))
        return (
            f"With only the lungs visible the model scores {_percent(accuracy)} (chance "
            f"{chance}{whole}): {_percent(left)} of its accuracy above chance is left."
        )
    return (
        f"With only the lungs visible the model scores {_percent(accuracy)} (chance "
        f"{chance}{whole})."
    )


def _as_bool_mask(mask: np.ndarray, index: int) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim != 2 or mask.size == 0:
        raise ValueError(
            f"lung mask {index} should be a 2-D array (H, W), got shape {mask.shape}; read masks "
            "with covidcxr.io.read_mask"
        )
    if mask.dtype == bool:
        return mask
    if np.issubdtype(mask.dtype, np.integer):
        return mask != 0
    if np.issubdtype(mask.dtype, np.floating):
        return mask >= 0.5
    raise ValueError(f"lung mask {index} should be bool, integer or float, got {mask.dtype}")


def _predict(
    classifier: ProbabilisticClassifier, images: list[np.ndarray], num_classes: int
) -> np.ndarray:
    probabilities = np.asarray(classifier.predict_proba(images))
    if probabilities.shape != (len(images), num_classes):
        raise ValueError(
            f"classifier.predict_proba should return (N, C) = ({len(images)}, {num_classes}), "
            f"got shape {probabilities.shape}"
        )
    return np.argmax(probabilities, axis=1)


# --------------------------------------------------------------------------------------------
# Near-duplicates across splits


def duplicate_leakage(
    samples: Sequence[Sample],
    splits: Sequence[str],
    workers: int | None = None,
    root: str | Path | None = None,
) -> dict[str, Any]:
    """Near-duplicate groups whose images sit in two or more splits.

    ``samples`` and ``splits`` have one entry per image (as :func:`covidcxr.data.splits
    .read_split_csv` returns them). Every image is decoded once (``workers`` processes; 0 or 1:
    in this process) and grouped by perceptual hash confirmed by detail signature, exactly as
    :func:`covidcxr.data.splits.split_dataset` groups them, so a split covidcxr made has none.
    Unreadable images are skipped and listed. Paths are reported relative to ``root``
    (default: the folder common to all images). Returns::

        {
            "num_images": int, "num_checked": int,
            "duplicate_groups": int,          # groups of 2+ near-identical images
            "straddling_groups": int,         # of those, groups in two or more splits
            "images_involved": int,           # images in the straddling groups
            "examples": [{"splits": [str], "images": [{"path": str, "split": str}]}],
            "unreadable": [{"path": str, "reason": str}],
            "finding": str,
        }

    ``examples`` holds the first :data:`MAX_EXAMPLES` straddling groups, largest first.
    """
    from covidcxr.data.duplicates import duplicate_groups, group_near_duplicates
    from covidcxr.data.scan import scan_images

    if len(samples) != len(splits):
        raise ValueError(
            f"samples and splits should have one entry per image, got {len(samples)} samples "
            f"and {len(splits)} splits"
        )
    if not samples:
        raise ValueError("no samples: duplicate_leakage needs at least one image")
    split_names = [str(split) for split in splits]
    base = (
        Path(root)
        if root is not None
        else Path(os.path.commonpath([str(Path(s.path).parent) for s in samples]))
    )

    # Masks play no part in duplicate detection; leaving them out spares decoding them.
    scan = scan_images([replace(s, mask_path=None) for s in samples], workers=workers)
    readable = np.flatnonzero(scan.ok)
    groups: list[list[int]] = []
    if readable.size:
        ids = group_near_duplicates(
            scan.hashes[readable],
            signatures=scan.signatures[readable],
            twins=scan.twins[readable],
            blocks=np.array([samples[i].label for i in readable]),
        )
        groups = [readable[members].tolist() for members in duplicate_groups(ids)]
    straddling = [g for g in groups if len({split_names[i] for i in g}) > 1]
    involved = sum(len(g) for g in straddling)
    examples = [
        {
            "splits": sorted({split_names[i] for i in group}),
            "images": [
                {"path": _relative(samples[i].path, base), "split": split_names[i]} for i in group
            ],
        }
        for group in straddling[:MAX_EXAMPLES]
    ]
    unreadable = [
        {"path": _relative(path, base), "reason": reason} for path, reason in scan.failures
    ]
    return {
        "num_images": len(samples),
        "num_checked": int(readable.size),
        "duplicate_groups": len(groups),
        "straddling_groups": len(straddling),
        "images_involved": involved,
        "examples": examples,
        "unreadable": unreadable,
        "finding": _duplicate_finding(len(straddling), involved, int(readable.size), unreadable),
    }


def _duplicate_finding(
    straddling: int, involved: int, checked: int, unreadable: list[dict[str, str]]
) -> str:
    total = checked + len(unreadable)
    scope = (
        f"{checked} of {total} images checked, the rest unreadable"
        if unreadable
        else (f"{checked} images checked")
    )
    if not straddling:
        return f"0 near-duplicate groups straddle the splits ({scope})."
    groups = "group" if straddling == 1 else "groups"
    verb = "straddles" if straddling == 1 else "straddle"
    return (
        f"{straddling} near-duplicate {groups} ({involved} images) {verb} the splits ({scope}): "
        "the same picture is both trained on and tested on, which inflates test accuracy."
    )


def _relative(path: str | Path, base: Path) -> str:
    path = Path(path)
    try:
        return path.relative_to(base).as_posix()
    except ValueError:
        return str(path)


# --------------------------------------------------------------------------------------------
# Shared checks


def _percent(fraction: float) -> str:
    return f"{100 * fraction:.0f} %"


def _check_class_names(class_names: Sequence[str]) -> tuple[str, ...]:
    if isinstance(class_names, str):
        raise ValueError(
            f"class_names should be a sequence of names such as ('Normal', 'COVID'), got the "
            f"single string {class_names!r}"
        )
    names = tuple(str(name) for name in class_names)
    if len(names) < 2 or len(set(names)) != len(names):
        raise ValueError(f"class_names should be 2 or more unique names, got {list(names)}")
    return names


def _check_labels(labels: Sequence[int] | np.ndarray, num_classes: int) -> np.ndarray:
    array = np.asarray(labels)
    if array.ndim != 1 or not (array.size == 0 or np.issubdtype(array.dtype, np.integer)):
        raise ValueError(
            f"labels should be a 1-D array of integers (N,), got shape {array.shape}, "
            f"dtype {array.dtype}"
        )
    if array.size == 0:
        raise ValueError("no images (N = 0): a probe needs at least one labelled image")
    if array.min() < 0 or array.max() >= num_classes:
        raise ValueError(
            f"labels should lie in [0, {num_classes - 1}] for {num_classes} classes, got values "
            f"from {array.min()} to {array.max()}"
        )
    return array.astype(np.int64)


def _predictions_and_labels(
    probabilities: np.ndarray, labels: Sequence[int] | np.ndarray, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(probabilities, dtype=float)
    if scores.ndim != 2 or scores.shape[1] != num_classes:
        raise ValueError(
            f"probabilities should have shape (N, C) = (N, {num_classes}), got {scores.shape}"
        )
    if not np.isfinite(scores).all():
        raise ValueError("probabilities contain NaN or infinite values; check the model's outputs")
    label_array = _check_labels(labels, num_classes)
    if label_array.size != scores.shape[0]:
        raise ValueError(
            f"probabilities and labels should have the same number of images, got "
            f"{scores.shape[0]} and {label_array.size}"
        )
    return np.argmax(scores, axis=1), label_array
