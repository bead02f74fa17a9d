"""Is this film like the ones the model was trained on? A cheap out-of-distribution check.

A classifier answers one of its classes for anything it is given: a lateral view, a CT slice, a
photograph, an inverted film, noise. :class:`FeatureReference` remembers two things about the
training images and flags a new image that is far from them in either:

* **the network's features** (the trunk's pooled output, ``forward_features``): centred, their
  ``dims`` principal directions kept with the variance along each (probabilistic PCA). The
  feature score is the squared Mahalanobis distance in that subspace plus the squared residual
  off it (scaled by the mean variance of the discarded directions), over the feature width: a
  training image scores about 1.
* **the layout of the film** (:func:`thumbnails`: the model's input pooled to 20×20, centred and
  scaled to unit length): its correlation with the mean training thumbnail. A frontal chest film
  correlates ~0.7 (dark lungs beside a bright mediastinum); an inverted film correlates
  negatively, noise, gradients, rotated or non-chest images near zero. Quadratic scores like the
  feature score cannot see an inversion (it sits as far from the mean as the film itself); this
  signed one can.

Each part's threshold is the ``quantile`` (default 99.5 %) of the validation split, which the
fit did not see: the ``score`` is the larger of the two parts, each divided by its threshold,
and a film is *unfamiliar* when it is above 1 (about 1 % of films like the training ones are).
Nothing here says an unflagged film is in the model's competence: the check only catches films
far from everything it was trained on. The reference is saved beside the weights
(``ood.safetensors``) and summarised in the model card (``card.ood``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

OOD_FILE = "ood.safetensors"
DEFAULT_DIMS = 32
DEFAULT_QUANTILE = 0.995
THUMBNAIL_SIDE = 20
METHOD = "ppca-features+layout-correlation"

UNFAMILIAR = (
    "This film is unlike the ones the model was trained on (out-of-distribution check): its "
    "answer is likely meaningless. Is it a frontal chest X-ray?"
)
"""What every front door says of a film the check flags (the page, the API, the DICOM SR)."""
_ARRAYS = ("mean", "components", "variances", "template")


def thumbnails(images: Any, side: int = THUMBNAIL_SIDE) -> Any:
    """``(N, side²)`` thumbnails of uint8 images ``(N, 1, S, S)`` (numpy or torch, returned in
    kind): mean-pooled over ``S // side`` pixel blocks (the last ``S % side`` rows and columns
    are dropped), centred, and scaled to unit length."""
    if images.ndim != 4 or images.shape[1] != 1 or images.shape[-1] < side:
        raise ValueError(
            f"images should be (N, 1, S, S) with S >= {side}, got shape {tuple(images.shape)}"
        )
    count, block = images.shape[0], images.shape[-1] // side
    pixels = images[:, 0, : side * block, : side * block] * (1.0 / 255.0)
    pooled = pixels.reshape(count, side, block, side, block).mean((2, 4)).reshape(count, -1)
    centred = pooled - pooled.mean(1)[:, None]
    return centred / ((centred * centred).sum(1)[:, None] ** 0.5 + 1e-6)


@dataclass(frozen=True)
class FeatureReference:
    """What the training images look like to the check: the feature PCA (``mean`` (D,),
    orthonormal ``components`` (k, D), ``variances`` (k,), ``residual_variance``) with its
    ``threshold``, and the mean training thumbnail ``template`` (side²,) with the correlation
    below which a film is flagged, ``template_threshold``."""

    mean: np.ndarray
    components: np.ndarray
    variances: np.ndarray
    residual_variance: float
    threshold: float
    template: np.ndarray
    template_threshold: float
    quantile: float = DEFAULT_QUANTILE

    @property
    def width(self) -> int:
        return int(self.mean.shape[0])

    def feature_scores(self, features: np.ndarray) -> np.ndarray:
        """Feature scores (N,) of features (N, D): about 1 for training images."""
        features = np.asarray(features, dtype=np.float64)
        if features.ndim != 2 or features.shape[1] != self.width:
            raise ValueError(
                f"features should be (N, {self.width}), got shape {tuple(features.shape)}"
            )
        return _distance(
            features,
            self.mean,
            self.components,
            self.variances,
            self.residual_variance,
            self.width,
        )

    def layout_correlations(self, images: Any) -> np.ndarray:
        """Correlations (N,) of uint8 images (N, 1, S, S) with the training template."""
        array = images.numpy() if hasattr(images, "numpy") else np.asarray(images)
        return thumbnails(array.astype(np.float64)) @ self.template

    def score(self, features: np.ndarray, images: Any) -> np.ndarray:
        """Scores (N,): the larger of the feature score over its threshold and the layout's
        shortfall ``(1 - correlation) / (1 - template_threshold)``; above 1 is unfamiliar."""
        return _combined(
            self.feature_scores(features),
            self.threshold,
            self.layout_correlations(images),
            self.template_threshold,
        )

    def flag(self, features: np.ndarray, images: Any) -> tuple[np.ndarray, np.ndarray]:
        """``(scores (N,), unfamiliar (N,) bool)`` of images (N, 1, S, S) and their features."""
        scores = self.score(features, images)
        return scores, scores > 1.0

    def torch_scorer(self) -> Any:
        """An ``nn.Module`` computing :meth:`score` (float32) from features (N, D) and the uint8
        images (N, 1, S, S): the ONNX export puts the check inside the graph."""
        import torch
        from torch import nn

        reference = self

        class Scorer(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                for name in _ARRAYS:
                    value = torch.tensor(getattr(reference, name), dtype=torch.float32)
                    self.register_buffer(name, value)
                self.residual_variance = float(reference.residual_variance)
                self.width = float(reference.width)

            def forward(self, features: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
                feature = _distance(
                    features,
                    self.mean,
                    self.components,
                    self.variances,
                    self.residual_variance,
                    self.width,
                )
                layout = thumbnails(images.float()) @ self.template
                return _combined(feature, reference.threshold, layout, reference.template_threshold)

        return Scorer().eval()

    def summary(self) -> dict[str, Any]:
        """What the model card says about the check."""
        return {
            "method": METHOD,
            "file": OOD_FILE,
            "features": "forward_features (the trunk's pooled output)",
            "dims": int(self.components.shape[0]),
            "width": self.width,
            "feature_threshold": float(self.threshold),
            "layout_threshold": float(self.template_threshold),
            "threshold": 1.0,
            "quantile": float(self.quantile),
            "meaning": (
                "unfamiliar (score > 1) when the film's features or its layout are further from "
                f"the training films than {100 * self.quantile:g} % of validation films"
            ),
        }

    def save(self, path: str | Path) -> Path:
        """Write the reference (safetensors, float64), atomically."""
        import torch

        from covidcxr.tensorfile import save_tensors

        path = Path(path)
        tensors = {
            name: torch.from_numpy(np.ascontiguousarray(getattr(self, name), dtype=np.float64))
            for name in _ARRAYS
        }
        metadata = {
            "method": METHOD,
            "residual_variance": repr(float(self.residual_variance)),
            "threshold": repr(float(self.threshold)),
            "template_threshold": repr(float(self.template_threshold)),
            "quantile": repr(float(self.quantile)),
        }
        return save_tensors(path, tensors, metadata)


def _distance(features, mean, components, variances, residual_variance, width):
    """The feature score for numpy arrays and torch tensors alike: squared Mahalanobis distance
    inside the subspace plus the scaled squared residual, over ``width``."""
    centred = features - mean
    projected = centred @ components.T
    residual = centred - projected @ components
    inside = (projected**2 / variances).sum(1)
    outside = (residual**2).sum(1) / residual_variance
    return (inside + outside) / width


def _combined(feature, feature_threshold, layout, layout_threshold):
    """Both parts on one scale (1 = its threshold), the larger one kept (numpy or torch)."""
    shortfall = (1.0 - layout) / (1.0 - layout_threshold)
    ratio = feature / feature_threshold
    return (ratio + shortfall + abs(ratio - shortfall)) / 2  # max, in any array library


def load_reference(path: str | Path) -> FeatureReference:
    """Read a reference written by :meth:`FeatureReference.save`."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: the model's out-of-distribution reference is missing; copy the whole "
            "model folder, or retrain (covidcxr train writes it)"
        )
    try:
        with safe_open(str(path), framework="numpy") as handle:
            metadata = handle.metadata() or {}
            if metadata.get("method") != METHOD:
                raise ValueError(
                    f"written by another version (method {metadata.get('method')!r}, this "
                    f"covidcxr reads {METHOD!r}); retrain the model, or for a pretrained one "
                    "rerun `python recipes/zoo.py ... --ship --only ship`"
                )
            tensors = {key: handle.get_tensor(key) for key in _ARRAYS}
        return FeatureReference(
            mean=tensors["mean"],
            components=tensors["components"],
            variances=tensors["variances"],
            residual_variance=float(metadata["residual_variance"]),
            threshold=float(metadata["threshold"]),
            template=tensors["template"],
            template_threshold=float(metadata["template_threshold"]),
            quantile=float(metadata.get("quantile", DEFAULT_QUANTILE)),
        )
    except (OSError, KeyError, ValueError, SafetensorError) as error:
        raise ValueError(f"{path}: not a covidcxr feature reference ({error})") from None


def fit_reference(
    train_features: np.ndarray,
    val_features: np.ndarray,
    train_images: Any,
    val_images: Any,
    dims: int = DEFAULT_DIMS,
    quantile: float = DEFAULT_QUANTILE,
) -> FeatureReference:
    """Fit on the training split's features (N, D) and uint8 images (N, 1, S, S); set both
    thresholds on the validation split's (M, D) and (M, 1, S, S), which the fit did not see."""
    train = np.asarray(train_features, dtype=np.float64)
    val = np.asarray(val_features, dtype=np.float64)
    if train.ndim != 2 or val.ndim != 2 or train.shape[1] != val.shape[1]:
        raise ValueError(f"features should be (N, D) and (M, D), got {train.shape} and {val.shape}")
    if len(train) < 2 or len(val) < 1:
        raise ValueError(
            f"need at least 2 training and 1 validation feature rows, got {len(train)} and "
            f"{len(val)}"
        )
    if len(train_images) != len(train) or len(val_images) != len(val):
        raise ValueError(
            f"one image per feature row: got {len(train_images)} and {len(val_images)} images "
            f"for {len(train)} and {len(val)} rows"
        )
    if not 0 < quantile < 1:
        raise ValueError(f"quantile should lie in (0, 1), got {quantile}")
    width = train.shape[1]
    mean = train.mean(axis=0)
    centred = train - mean
    _, singular, vt = np.linalg.svd(centred, full_matrices=False)
    eigen = singular**2 / (len(train) - 1)
    floor = max(float(eigen.max(initial=0.0)) * 1e-6, 1e-12)
    keep = max(1, min(dims, int((eigen > floor).sum()), width - 1 if width > 1 else 1))
    total = float(centred.var(axis=0, ddof=1).sum())
    rest = max(total - float(eigen[:keep].sum()), 0.0)
    residual_variance = max(rest / max(width - keep, 1), floor)
    variances = np.maximum(eigen[:keep], floor)
    val_scores = _distance(val, mean, vt[:keep], variances, residual_variance, width)
    template = _as_numpy(thumbnails(_as_numpy(train_images).astype(np.float64))).mean(axis=0)
    template /= np.linalg.norm(template) + 1e-12
    val_layout = thumbnails(_as_numpy(val_images).astype(np.float64)) @ template
    return FeatureReference(
        mean=mean,
        components=vt[:keep],
        variances=variances,
        residual_variance=residual_variance,
        threshold=max(float(np.quantile(val_scores, quantile)), 1e-12),
        template=template,
        template_threshold=min(float(np.quantile(val_layout, 1 - quantile)), 1 - 1e-6),
        quantile=quantile,
    )


def _as_numpy(images: Any) -> np.ndarray:
    return images.numpy() if hasattr(images, "numpy") else np.asarray(images)
