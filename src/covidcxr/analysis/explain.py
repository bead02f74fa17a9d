"""Grad-CAM saliency maps: where in the X-ray a classifier looked for its answer.

:func:`saliency_maps` computes Grad-CAM or Grad-CAM++ (pytorch-grad-cam's ``GradCAM`` /
``GradCAMPlusPlus``) for any registered classifier, on the image the network actually sees
(lung-cropped or lung-masked for lung-focused models, resized to the input size) and maps it
back onto the original image. :func:`lung_saliency_fraction` measures how much of a map falls
inside the lungs — a model that looks outside them (text markers, shoulders, collimation) has
probably learnt a shortcut — and :func:`summarise_lung_fractions` aggregates it over a test set.
:func:`saliency_overlay` draws a map on its X-ray; :func:`explain_files` does all of it for a
folder of files, writing one overlay per image.

The layer each model is explained at is its spec's ``target_layer``
(:class:`covidcxr.models.registry.ModelSpec`), the last spatial activation before pooling:

==================  ======================  ====================================================
model               target layer            what it is
==================  ======================  ====================================================
seed-cnn            ``trunk.relu3``         ReLU of the third conv block (before its max-pool)
tiny-cnn            ``trunk.relu2``         ReLU of the second conv (test-only model)
tiny-frozen-cnn     ``trunk.relu2``         the same, frozen trunk (test-only model)
vgg16               ``trunk.features.29``   ReLU after conv5_3, before the last max-pool
densenet121         ``trunk.relu``          the final ReLU after ``norm5``
resnet50            ``trunk.layer4``        output of the last residual stage
efficientnet-lite0  ``trunk.bn2``           BatchNorm + ReLU6 of the final 1×1 conv head
==================  ======================  ====================================================

Maps are float32 ``(H, W)`` in ``[0, 1]`` at the original image's size. As pytorch-grad-cam
makes them, each map is min-max scaled on its own, so values compare places within one image,
not across images; a map is all zeros where no part of the layer raised the class score.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from covidcxr.inference.artifact import Classifier, Segmenter

if TYPE_CHECKING:
    import torch

__all__ = [
    "METHODS",
    "ExplainResult",
    "explain_files",
    "lung_saliency_fraction",
    "saliency_maps",
    "saliency_overlay",
    "summarise_lung_fractions",
]

METHODS = ("gradcam", "gradcam++")
"""Saliency methods :func:`saliency_maps` knows: Grad-CAM and Grad-CAM++."""

# Images read, explained and written per step of explain_files: bounds memory for any folder.
CHUNK = 32

# Perceptually uniform and monotonic in lightness, so brighter always means more salient, also
# in greyscale print; jet's bright cyan and yellow bands suggest edges the map does not have.
COLORMAP = "inferno"

# Cyan appears nowhere in inferno (black-purple-red-orange-yellow), so the outline never reads
# as heat.
OUTLINE_COLOUR = (0, 255, 255)


def saliency_maps(
    classifier: Classifier,
    images: Sequence[np.ndarray],
    method: str = "gradcam",
    targets: Sequence[int] | None = None,
    batch_size: int = 8,
    *,
    lung_masks: Sequence[np.ndarray] | None = None,
) -> tuple[list[np.ndarray], np.ndarray]:
    """Grad-CAM (or Grad-CAM++) maps of ``classifier`` for ``images``.

    Args:
        classifier: a loaded :class:`~covidcxr.inference.artifact.Classifier`.
        images: ``(H, W)`` float arrays in ``[0, 1]`` (covidcxr's image convention), any sizes.
        method: one of :data:`METHODS`.
        targets: the class index to explain for each image; default: the predicted class.
        batch_size: images per forward/backward pass.
        lung_masks: for a lung-focused classifier (card ``lungs.mode`` crop or mask), bool
            ``(h, w)`` masks (any size) to focus each image with instead of the classifier's
            segmenter; not read otherwise.

    Returns:
        ``(maps, probabilities)``: one float32 ``(H, W)`` map in ``[0, 1]`` per image, at that
        image's own size, and the probabilities ``(N, C)`` exactly as
        :meth:`~covidcxr.inference.artifact.Classifier.predict_proba` gives them
        (temperature-calibrated).

    The map is computed on the network's input (the image lung-focused as in training, then
    resized to ``input_size``) at the model's ``spec.target_layer`` (see the module docstring)
    and mapped back: resized bilinearly to ``(H, W)`` for lung modes ``none`` and ``mask``; for
    ``crop``, resized into the lungs' bounding box (the box the crop used) and zero outside it.
    The network stays in eval mode and its parameters are not changed (their ``.grad`` is left
    ``None``); this works inside ``torch.no_grad()`` or ``torch.inference_mode()`` too, as
    gradients are switched back on locally.
    """
    cam_class = _cam_class(method)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size should be a positive int, got {batch_size!r}")
    images = list(images)
    num_classes = classifier.card.num_classes
    if targets is not None:
        targets = _check_targets(targets, len(images), num_classes)
    if not images:
        return [], np.zeros((0, num_classes), dtype=np.float32)
    model_inputs, boxes = _model_inputs(classifier, images, lung_masks)
    network = classifier.network
    was_training = network.training
    try:
        probabilities = classifier.predict_prepared(model_inputs, batch_size)
        if targets is None:
            targets = [int(index) for index in probabilities.argmax(axis=1)]
        cams = _input_cams(classifier, model_inputs, cam_class, targets, batch_size)
    finally:
        # Both passes switch to eval mode; a network being trained goes back to training.
        network.train(was_training)
    maps = [
        _to_image(cam, image.shape, box)
        for cam, image, box in zip(cams, images, boxes, strict=True)
    ]
    return maps, probabilities


def lung_saliency_fraction(saliency: np.ndarray, lung_mask: np.ndarray) -> float | None:
    """The share of a map's (positive) saliency mass that lies inside the lungs.

    Args:
        saliency: ``(H, W)`` float map, e.g. from :func:`saliency_maps`; negative values count
            as 0.
        lung_mask: ``(h, w)`` bool, any size; resized to ``(H, W)`` with
            :func:`~covidcxr.data.transforms.resize_mask` (nearest neighbour).

    Returns:
        ``sum(saliency inside) / sum(saliency)`` in ``[0, 1]``, or None when the map is all zero
        (nothing to share out).
    """
    from covidcxr.data.transforms import resize_mask

    saliency = _check_map(saliency, "saliency")
    mask = resize_mask(lung_mask, saliency.shape)
    positive = np.clip(saliency.astype(np.float64), 0.0, None)
    total = float(positive.sum())
    if total <= 0.0:
        return None
    return min(1.0, float(positive[mask].sum()) / total)


def summarise_lung_fractions(
    fractions: Sequence[float | None],
    true_labels: Sequence[int | str],
    predicted_labels: Sequence[int | str],
    class_names: Sequence[str],
) -> dict[str, Any]:
    """Mean lung saliency fraction overall, per true class, and for right and wrong answers.

    Args:
        fractions: one :func:`lung_saliency_fraction` per image (None: no saliency; skipped).
        true_labels, predicted_labels: per image, a class index or a name from ``class_names``.
        class_names: the classes, in index order.

    Returns:
        JSON-safe ``{"images": N, "no_saliency": count of None, "overall": {"mean", "count"},
        "per_class": {name: {"mean", "count"}}, "correct": {...}, "wrong": {...}}``, where
        ``count`` is the number of fractions averaged and ``mean`` is None when it is 0.
    """
    names = [str(name) for name in class_names]
    count = len(fractions)
    if not (len(true_labels) == len(predicted_labels) == count):
        raise ValueError(
            "fractions, true_labels and predicted_labels should have one entry per image, got "
            f"{count}, {len(true_labels)} and {len(predicted_labels)}"
        )
    values = [_check_fraction(value) for value in fractions]
    truth = [_label_index(label, names) for label in true_labels]
    predicted = [_label_index(label, names) for label in predicted_labels]

    def stats(selected: Sequence[float | None]) -> dict[str, Any]:
        present = [value for value in selected if value is not None]
        return {"mean": float(np.mean(present)) if present else None, "count": len(present)}

    return {
        "images": count,
        "no_saliency": sum(value is None for value in values),
        "overall": stats(values),
        "per_class": {
            name: stats([v for v, t in zip(values, truth, strict=True) if t == index])
            for index, name in enumerate(names)
        },
        "correct": stats([v for v, t, p in zip(values, truth, predicted, strict=True) if t == p]),
        "wrong": stats([v for v, t, p in zip(values, truth, predicted, strict=True) if t != p]),
    }


def saliency_overlay(
    image: np.ndarray,
    saliency: np.ndarray,
    lung_mask: np.ndarray | None = None,
    alpha: float = 0.45,
) -> np.ndarray:
    """The X-ray in grey with a saliency map blended over it, and the lung outline.

    Args:
        image: ``(H, W)`` float in ``[0, 1]`` (covidcxr's image convention).
        saliency: ``(H, W)`` float map in ``[0, 1]`` (from :func:`saliency_maps`).
        lung_mask: optional bool lung mask of any size; its outline is drawn in cyan on top
            (:func:`~covidcxr.data.overlay.lung_outline_overlay`'s outline).
        alpha: opacity of the heat colour where saliency is 1, in ``[0, 1]``.

    Returns:
        ``(H, W, 3)`` uint8 RGB. Each pixel blends the grey X-ray with the map's "inferno"
        colour at opacity ``alpha × saliency``, so regions the model ignored stay plain X-ray
        and the anatomy under the hot spots remains visible.
    """
    from matplotlib import colormaps

    from covidcxr.data.overlay import lung_outline_overlay

    image = _check_map(image, "image")
    saliency = _check_map(saliency, "saliency")
    if saliency.shape != image.shape:
        raise ValueError(
            f"saliency should have the image's shape {image.shape}, got {saliency.shape}; "
            "saliency_maps returns maps at each image's own size"
        )
    if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0 <= alpha <= 1:
        raise ValueError(f"alpha should be a number in [0, 1], got {alpha!r}")
    heat = np.clip(saliency, 0.0, 1.0)
    colours = colormaps[COLORMAP](heat)[..., :3]
    grey = np.clip(image, 0.0, 1.0)[..., None]
    weight = float(alpha) * heat[..., None]
    blended = (1.0 - weight) * grey + weight * colours
    rgb = np.clip(np.rint(blended * 255.0), 0, 255).astype(np.uint8)
    if lung_mask is not None:
        # Outline pixels are the only non-black ones when drawn on a black image.
        drawn = lung_outline_overlay(np.zeros(image.shape, np.float32), lung_mask, OUTLINE_COLOUR)
        rgb[drawn.any(axis=2)] = OUTLINE_COLOUR
    return rgb


@dataclass
class ExplainResult:
    """What :func:`explain_files` did: one row per explained image, and the files it skipped
    (unreadable images, missing inputs, unreadable lung masks) with the reason."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    failures: list[tuple[Path, str]] = field(default_factory=list)


def explain_files(
    model: str | Path | Classifier,
    inputs: Sequence[str | Path],
    out: str | Path,
    method: str = "gradcam",
    masks: Mapping[Path, Path] | None = None,
    seg_model: str | Path | Segmenter | None = None,
    progress: Callable[[int, int], None] | None = None,
    batch_size: int = 8,
) -> ExplainResult:
    """Explain every image under ``inputs`` and write one overlay PNG per image into ``out``.

    Args:
        model: a model folder (or file) or a loaded
        :class:`~covidcxr.inference.artifact.Classifier`. inputs: image files and folders (searched
        recursively, as ``covidcxr predict`` does;
            files under ``masks/`` folders are skipped).
        out: folder for the overlays (created): ``<stem>_<method>.png``, with ``_2``, ``_3``...
            appended when two inputs share a stem.
        method: one of :data:`METHODS`.
        masks: lung masks known in advance, image path → mask path (e.g. the dataset's own).
        seg_model: a lung segmentation model (path or
        :class:`~covidcxr.inference.artifact.Segmenter`)
            for images without a mask in ``masks``; a lung-focused classifier also uses it to
            focus, as ``covidcxr predict --seg-model`` does.
        progress: called as ``progress(done, total)`` after each chunk of files.
        batch_size: images per forward/backward pass.

    Returns:
        :class:`ExplainResult`. Each row: ``path``, ``predicted`` (class name), ``confidence``
        (its probability), ``overlay`` (the PNG written), ``lung_fraction``
        (:func:`lung_saliency_fraction`, None without a lung mask or without saliency).

    The lung outline and fraction come from ``masks``, else ``seg_model``, else the classifier's
    own segmenter when it is lung-focused (the masks it crops or masks with), else there is
    none. The map explains the predicted class on the image as a lung-focused model sees it in
    ``covidcxr predict`` (its segmenter's lungs, not ``masks``), so predictions agree with it.
    Unreadable files are skipped and listed; files are processed in chunks of :data:`CHUNK`.
    """
    from covidcxr.data.overlay import save_overlay
    from covidcxr.inference.artifact import load_classifier
    from covidcxr.inference.predict import find_image_files
    from covidcxr.io import ImageReadError, failure_reason, read_image, read_mask

    _cam_class(method)
    classifier, segmenter = load_classifier(model, seg_model, instead="explain a classifier")
    lung_focused = classifier.lung_mode != "none"
    known_masks = {_path_key(image): Path(mask) for image, mask in (masks or {}).items()}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)

    files, missing = find_image_files(inputs)
    result = ExplainResult(failures=list(missing))
    names = classifier.class_names
    used_names: set[str] = set()
    for start in range(0, len(files), CHUNK):
        paths, images, outline_masks = [], [], []
        for path in files[start : start + CHUNK]:
            try:
                image = read_image(path)
            except (ImageReadError, OSError) as error:
                result.failures.append((path, failure_reason(error)))
                continue
            mask = None
            mask_path = known_masks.get(_path_key(path))
            if mask_path is not None:
                try:
                    mask = read_mask(mask_path)
                except (ImageReadError, OSError) as error:
                    reason = f"lung mask of {path}: {failure_reason(error)}; drawn without it"
                    result.failures.append((mask_path, reason))
            paths.append(path)
            images.append(image)
            outline_masks.append(mask)
        if images:
            focus_masks = segmenter.predict_masks(images) if lung_focused else None
            if focus_masks is not None:
                outline_masks = [
                    known if known is not None else predicted
                    for known, predicted in zip(outline_masks, focus_masks, strict=True)
                ]
            elif segmenter is not None:
                # Only the images the dataset has no mask for need segmenting.
                unknown = [i for i, known in enumerate(outline_masks) if known is None]
                if unknown:
                    predicted = segmenter.predict_masks([images[i] for i in unknown])
                    for index, mask in zip(unknown, predicted, strict=True):
                        outline_masks[index] = mask
            maps, probabilities = saliency_maps(
                classifier, images, method, batch_size=batch_size, lung_masks=focus_masks
            )
            for path, image, saliency, mask, row in zip(
                paths, images, maps, outline_masks, probabilities, strict=True
            ):
                best = int(np.argmax(row))
                overlay = out / _unique_name(path.stem, method, used_names)
                save_overlay(overlay, saliency_overlay(image, saliency, mask))
                fraction = None if mask is None else lung_saliency_fraction(saliency, mask)
                result.rows.append(
                    {
                        "path": str(path),
                        "predicted": names[best],
                        "confidence": float(row[best]),
                        "overlay": str(overlay),
                        "lung_fraction": fraction,
                    }
                )
        if progress is not None:
            progress(min(len(files), start + CHUNK), len(files))
    return result


def _cam_class(method: str) -> type:
    """pytorch-grad-cam's class for ``method``."""
    if method not in METHODS:
        raise ValueError(f"method should be one of {', '.join(map(repr, METHODS))}, got {method!r}")
    from pytorch_grad_cam import GradCAM, GradCAMPlusPlus

    return GradCAM if method == "gradcam" else GradCAMPlusPlus


def _check_targets(targets: Sequence[int], count: int, num_classes: int) -> list[int]:
    targets = list(targets)
    if len(targets) != count:
        raise ValueError(
            f"targets should have one class index per image ({count}), got {len(targets)}"
        )
    for target in targets:
        valid = isinstance(target, int | np.integer) and not isinstance(target, bool)
        if not valid or not 0 <= target < num_classes:
            raise ValueError(
                f"targets should be class indices in [0, {num_classes - 1}], got {target!r}"
            )
    return [int(target) for target in targets]


def _model_inputs(
    classifier: Classifier,
    images: list[np.ndarray],
    lung_masks: Sequence[np.ndarray] | None,
) -> tuple[torch.Tensor, list[tuple[int, int, int, int] | None]]:
    """The uint8 ``(N, 1, S, S)`` network input (as :meth:`Classifier.prepare` makes it) and,
    for a lung crop, each image's crop box ``(top, bottom, left, right)`` (None: whole image)."""
    from covidcxr.data.lungs import focus_on_lungs, lung_bounding_box
    from covidcxr.data.transforms import resize_mask
    from covidcxr.inference.artifact import prepare_images

    mode = classifier.lung_mode
    if mode == "none":
        masks: Sequence[np.ndarray | None] = [None] * len(images)
    else:
        masks = classifier.segmenter.predict_masks(images) if lung_masks is None else lung_masks
        if len(masks) != len(images):
            raise ValueError(
                f"lung_masks should have one mask per image ({len(images)}), got {len(masks)}"
            )
    margin = float((classifier.card.lungs or {}).get("margin", 0.05))
    focused, boxes = [], []
    for image, mask in zip(images, masks, strict=True):
        focused.append(focus_on_lungs(image, mask, mode, margin))
        box = None
        if mode == "crop":
            # The same box focus_on_lungs cropped to (None when it left the image whole).
            box = lung_bounding_box(resize_mask(mask, image.shape), margin=margin)
        boxes.append(box)
    return prepare_images(focused, classifier.card.input_size), boxes


def _input_cams(
    classifier: Classifier,
    model_inputs: torch.Tensor,
    cam_class: type,
    targets: Sequence[int],
    batch_size: int,
) -> np.ndarray:
    """float32 ``(N, S, S)`` maps in ``[0, 1]`` at the network's input size."""
    import torch
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from covidcxr.inference.batched import normalise

    network = classifier.network
    layer_name = network.spec.target_layer
    layer = network.get_submodule(layer_name)
    device = next(network.parameters()).device
    cams = []
    try:
        # Grad-CAM needs autograd even when the caller runs under no_grad / inference_mode.
        with (
            torch.inference_mode(False),
            torch.enable_grad(),
            cam_class(model=network, target_layers=[layer]) as cam,
        ):
            for start in range(0, len(model_inputs), batch_size):
                batch = normalise(
                    model_inputs[start : start + batch_size].to(device),
                    classifier.card.mean,
                    classifier.card.std,
                    channels=classifier.card.in_channels,
                )
                # Frozen trunks have no trainable parameters before the target layer, so the
                # input must require grad for the layer's output (and its hooks) to get one.
                batch.requires_grad_(True)
                batch_targets = [
                    ClassifierOutputTarget(target) for target in targets[start : start + batch_size]
                ]
                try:
                    cams.append(cam(input_tensor=batch, targets=batch_targets))
                except IndexError as error:
                    # pytorch-grad-cam's __exit__ swallows IndexError; raise something it won't.
                    raise RuntimeError(
                        f"Grad-CAM failed at layer {layer_name!r} of {network.spec.name}: {error}"
                    ) from error
    finally:
        # pytorch-grad-cam's backward filled the trainable parameters' .grad; leave none behind.
        network.zero_grad(set_to_none=True)
    result = np.concatenate(cams).astype(np.float32, copy=False)
    if not np.isfinite(result).all():
        raise RuntimeError(
            f"Grad-CAM of {network.spec.name} at {layer_name!r} is not finite (NaN or inf in "
            "the network's activations or gradients)"
        )
    return result


def _to_image(
    cam: np.ndarray, shape: tuple[int, int], box: tuple[int, int, int, int] | None
) -> np.ndarray:
    """A map at the network's input size put back on the original ``(H, W)`` image."""
    if box is None:
        return _resize_map(cam, shape)
    top, bottom, left, right = box
    result = np.zeros(shape, dtype=np.float32)
    result[top:bottom, left:right] = _resize_map(cam, (bottom - top, right - left))
    return result


def _resize_map(values: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A heatmap resized to ``(height, width)``, kept in ``[0, 1]`` (the clip only removes float
    error: :func:`~covidcxr.data.transforms.resize_float_map` stays within the input's range)."""
    from covidcxr.data.transforms import resize_float_map

    return np.clip(resize_float_map(values, size), 0.0, 1.0)


def _check_map(values: np.ndarray, name: str) -> np.ndarray:
    if not isinstance(values, np.ndarray):
        raise ValueError(f"{name} should be a numpy array (H, W), got {type(values).__name__}")
    if values.ndim != 2 or values.dtype.kind != "f" or values.size == 0:
        raise ValueError(
            f"{name} should be a non-empty float array of shape (H, W), got {values.dtype} with "
            f"shape {values.shape}"
        )
    if not np.isfinite(values).all():
        raise ValueError(f"{name} should be finite, got NaN or inf values")
    return values


def _check_fraction(value: float | None) -> float | None:
    if value is None:
        return None
    valid = isinstance(value, int | float | np.floating) and not isinstance(value, bool)
    if not valid or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"fractions should be None or numbers in [0, 1], got {value!r}")
    return float(value)


def _label_index(label: int | str, names: list[str]) -> int:
    if isinstance(label, str):
        if label not in names:
            raise ValueError(f"label {label!r} is not one of the class names {names}")
        return names.index(label)
    is_index = isinstance(label, int | np.integer) and not isinstance(label, bool)
    if is_index and 0 <= label < len(names):
        return int(label)
    raise ValueError(
        f"labels should be class indices in [0, {len(names) - 1}] or class names, got {label!r}"
    )


def _path_key(path: str | Path) -> Path:
    """One spelling per file, so that relative and absolute paths to it match."""
    return Path(path).expanduser().resolve()


def _unique_name(stem: str, method: str, used: set[str]) -> str:
    """``<stem>_<method>.png``, numbered when taken (case-insensitively: macOS, Windows)."""
    name = f"{stem}_{method}.png"
    number = 2
    while name.lower() in used:
        name = f"{stem}_{method}_{number}.png"
        number += 1
    used.add(name.lower())
    return name
