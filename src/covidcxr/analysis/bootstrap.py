"""Percentile-bootstrap confidence intervals for accuracy and per-class sensitivity,
specificity and PPV.

:func:`bootstrap_intervals` returns one JSON-safe dict (plain ``int``, ``float``, ``dict`` or
``None``)::

    {
        "resamples": int,
        "level": float,                       # e.g. 0.95
        "accuracy": {"value": float, "low": float, "high": float},
        "per_class": {
            class_name: {
                "sensitivity": {"value": float | None, "low": float | None, "high": float | None},
                "specificity": {...},
                "ppv": {...},
            },
        },
    }

``value`` is computed on all the images (it equals :func:`~covidcxr.analysis.metrics.
classification_metrics`' recall, specificity and precision), not the mean over resamples.
``low`` and ``high`` are the (1 - level) / 2 and (1 + level) / 2 quantiles over resamples
(numpy's default linear interpolation).

A value is ``None`` when its denominator is zero: sensitivity of a class absent from the
labels, specificity when every image belongs to the class, PPV of a class that is never
predicted. A resample can leave a denominator empty even when the full data does not (the one
COVID image may not be drawn); such a resample is left out of that metric's interval, which is
then conditional on the metric being defined. The interval is ``None`` when fewer than half of
the resamples define the metric. Since any single image lands in a resample with probability
1 - (1 - 1/N)^N >= 1 - 1/e ~ 0.63, in practice that only happens when the value itself is
``None``; the threshold guards against a handful of resamples passing for an interval.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Integral, Real
from typing import Any

import numpy as np

from covidcxr.analysis.metrics import (
    ArrayLike,
    _check_class_names,
    _check_inputs,
    _check_probability_range,
)

# An interval needs its metric defined in at least this fraction of the resamples.
MIN_DEFINED_FRACTION = 0.5

_CLASS_METRICS = ("sensitivity", "specificity", "ppv")


def bootstrap_intervals(
    probabilities: ArrayLike,
    labels: ArrayLike,
    class_names: Sequence[str],
    resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """Point values and percentile-bootstrap intervals of accuracy and per-class sensitivity,
    specificity and PPV (see the module docstring for the dict and for ``None``).

    ``probabilities`` is (N, C) in [0, 1] (softmax outputs; the prediction is the arg-max),
    ``labels`` (N,) integers in [0, C), C = ``len(class_names)``. Each resample draws N images
    with replacement; the result is the same for the same inputs and ``seed``.

    Every reported metric is a function of the confusion matrix, and drawing N images uniformly
    with replacement gives a confusion matrix distributed exactly as Multinomial(N, observed
    cell fractions): each draw lands in cell (true, predicted) with probability count / N,
    independently. So the resampled matrices are drawn directly, all at once, with numpy's
    multinomial sampler: (resamples, C * C) numbers instead of resamples * N image indices,
    which makes 1000 resamples of any N a matter of milliseconds and of no memory.
    """
    names = _check_class_names(class_names)
    probabilities, labels = _check_inputs(probabilities, labels, len(names), "probabilities")
    _check_probability_range(probabilities)
    if isinstance(resamples, bool) or not isinstance(resamples, Integral) or resamples < 1:
        raise ValueError(f"resamples should be a positive integer, got {resamples!r}")
    if (
        isinstance(level, bool)
        or not isinstance(level, Real)
        or not math.isfinite(level)
        or not 0 < level < 1
    ):
        raise ValueError(f"level should be a fraction strictly between 0 and 1, got {level!r}")
    if isinstance(seed, bool) or not isinstance(seed, Integral):
        raise ValueError(f"seed should be an integer, got {seed!r}")

    num_classes = len(names)
    num_samples = int(labels.numel())
    predictions = probabilities.argmax(dim=1).numpy()
    cells = labels.numpy() * num_classes + predictions
    confusion = np.bincount(cells, minlength=num_classes**2)

    generator = np.random.default_rng(seed)
    resampled = generator.multinomial(num_samples, confusion / num_samples, size=int(resamples))
    observed_rates = _rates(confusion.reshape(1, num_classes, num_classes))
    resampled_rates = _rates(resampled.reshape(-1, num_classes, num_classes))

    quantiles = ((1 - level) / 2, (1 + level) / 2)

    def interval(key: str, class_index: int | None = None) -> dict[str, float | None]:
        value = observed_rates[key][0]
        samples = resampled_rates[key]
        if class_index is not None:
            value, samples = value[class_index], samples[:, class_index]
        samples = samples[np.isfinite(samples)]
        low = high = None
        if samples.size >= MIN_DEFINED_FRACTION * resamples:
            low, high = (float(bound) for bound in np.quantile(samples, quantiles))
        return {"value": float(value) if np.isfinite(value) else None, "low": low, "high": high}

    return {
        "resamples": int(resamples),
        "level": float(level),
        "accuracy": interval("accuracy"),
        "per_class": {
            name: {key: interval(key, index) for key in _CLASS_METRICS}
            for index, name in enumerate(names)
        },
    }


def _rates(confusion: np.ndarray) -> dict[str, np.ndarray]:
    """Accuracy (R,) and per-class sensitivity, specificity and PPV (R, C) of (R, C, C)
    confusion matrices (rows true, columns predicted); NaN where the denominator is zero."""
    confusion = confusion.astype(np.float64)
    total = confusion.sum(axis=(1, 2))
    true_positives = np.diagonal(confusion, axis1=1, axis2=2)
    support = confusion.sum(axis=2)
    predicted = confusion.sum(axis=1)
    negatives = total[:, None] - support
    true_negatives = negatives - predicted + true_positives
    with np.errstate(invalid="ignore", divide="ignore"):
        return {
            "accuracy": true_positives.sum(axis=1) / total,
            "sensitivity": np.where(support > 0, true_positives / support, np.nan),
            "specificity": np.where(negatives > 0, true_negatives / negatives, np.nan),
            "ppv": np.where(predicted > 0, true_positives / predicted, np.nan),
        }
