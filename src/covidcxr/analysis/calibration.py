"""Confidence calibration: temperature scaling (Guo et al., 2017), calibration error, and the
reliability diagram.

Temperature scaling divides every logit by one scalar T > 0 fitted on the validation split:
T > 1 softens over-confident outputs, T < 1 sharpens under-confident ones. The arg-max, and
so accuracy and the confusion matrix, never change; only the probabilities do.

:func:`calibration_summary` returns what a training run stores in ``metrics.json``::

    {
        "temperature": float,
        "val":  {"ece_before": float, "ece_after": float,
                 "nll_before": float, "nll_after": float},
        "test": {...the same keys...} | None,     # None when no test logits are given
    }

ECE is the top-label expected calibration error (L1 norm, equal-width confidence bins; 15 by
default, as in Guo et al.); NLL is the mean negative log-likelihood (cross-entropy, natural
log) of the true class.
"""

from __future__ import annotations

import math
from numbers import Integral, Real
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import minimize_scalar
from torchmetrics.functional.classification import multiclass_calibration_error

from covidcxr.analysis.metrics import ArrayLike, _check_inputs, _check_probability_range
from covidcxr.data.figures import _figure, _save

MIN_TEMPERATURE = 0.05
MAX_TEMPERATURE = 20.0

# Convergence tolerance of the fit on log T: a relative error of about 1e-6 on T.
_LOG_TEMPERATURE_TOLERANCE = 1e-6

BEFORE_COLOUR = "#c44e52"
AFTER_COLOUR = "#4c72b0"


def fit_temperature(logits: ArrayLike, labels: ArrayLike, max_iter: int = 100) -> float:
    """The temperature T that minimises the NLL of ``softmax(logits / T)`` against ``labels``.

    ``logits`` is (N, C) raw model outputs on the validation split (never the test split),
    ``labels`` (N,) integers in [0, C). T is clamped to [0.05, 20]: a validation set that the
    model separates perfectly drives the optimum to T -> 0, one where the logits carry no
    information to T -> infinity.

    The fit is a bounded scalar search (scipy's Brent-style ``minimize_scalar(method="bounded")``)
    over log T, at most ``max_iter`` iterations. The NLL is convex in 1/T (a log-sum-exp of
    functions linear in 1/T, minus a linear term), so it has a single minimum along log T and a
    bracketing search finds the global optimum without a learning rate or initial guess, which
    LBFGS would need. The end points of the range are compared explicitly, because the bounded
    search never evaluates them.
    """
    logits, labels = _check_scores(logits, labels, "logits")
    if isinstance(max_iter, bool) or not isinstance(max_iter, Integral) or max_iter < 1:
        raise ValueError(f"max_iter should be a positive integer, got {max_iter!r}")
    logits = logits.double()

    def nll(log_temperature: float) -> float:
        return float(F.cross_entropy(logits / math.exp(log_temperature), labels))

    bounds = (math.log(MIN_TEMPERATURE), math.log(MAX_TEMPERATURE))
    result = minimize_scalar(
        nll,
        bounds=bounds,
        method="bounded",
        options={"maxiter": int(max_iter), "xatol": _LOG_TEMPERATURE_TOLERANCE},
    )
    fitted = min(max(math.exp(float(result.x)), MIN_TEMPERATURE), MAX_TEMPERATURE)
    candidates = [(float(result.fun), fitted)] + [
        (nll(math.log(temperature)), temperature)
        for temperature in (MIN_TEMPERATURE, MAX_TEMPERATURE)
    ]
    return min(candidates)[1]


def apply_temperature(logits: ArrayLike, temperature: float) -> torch.Tensor:
    """``softmax(logits / temperature)``: (N, C) logits -> (N, C) float32 probabilities."""
    if (
        isinstance(temperature, bool)
        or not isinstance(temperature, Real)
        or not math.isfinite(temperature)
        or temperature <= 0
    ):
        raise ValueError(f"temperature should be a finite number > 0, got {temperature!r}")
    logits = torch.as_tensor(logits).detach().cpu()
    if logits.ndim != 2 or not logits.is_floating_point():
        raise ValueError(
            f"logits should be floating point with shape (N, C), got {tuple(logits.shape)} "
            f"{logits.dtype}"
        )
    return torch.softmax(logits.double() / temperature, dim=1).float()


def expected_calibration_error(
    probabilities: ArrayLike, labels: ArrayLike, bins: int = 15
) -> float:
    """Top-label expected calibration error in [0, 1]: over ``bins`` equal-width bins of the
    top-class probability, the sample-weighted mean of |accuracy - mean confidence|
    (torchmetrics' ``multiclass_calibration_error``, norm ``"l1"``).

    ``probabilities`` is (N, C) in [0, 1] (softmax outputs; apply :func:`apply_temperature` to
    logits), ``labels`` (N,) integers in [0, C).
    """
    probabilities, labels = _check_probabilities(probabilities, labels)
    _check_bins(bins)
    return float(
        multiclass_calibration_error(
            probabilities,
            labels,
            num_classes=probabilities.shape[1],
            n_bins=bins,
            norm="l1",
        )
    )


def reliability_table(
    probabilities: ArrayLike, labels: ArrayLike, bins: int = 10
) -> list[dict[str, Any]]:
    """One JSON-safe dict per equal-width bin of the top-class probability, in order::

        {"lower": float, "upper": float, "count": int,
         "confidence": float | None,   # mean top-class probability in the bin
         "accuracy": float | None}     # fraction of the bin's samples predicted correctly

    ``confidence`` and ``accuracy`` are ``None`` for an empty bin. Bins are [lower, upper), the
    last one [lower, 1]; this matches torchmetrics' binning except that torchmetrics gives
    confidences of exactly 1.0 a bin of their own, so summing ``count / N * |accuracy -
    confidence|`` over the table reproduces :func:`expected_calibration_error` (same ``bins``)
    whenever no confidence is exactly 1.0. ``probabilities`` is (N, C) in [0, 1], ``labels``
    (N,) integers in [0, C).
    """
    probabilities, labels = _check_probabilities(probabilities, labels)
    _check_bins(bins)
    confidences, predictions = probabilities.max(dim=1)
    # The same float edges and bucketing as torchmetrics, so both agree on borderline values.
    edges = torch.linspace(0, 1, bins + 1, dtype=confidences.dtype)
    bin_index = (torch.bucketize(confidences, edges, right=True) - 1).clamp(0, bins - 1)
    counts = torch.bincount(bin_index, minlength=bins)
    confidence_sums = torch.zeros(bins, dtype=torch.float64).index_add_(
        0, bin_index, confidences.double()
    )
    correct_sums = torch.zeros(bins, dtype=torch.float64).index_add_(
        0, bin_index, (predictions == labels).double()
    )
    table = []
    for index in range(bins):
        count = int(counts[index])
        table.append(
            {
                "lower": index / bins,
                "upper": (index + 1) / bins,
                "count": count,
                "confidence": float(confidence_sums[index]) / count if count else None,
                "accuracy": float(correct_sums[index]) / count if count else None,
            }
        )
    return table


def calibration_summary(
    val_logits: ArrayLike,
    val_labels: ArrayLike,
    test_logits: ArrayLike | None = None,
    test_labels: ArrayLike | None = None,
    bins: int = 15,
) -> dict[str, Any]:
    """Fit T on the validation split and report ECE (``bins`` bins) and NLL before and after
    scaling on validation and, when given, test (see the module docstring for the dict).

    Logits are (N, C) raw model outputs, labels (N,) integers in [0, C). Give both
    ``test_logits`` and ``test_labels`` or neither.

    When the fit ends at a bound of [MIN_TEMPERATURE, MAX_TEMPERATURE] the temperature is not
    identifiable — typically a validation split the model classifies without a single error,
    whose NLL keeps falling as T → 0 and would turn every probability into 0 or 1. Then T = 1
    is kept (no scaling), ``"fitted_temperature"`` records the bound and ``"note"`` says why.
    """
    if (test_logits is None) != (test_labels is None):
        raise ValueError(
            "give both test_logits and test_labels, or neither; got "
            f"test_logits={'None' if test_logits is None else 'a value'} and "
            f"test_labels={'None' if test_labels is None else 'a value'}"
        )
    _check_bins(bins)
    fitted = fit_temperature(val_logits, val_labels)
    note = None
    temperature = fitted
    if fitted <= MIN_TEMPERATURE * 1.001 or fitted >= MAX_TEMPERATURE * 0.999:
        temperature = 1.0
        note = (
            f"the validation split does not pin the temperature down (the fit ran to the bound "
            f"{fitted:g}, as it does when the model makes no validation error): kept T = 1"
        )
    test = None
    if test_logits is not None:
        test = _split_summary(test_logits, test_labels, temperature, bins)
    return {
        "temperature": temperature,
        "fitted_temperature": fitted,
        "note": note,
        "val": _split_summary(val_logits, val_labels, temperature, bins),
        "test": test,
    }


MIN_BIN_COUNT = 10
"""Reliability bins holding fewer images are drawn hollow and labelled with their count."""


def plot_reliability(
    probabilities_before: ArrayLike,
    probabilities_after: ArrayLike,
    labels: ArrayLike,
    path: Path,
    bins: int = 10,
    title: str = "Reliability diagram (top-label confidence)",
    ece_bins: int = 15,
) -> Path:
    """Reliability diagram of one split before and after temperature scaling.

    Upper panel: per bin, accuracy against mean confidence for both sets of probabilities, and
    the diagonal a calibrated model follows; the legend gives each ECE (computed with
    ``ece_bins`` bins, 15 as in :func:`calibration_summary`, so the numbers match
    ``metrics.json``); bins of fewer than :data:`MIN_BIN_COUNT` images are hollow, with their
    count. Lower panel: how many samples fall in each of the ``bins`` confidence
    bins, before and after. Both probability arrays are (N, C) in [0, 1], ``labels`` (N,).
    """
    before, labels = _check_probabilities(probabilities_before, labels, "probabilities_before")
    after, _ = _check_probabilities(probabilities_after, labels, "probabilities_after")
    if after.shape != before.shape:
        raise ValueError(
            "probabilities_before and probabilities_after should have the same shape (N, C), "
            f"got {tuple(before.shape)} and {tuple(after.shape)}"
        )
    series = [
        ("before scaling", before, BEFORE_COLOUR, -1),
        ("after scaling", after, AFTER_COLOUR, 1),
    ]

    figure = _figure(6, 7.5)
    figure.suptitle(title)
    grid = figure.add_gridspec(2, 1, height_ratios=(3, 1))
    curve_axes = figure.add_subplot(grid[0])
    count_axes = figure.add_subplot(grid[1], sharex=curve_axes)
    curve_axes.plot([0, 1], [0, 1], color="grey", linestyle="--", label="perfect calibration")
    bar_width = 0.4 / bins
    for label, probabilities, colour, side in series:
        table = reliability_table(probabilities, labels, bins)
        filled = [row for row in table if row["count"]]
        ece = expected_calibration_error(probabilities, labels, ece_bins)
        curve_axes.plot(
            [row["confidence"] for row in filled],
            [row["accuracy"] for row in filled],
            color=colour,
            label=f"{label} (ECE {ece:.3f})",
        )
        for row in filled:  # a bin of a few images says little: hollow and labelled
            sparse = row["count"] < MIN_BIN_COUNT
            curve_axes.plot(
                row["confidence"],
                row["accuracy"],
                marker="o",
                color=colour,
                markerfacecolor="white" if sparse else colour,
                alpha=0.5 if sparse else 1.0,
            )
            if sparse:
                curve_axes.annotate(
                    f"n={row['count']}",
                    (row["confidence"], row["accuracy"]),
                    textcoords="offset points",
                    xytext=(4, -10 if side > 0 else 4),
                    fontsize=7,
                    color="grey",
                )
        centres = np.array([(row["lower"] + row["upper"]) / 2 for row in table])
        count_axes.bar(
            centres + side * bar_width / 2,
            [row["count"] for row in table],
            width=bar_width,
            color=colour,
            label=label,
        )
    curve_axes.set_xlim(0, 1)
    curve_axes.set_ylim(0, 1)
    curve_axes.set_ylabel("accuracy in bin")
    curve_axes.grid(alpha=0.3)
    curve_axes.legend(loc="upper left", title=f"ECE over {ece_bins} bins")
    curve_axes.tick_params(labelbottom=False)
    count_axes.set_xlabel("confidence (top-class probability)")
    count_axes.set_ylabel("samples")
    count_axes.grid(alpha=0.3, axis="y")
    count_axes.legend(loc="upper left", fontsize="small")
    return _save(figure, Path(path))


def _split_summary(
    logits: ArrayLike, labels: ArrayLike, temperature: float, bins: int
) -> dict[str, float]:
    logits, labels = _check_scores(logits, labels, "logits")
    logits = logits.double()
    before = torch.softmax(logits, dim=1)
    after = torch.softmax(logits / temperature, dim=1)
    return {
        "ece_before": expected_calibration_error(before, labels, bins),
        "ece_after": expected_calibration_error(after, labels, bins),
        "nll_before": float(F.cross_entropy(logits, labels)),
        "nll_after": float(F.cross_entropy(logits / temperature, labels)),
    }


def _check_scores(
    scores: ArrayLike, labels: ArrayLike, name: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, C) float scores with C >= 2 and N >= 1, (N,) integer labels in [0, C)."""
    scores = torch.as_tensor(scores)
    if scores.ndim != 2 or scores.shape[1] < 2:
        raise ValueError(
            f"{name} should have shape (N, C) with C >= 2 classes, got {tuple(scores.shape)}"
        )
    if scores.shape[0] == 0:
        raise ValueError(
            f"{name} hold no samples: expected N >= 1 rows, got shape {tuple(scores.shape)}"
        )
    return _check_inputs(scores, labels, scores.shape[1], name)


def _check_probabilities(
    probabilities: ArrayLike, labels: ArrayLike, name: str = "probabilities"
) -> tuple[torch.Tensor, torch.Tensor]:
    probabilities, labels = _check_scores(probabilities, labels, name)
    _check_probability_range(probabilities)
    return probabilities, labels


def _check_bins(bins: int) -> None:
    if isinstance(bins, bool) or not isinstance(bins, Integral) or bins < 1:
        raise ValueError(f"bins should be a positive integer, got {bins!r}")
