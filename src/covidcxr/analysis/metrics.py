"""Classification metrics: a pure function, an accumulator, and a CSV of the confusion matrix.

:func:`classification_metrics` turns softmax outputs and labels into one JSON-ready dict;
:class:`ClassificationMeter` collects batches and calls the same function, so training,
evaluation and reports all report identical numbers. Both are built on
``torchmetrics.functional``.

The dict (every value a plain ``int``, ``float``, ``list``, ``dict`` or ``None``)::

    {
        "accuracy": float,          # micro: correct / N
        "macro_f1": float | None,   # mean F1 over classes where F1 is defined
        "macro_auroc": float | None,  # mean one-vs-rest AUROC over classes where it is defined
        "num_samples": int,
        "per_class": {
            class_name: {
                "precision": float | None,
                "recall": float | None,       # = sensitivity
                "specificity": float | None,
                "f1": float | None,
                "auroc": float | None,        # one-vs-rest
                "support": int,               # samples whose true class this is
            },
        },
        "confusion_matrix": [[int, ...], ...],  # (C, C): rows = true class, cols = predicted
    }

Undefined values are ``None`` (JSON ``null``), never NaN, so ``json.dumps(...,
allow_nan=False)`` always works. A value is undefined when its denominator is zero:

* ``recall`` when the class is absent from the labels (support 0);
* ``precision`` when the class is never predicted;
* ``specificity`` when every sample belongs to the class;
* ``f1`` when the class is neither present nor predicted;
* ``auroc`` when the class is absent or when every sample belongs to it (one-vs-rest needs
  both positives and negatives).

torchmetrics returns 0 in these cases (and warns for AUROC); counting them as 0 would drag the
macro averages down for a reason that has nothing to do with the model, so the macro averages
are taken over the defined classes only (``None`` if there are none).
"""

from __future__ import annotations

import csv
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torchmetrics.functional.classification import (
    multiclass_accuracy,
    multiclass_auroc,
    multiclass_confusion_matrix,
    multiclass_f1_score,
    multiclass_precision,
    multiclass_recall,
    multiclass_specificity,
)

ArrayLike = torch.Tensor | np.ndarray

# The messages torchmetrics emits when one-vs-rest AUROC meets a class without positives or
# negatives; we report those classes as None instead.
_UNDEFINED_AUROC_WARNINGS = (
    r"No positive samples in targets",
    r"No negative samples in targets",
)

# Tolerance on row sums when ClassificationMeter decides whether scores are probabilities.
_ROW_SUM_TOLERANCE = 1e-3


def classification_metrics(
    probabilities: ArrayLike, labels: ArrayLike, class_names: Sequence[str]
) -> dict[str, Any]:
    """Accuracy, macro F1 / AUROC, per-class precision, recall, specificity, F1, AUROC and
    support, and the confusion matrix (see the module docstring for the dict and for when a
    value is ``None``).

    ``probabilities`` is (N, C) floats in [0, 1], normally softmax outputs (use
    :class:`ClassificationMeter` for logits); ``labels`` is (N,) integers in [0, C); C is
    ``len(class_names)``. Raises ``ValueError`` for N = 0 and for inputs of the wrong shape,
    dtype or range.
    """
    names = _check_class_names(class_names)
    probabilities, labels = _check_inputs(probabilities, labels, len(names), "probabilities")
    _check_probability_range(probabilities)
    num_classes = len(names)
    common = {"preds": probabilities, "target": labels, "num_classes": num_classes}

    accuracy = multiclass_accuracy(**common, average="micro")
    precision = multiclass_precision(**common, average=None)
    recall = multiclass_recall(**common, average=None)
    specificity = multiclass_specificity(**common, average=None)
    f1 = multiclass_f1_score(**common, average=None)
    # torchmetrics' own macro F1 already leaves out classes with tp + fp + fn = 0, which are
    # exactly the classes whose F1 we report as None.
    macro_f1 = multiclass_f1_score(**common, average="macro")
    with warnings.catch_warnings():
        for message in _UNDEFINED_AUROC_WARNINGS:
            warnings.filterwarnings("ignore", message=message, category=UserWarning)
        auroc = multiclass_auroc(**common, average=None)
    confusion = multiclass_confusion_matrix(**common).long()

    support = confusion.sum(dim=1)
    predicted = confusion.sum(dim=0)
    true_positives = confusion.diagonal()
    num_samples = int(labels.numel())
    defined = {
        "precision": predicted > 0,
        "recall": support > 0,
        "specificity": support < num_samples,
        "f1": (support + predicted - true_positives) > 0,
        "auroc": (support > 0) & (support < num_samples),
    }
    values = {
        "precision": precision,
        "recall": recall,
        "specificity": specificity,
        "f1": f1,
        "auroc": auroc,
    }
    per_class = {
        name: {
            **{key: float(values[key][index]) if defined[key][index] else None for key in values},
            "support": int(support[index]),
        }
        for index, name in enumerate(names)
    }
    defined_auroc = auroc[defined["auroc"]]
    return {
        "accuracy": float(accuracy),
        "macro_f1": float(macro_f1) if bool(defined["f1"].any()) else None,
        "macro_auroc": float(defined_auroc.mean()) if defined_auroc.numel() else None,
        "num_samples": num_samples,
        "per_class": per_class,
        "confusion_matrix": confusion.tolist(),
    }


class ClassificationMeter:
    """Collects (scores, labels) batches and computes :func:`classification_metrics` on all of
    them at once (AUROC needs every score, so nothing is averaged per batch).

    ``inputs`` says what :meth:`update` receives: ``"probabilities"`` (used as they are),
    ``"logits"`` (softmax over classes is applied) or ``"auto"`` (default): a batch whose values
    all lie in [0, 1] and whose rows each sum to 1 (within 1e-3) is taken as probabilities,
    any other batch as logits. Pass the explicit value when you know it.

    Batches are detached and kept on the CPU, so the meter can be fed from any device.
    """

    def __init__(
        self,
        class_names: Sequence[str],
        inputs: Literal["auto", "logits", "probabilities"] = "auto",
    ) -> None:
        if inputs not in ("auto", "logits", "probabilities"):
            raise ValueError(
                f"inputs should be 'auto', 'logits' or 'probabilities', got {inputs!r}"
            )
        self.class_names = _check_class_names(class_names)
        self.inputs = inputs
        self._probabilities: list[torch.Tensor] = []
        self._labels: list[torch.Tensor] = []

    @property
    def num_samples(self) -> int:
        """How many samples have been collected since the last :meth:`reset`."""
        return sum(int(batch.numel()) for batch in self._labels)

    def update(self, scores: ArrayLike, labels: ArrayLike) -> None:
        """Add a batch: ``scores`` (B, C) logits or probabilities, ``labels`` (B,) integers."""
        scores, labels = _check_inputs(scores, labels, len(self.class_names), "scores")
        if self.inputs == "logits" or (
            self.inputs == "auto" and not _looks_like_probabilities(scores)
        ):
            scores = torch.softmax(scores, dim=1)
        else:
            _check_probability_range(scores)
        self._probabilities.append(scores)
        self._labels.append(labels)

    def compute(self) -> dict[str, Any]:
        """The :func:`classification_metrics` dict over every batch since the last reset."""
        if not self._labels:
            raise ValueError(
                "ClassificationMeter.compute() was called before any update(); "
                "feed it at least one batch of scores and labels"
            )
        return classification_metrics(
            torch.cat(self._probabilities), torch.cat(self._labels), self.class_names
        )

    def reset(self) -> None:
        """Forget every batch (call at the start of each epoch)."""
        self._probabilities.clear()
        self._labels.clear()


def row_normalised(matrix: ArrayLike | Sequence[Sequence[int]]) -> np.ndarray:
    """Divide each row of a (C, C) confusion matrix by its sum: entry [i, j] is the fraction of
    true class i predicted as j, so the diagonal is per-class recall. Rows with no samples are
    NaN."""
    counts = np.asarray(matrix, dtype=float)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1]:
        raise ValueError(f"a confusion matrix should be square (C, C), got shape {counts.shape}")
    totals = counts.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, counts / totals, np.nan)


def confusion_matrix_csv(
    metrics: Mapping[str, Any], path: Path, class_names: Sequence[str]
) -> Path:
    """Write the confusion matrix of a :func:`classification_metrics` dict as one CSV table.

    One row per true class. Columns: ``true \\ predicted``, the counts predicted as each class
    (one column per class name), ``support`` (row total), then ``<class> (row %)`` per class:
    the row-normalised matrix in percent with 2 decimals, whose diagonal is the recall. A class
    without samples has empty row-% cells. One rectangular table rather than two blocks or two
    files, so spreadsheets and ``csv.DictReader`` read it directly.
    """
    names = _check_class_names(class_names)
    if "confusion_matrix" not in metrics:
        raise ValueError(
            "metrics has no 'confusion_matrix' entry; pass the dict returned by "
            "classification_metrics or ClassificationMeter.compute"
        )
    counts = np.asarray(metrics["confusion_matrix"], dtype=np.int64)
    if counts.shape != (len(names), len(names)):
        raise ValueError(
            f"confusion matrix should be ({len(names)}, {len(names)}) for class_names "
            f"{list(names)}, got shape {counts.shape}"
        )
    fractions = row_normalised(counts)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(
            ["true \\ predicted", *names, "support", *(f"{name} (row %)" for name in names)]
        )
        for index, name in enumerate(names):
            percents = [
                "" if np.isnan(value) else f"{100 * value:.2f}" for value in fractions[index]
            ]
            writer.writerow([name, *counts[index].tolist(), int(counts[index].sum()), *percents])
    return path


def _check_class_names(class_names: Sequence[str]) -> tuple[str, ...]:
    if isinstance(class_names, str):
        raise ValueError(
            f"class_names should be a sequence of names such as ('Normal', 'COVID'), "
            f"got the single string {class_names!r}"
        )
    names = tuple(class_names)
    if len(names) < 2:
        raise ValueError(f"class_names should hold at least 2 classes, got {list(names)}")
    if len(set(names)) != len(names):
        raise ValueError(f"class_names should be unique, got {list(names)}")
    return names


def _check_inputs(
    scores: ArrayLike, labels: ArrayLike, num_classes: int, scores_name: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate shapes and dtypes; return float32 (N, C) scores and int64 (N,) labels on the
    CPU."""
    scores = torch.as_tensor(scores).detach().cpu()
    labels = torch.as_tensor(labels).detach().cpu()
    if scores.ndim != 2 or scores.shape[1] != num_classes:
        raise ValueError(
            f"{scores_name} should have shape (N, C) = (N, {num_classes}) for {num_classes} "
            f"classes, got {tuple(scores.shape)}"
        )
    if not scores.is_floating_point():
        raise ValueError(f"{scores_name} should be floating point, got dtype {scores.dtype}")
    if labels.ndim != 1:
        raise ValueError(
            f"labels should have shape (N,) (one integer class per sample), "
            f"got {tuple(labels.shape)}"
        )
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"labels should be integers, got dtype {labels.dtype}")
    if labels.shape[0] != scores.shape[0]:
        raise ValueError(
            f"{scores_name} and labels should have the same number of samples, got "
            f"{scores.shape[0]} {scores_name} {tuple(scores.shape)} and {labels.shape[0]} labels"
        )
    if labels.numel() == 0:
        raise ValueError("no samples (N = 0): metrics need at least one prediction")
    if bool((labels < 0).any()) or bool((labels >= num_classes).any()):
        raise ValueError(
            f"labels should lie in [0, {num_classes - 1}] for {num_classes} classes, got "
            f"values from {int(labels.min())} to {int(labels.max())}"
        )
    if not bool(torch.isfinite(scores).all()):
        raise ValueError(f"{scores_name} contain NaN or infinite values; check the model's outputs")
    return scores.float(), labels.long()


def _check_probability_range(probabilities: torch.Tensor) -> None:
    low, high = float(probabilities.min()), float(probabilities.max())
    if low < 0 or high > 1:
        raise ValueError(
            f"probabilities should lie in [0, 1] (softmax outputs), got values from {low:.4g} "
            f"to {high:.4g}; apply torch.softmax(logits, dim=1) first, or use "
            "ClassificationMeter, which accepts logits"
        )


def _looks_like_probabilities(scores: torch.Tensor) -> bool:
    in_range = bool((scores >= 0).all()) and bool((scores <= 1).all())
    row_sums = scores.sum(dim=1)
    return in_range and bool(((row_sums - 1).abs() <= _ROW_SUM_TOLERANCE).all())
