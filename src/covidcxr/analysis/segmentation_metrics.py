"""Lung segmentation metrics: Dice, IoU and HD95, as functions and as an accumulator.

:func:`dice_score`, :func:`iou_score` and :func:`hausdorff95` score one pair of binary masks;
:func:`segmentation_metrics` scores a batch; :class:`SegmentationMeter` collects batches (masks
of different images may differ in size from one batch to the next) and reports the same dict, so
training, evaluation and reports agree. The numbers come from ``monai.metrics``
(``compute_dice``, ``compute_iou``, ``compute_hausdorff_distance``) on single-channel binary
tensors ``(B, 1, H, W)``. MONAI (~9 s) and torch are imported on first use, not at module import.

The dict (every value a plain ``int``, ``float``, ``list``, ``dict`` or ``None``)::

    {
        "num_images": int,
        "dice": float,          # mean over images
        "iou": float,           # mean over images
        "hd95": float | None,   # mean over images where HD95 is defined; None if none is
        "per_image": [{"dice": float, "iou": float, "hd95": float | None}, ...],
    }

HD95 is the symmetric 95th-percentile Hausdorff distance in pixels: the larger of the two
directed 95th percentiles of the Euclidean distances from each mask's boundary pixels to the
other mask's boundary.

Empty masks (no lung pixel), where MONAI gives NaN or inf, follow fixed rules instead so that
``json.dumps(..., allow_nan=False)`` always works:

* both empty: Dice 1, IoU 1, HD95 0. The prediction agrees perfectly with the target (there are
  no lungs in either);
* exactly one empty: Dice 0, IoU 0, HD95 ``None``. There is no boundary to measure a distance
  to, so the distance is undefined; it is left out of the mean ``hd95`` rather than replaced by
  an arbitrary large number (count the ``None`` entries of ``per_image`` to report them).
"""

from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

    ArrayLike = torch.Tensor | np.ndarray

__all__ = [
    "SegmentationMeter",
    "dice_score",
    "hausdorff95",
    "iou_score",
    "segmentation_metrics",
]

# Images scored per MONAI call by segmentation_metrics: bounds the float64 copies it makes
# (64 × 256 × 256 × 8 bytes = 32 MiB per mask tensor) whatever the batch size.
_CHUNK = 64


def dice_score(prediction: ArrayLike, target: ArrayLike) -> float:
    """Dice coefficient ``2 |P ∩ T| / (|P| + |T|)`` of two binary ``(H, W)`` masks.

    Masks are numpy arrays or torch tensors, bool or 0/1 numbers. Both empty → 1.0; exactly one
    empty → 0.0 (see the module docstring).
    """
    return _dice_values(*_pair(prediction, target))[0]


def iou_score(prediction: ArrayLike, target: ArrayLike) -> float:
    """Intersection over union (Jaccard index) ``|P ∩ T| / |P ∪ T|`` of two binary ``(H, W)``
    masks. Both empty → 1.0; exactly one empty → 0.0."""
    return _iou_values(*_pair(prediction, target))[0]


def hausdorff95(prediction: ArrayLike, target: ArrayLike) -> float | None:
    """Symmetric 95th-percentile Hausdorff distance, in pixels, between two binary ``(H, W)``
    masks. Both empty → 0.0; exactly one empty → ``None`` (undefined)."""
    return _hd95_values(*_pair(prediction, target))[0]


def segmentation_metrics(
    predictions: ArrayLike, targets: ArrayLike, *, threshold: float | None = None
) -> dict[str, Any]:
    """Dice, IoU and HD95 per image and their means (the dict in the module docstring).

    Args:
        predictions: ``(N, H, W)`` or ``(N, 1, H, W)`` binary masks (bool or 0/1), or, when
            ``threshold`` is given, probabilities in ``[0, 1]`` (foreground where
            ``>= threshold``).
        targets: binary masks of the same shape (never thresholded).
        threshold: ``None`` (default) to require binary predictions, or a value in ``(0, 1)``.
    """
    _check_threshold(threshold)
    predictions, targets = _batch(predictions, targets, threshold)
    return _summarise(_per_image(predictions, targets))


class SegmentationMeter:
    """Collects ``(predictions, targets)`` batches and computes :func:`segmentation_metrics`
    over all of them.

    Every metric is a per-image value averaged over images, so each batch is scored as it
    arrives and only the per-image numbers are kept: batches may hold masks of different sizes,
    and the result equals one call of :func:`segmentation_metrics` on all the images.

    ``threshold``: ``None`` (default) requires binary predictions; a value in ``(0, 1)`` accepts
    probabilities (e.g. sigmoid outputs) and takes ``>= threshold`` as lung. Targets are always
    binary. Batches are detached and moved to the CPU, so the meter can be fed from any device.
    """

    def __init__(self, threshold: float | None = None) -> None:
        _check_threshold(threshold)
        self.threshold = threshold
        self._per_image: list[dict[str, float | None]] = []

    @property
    def num_images(self) -> int:
        """How many images have been scored since the last :meth:`reset`."""
        return len(self._per_image)

    def update(self, predictions: ArrayLike, targets: ArrayLike) -> None:
        """Score a batch: ``predictions`` and ``targets`` ``(B, 1, H, W)`` or ``(B, H, W)``."""
        predictions, targets = _batch(predictions, targets, self.threshold)
        self._per_image.extend(_per_image(predictions, targets))

    def compute(self) -> dict[str, Any]:
        """The :func:`segmentation_metrics` dict over every image since the last reset."""
        if not self._per_image:
            raise ValueError(
                "SegmentationMeter.compute() was called before any update(); "
                "feed it at least one batch of predicted and target masks"
            )
        return _summarise(list(self._per_image))

    def reset(self) -> None:
        """Forget every image (call at the start of each epoch)."""
        self._per_image.clear()


# --------------------------------------------------------------------------------------------
# MONAI calls on (B, 1, H, W) bool tensors, with the empty-mask rules applied


def _dice_values(predictions: torch.Tensor, targets: torch.Tensor) -> list[float]:
    from monai.metrics import compute_dice

    scores = compute_dice(
        predictions.double(), targets.double(), include_background=True, ignore_empty=False
    )
    return _overlap_with_empty_rules(scores[:, 0], predictions, targets)


def _iou_values(predictions: torch.Tensor, targets: torch.Tensor) -> list[float]:
    from monai.metrics import compute_iou

    scores = compute_iou(
        predictions.double(), targets.double(), include_background=True, ignore_empty=False
    )
    return _overlap_with_empty_rules(scores[:, 0], predictions, targets)


def _hd95_values(predictions: torch.Tensor, targets: torch.Tensor) -> list[float | None]:
    predicted_any, target_any = _any_per_image(predictions), _any_per_image(targets)
    values: list[float | None] = [
        0.0 if not (p or t) else None for p, t in zip(predicted_any, target_any, strict=True)
    ]
    both = [
        index for index, (p, t) in enumerate(zip(predicted_any, target_any, strict=True)) if p and t
    ]
    if both:
        from monai.metrics import compute_hausdorff_distance

        with warnings.catch_warnings():
            # MONAI's own internal call of a deprecated argument (monai 1.5–1.6); not ours to fix.
            warnings.filterwarnings(
                "ignore", message=".*always_return_as_numpy.*", category=FutureWarning
            )
            distances = compute_hausdorff_distance(
                predictions[both].double(),
                targets[both].double(),
                include_background=True,
                percentile=95,
            )
        for index, distance in zip(both, distances[:, 0].tolist(), strict=True):
            values[index] = float(distance)
    return values


def _overlap_with_empty_rules(
    scores: torch.Tensor, predictions: torch.Tensor, targets: torch.Tensor
) -> list[float]:
    # MONAI with ignore_empty=False already follows these rules; stating them here keeps the
    # documented behaviour independent of MONAI's defaults.
    values = []
    for score, p, t in zip(
        scores.tolist(), _any_per_image(predictions), _any_per_image(targets), strict=True
    ):
        if not (p or t):
            values.append(1.0)
        elif not (p and t):
            values.append(0.0)
        else:
            values.append(float(score))
    return values


def _any_per_image(masks: torch.Tensor) -> list[bool]:
    return masks.flatten(1).any(dim=1).tolist()


def _per_image(predictions: torch.Tensor, targets: torch.Tensor) -> list[dict[str, float | None]]:
    results: list[dict[str, float | None]] = []
    for start in range(0, predictions.shape[0], _CHUNK):
        chunk = (predictions[start : start + _CHUNK], targets[start : start + _CHUNK])
        for dice, iou, hd95 in zip(
            _dice_values(*chunk), _iou_values(*chunk), _hd95_values(*chunk), strict=True
        ):
            results.append({"dice": dice, "iou": iou, "hd95": hd95})
    return results


def _summarise(per_image: list[dict[str, float | None]]) -> dict[str, Any]:
    defined_hd95 = [entry["hd95"] for entry in per_image if entry["hd95"] is not None]
    return {
        "num_images": len(per_image),
        "dice": math.fsum(entry["dice"] for entry in per_image) / len(per_image),
        "iou": math.fsum(entry["iou"] for entry in per_image) / len(per_image),
        "hd95": math.fsum(defined_hd95) / len(defined_hd95) if defined_hd95 else None,
        "per_image": per_image,
    }


# --------------------------------------------------------------------------------------------
# Input checks


def _pair(prediction: ArrayLike, target: ArrayLike) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate one pair of (H, W) binary masks; return (1, 1, H, W) bool tensors."""
    prediction = _as_tensor(prediction, "prediction")
    target = _as_tensor(target, "target")
    for name, mask in (("prediction", prediction), ("target", target)):
        if mask.ndim != 2:
            raise ValueError(
                f"{name} should have 2 dims (height, width), got {mask.ndim} with shape "
                f"{tuple(mask.shape)}; score a batch with segmentation_metrics"
            )
    _check_same_shape(prediction, target)
    return (
        _binary(prediction, "prediction", None)[None, None],
        _binary(target, "target", None)[None, None],
    )


def _batch(
    predictions: ArrayLike, targets: ArrayLike, threshold: float | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate a batch of masks (N, H, W) or (N, 1, H, W); return (N, 1, H, W) bool tensors."""
    predictions = _as_tensor(predictions, "predictions")
    targets = _as_tensor(targets, "targets")
    for name, masks in (("predictions", predictions), ("targets", targets)):
        if not (masks.ndim == 3 or (masks.ndim == 4 and masks.shape[1] == 1)):
            raise ValueError(
                f"{name} should have shape (N, H, W) or (N, 1, H, W), got {tuple(masks.shape)}"
            )
    _check_same_shape(predictions, targets, "predictions", "targets")
    if predictions.shape[0] == 0:
        raise ValueError("no images (N = 0): segmentation metrics need at least one mask pair")
    if predictions.ndim == 3:
        predictions, targets = predictions[:, None], targets[:, None]
    return _binary(predictions, "predictions", threshold), _binary(targets, "targets", None)


def _as_tensor(mask: ArrayLike, name: str) -> torch.Tensor:
    import torch

    if isinstance(mask, np.ndarray):
        # ascontiguousarray: torch cannot wrap the negative strides of flipped views.
        return torch.from_numpy(np.ascontiguousarray(mask))
    if isinstance(mask, torch.Tensor):
        return mask.detach().cpu()
    raise ValueError(f"{name} should be a numpy array or a torch tensor, got {type(mask).__name__}")


def _check_same_shape(
    prediction: torch.Tensor,
    target: torch.Tensor,
    prediction_name: str = "prediction",
    target_name: str = "target",
) -> None:
    if prediction.shape != target.shape:
        raise ValueError(
            f"{prediction_name} and {target_name} should have the same shape, got "
            f"{tuple(prediction.shape)} and {tuple(target.shape)}; resize the prediction to "
            "the target's size (covidcxr.data.transforms.resize_mask) first"
        )
    if prediction.numel() == 0:
        raise ValueError(f"masks should not be empty arrays, got shape {tuple(prediction.shape)}")


def _binary(mask: torch.Tensor, name: str, threshold: float | None) -> torch.Tensor:
    """A bool tensor: ``mask`` itself if bool, ``mask >= threshold`` when thresholding, else the
    0/1 values as bool (anything else is an error)."""
    import torch

    if mask.dtype == torch.bool:
        return mask
    if mask.is_complex():
        raise ValueError(f"{name} should be bool or real numbers, got dtype {mask.dtype}")
    values = mask.double()
    low, high = float(values.min()), float(values.max())
    if threshold is not None:
        # Written so that NaN fails the test too.
        if not (low >= 0.0 and high <= 1.0):
            raise ValueError(
                f"{name} should be probabilities in [0, 1] when thresholding, got values from "
                f"{low:.4g} to {high:.4g}; apply torch.sigmoid to logits first"
            )
        return values >= threshold
    if not bool(((values == 0) | (values == 1)).all()):
        raise ValueError(
            f"{name} should be binary masks (bool, or numbers 0 and 1), got values from "
            f"{low:.4g} to {high:.4g}; threshold them first, or pass threshold=0.5 for "
            "probabilities"
        )
    return values == 1


def _check_threshold(threshold: float | None) -> None:
    if threshold is None:
        return
    valid = isinstance(threshold, int | float | np.integer | np.floating) and not isinstance(
        threshold, bool
    )
    if not valid or not 0.0 < threshold < 1.0:
        raise ValueError(
            f"threshold should be None (binary inputs) or a number in (0, 1) such as 0.5, "
            f"got {threshold!r}"
        )
