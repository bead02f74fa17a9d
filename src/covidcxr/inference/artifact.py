"""The saved model: weights plus everything needed to use them, in one folder.

A model folder holds

* ``model.safetensors`` — the network's weights (safetensors: no pickle, safe to load);
* ``model.json`` — the model card: model name, class names, input size, channels and
  normalisation, how images are preprocessed, the temperature used to calibrate probabilities,
  the resolved training config and the test metrics.

:func:`load_model` needs nothing else: no dataset, no run folder, no network access.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from covidcxr.atomic import write_text
from covidcxr.inference.ood import OOD_FILE

ARTIFACT_FORMAT = 1
WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "model.json"
SEGMENTER_DIR = "segmenter"
PREPROCESSING = (
    "covidcxr.io.read_image (grey float in [0, 1], bright = dense), then "
    "covidcxr.data.transforms.resize_image to input_size x input_size (stretch, anti-aliased "
    "bilinear, uint8), grey repeated to in_channels, then (x / 255 - mean) / std"
)


NOTICE = (
    "Research tool, not a diagnostic device: covidcxr has not been validated for clinical use. "
    "Its output must not guide the diagnosis or treatment of any patient."
)
INTENDED_USE = (
    "Research on frontal (PA/AP) chest X-rays: reproducing and probing published models, "
    "studying shortcuts and dataset bias. " + NOTICE
)
PHANTOM_WARNING = (
    "This model was trained on synthetic phantoms only, never on a real X-ray: its answers on "
    "real films mean nothing. Use a pretrained model (`covidcxr models`) or train on real data."
)
UNTRAINED_WARNING = (
    "This model is untrained (random weights), saved for rehearsals and tests: its answers mean "
    "nothing."
)
UNKNOWN_DATA_WARNING = (
    "This model's card does not say what it was trained on (it predates training-data "
    "records): judge its answers with care."
)


@dataclass(frozen=True)
class ModelCard:
    """What ``model.json`` says about a saved model.

    ``model`` is the registry architecture (``seed-cnn``); ``name`` what the saved model is
    called (``seed-cnn-db`` for a pretrained one, else the run folder's name).
    ``training_data`` records what it has seen: the dataset's own card
    (``covidcxr-dataset.json``: sources, commits, exclusions, ``synthetic``), the class counts
    of each split and how the split was made. ``ood`` summarises the out-of-distribution
    check (:mod:`covidcxr.inference.ood`) saved beside the weights.
    """

    model: str
    class_names: list[str]
    input_size: int
    in_channels: int
    mean: list[float]
    std: list[float]
    target_layer: str
    temperature: float = 1.0
    task: str = "classification"
    threshold: float = 0.5
    postprocess: bool = False
    lungs: dict[str, Any] = field(default_factory=lambda: {"mode": "none"})
    preprocessing: str = PREPROCESSING
    config: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    name: str = ""
    training_data: dict[str, Any] = field(default_factory=dict)
    intended_use: str = INTENDED_USE
    licence: str = ""
    ood: dict[str, Any] = field(default_factory=dict)
    covidcxr_version: str = ""
    format: int = ARTIFACT_FORMAT

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def synthetic(self) -> bool:
        """True when the model never saw a real X-ray (trained on phantoms)."""
        return bool(self.training_data.get("synthetic", False))

    def warnings(self) -> list[str]:
        """Plain sentences every front door shows beside this model's answers."""
        if self.training_data.get("untrained"):
            return [UNTRAINED_WARNING]
        if self.synthetic:
            return [PHANTOM_WARNING]
        if not self.training_data:  # a user's own data needs no dataset card; None is old
            return [UNKNOWN_DATA_WARNING]
        return []

    @classmethod
    def from_spec(cls, spec: Any, class_names: Sequence[str], **fields: Any) -> ModelCard:
        """The card of a network built from registry entry ``spec`` (a
        :class:`covidcxr.models.registry.ModelSpec`): name, task, input size, channels,
        normalisation and Grad-CAM layer from the spec; anything else from ``fields``."""
        return cls(
            model=spec.name,
            class_names=list(class_names),
            input_size=spec.input_size,
            in_channels=spec.in_channels,
            mean=list(spec.mean),
            std=list(spec.std),
            target_layer=spec.target_layer,
            task=spec.task,
            **fields,
        )


def save_classifier(
    directory: str | Path,
    network: Any,
    card: ModelCard,
) -> Path:
    """Write ``network``'s weights and ``card`` into ``directory`` (created), each file
    atomically. Returns the folder."""
    from covidcxr import __version__
    from covidcxr.tensorfile import save_tensors

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {
        name: tensor.detach().cpu().contiguous() for name, tensor in network.state_dict().items()
    }
    save_tensors(
        directory / WEIGHTS_FILE, state, metadata={"model": card.model, "format": str(card.format)}
    )
    card_data = asdict(card) | {"covidcxr_version": __version__}
    _write_json(directory / CARD_FILE, card_data)
    return directory


def save_untrained(
    directory: str | Path,
    model: str,
    class_names: Sequence[str] = ("Normal", "COVID", "Viral Pneumonia"),
    seed: int = 0,
    **card_fields: Any,
) -> Path:
    """Save registry model ``model`` with seeded, freshly initialised weights (ImageNet weights
    are not fetched) as ``covidcxr train`` would save it: for timing inference, rehearsing an
    export or a deployment, and tests, never for predictions. ``card_fields`` go to the card."""
    import torch

    from covidcxr.models import create_model, get_model_spec

    torch.manual_seed(seed)
    card_fields.setdefault("training_data", {"untrained": True, "synthetic": False})
    spec = get_model_spec(model)
    if spec.task == "segmentation":
        network = create_model(model, weights=None)
    else:
        network = create_model(model, num_classes=len(class_names), weights=None)
    return save_classifier(
        directory, network, ModelCard.from_spec(spec, class_names, **card_fields)
    )


def read_card(path: str | Path) -> tuple[ModelCard, Path]:
    """The card of the model at ``path`` (a model folder, a run folder holding ``model/``, the
    ``model.json`` / ``model.safetensors`` file, or the name of a pretrained model: see
    :mod:`covidcxr.zoo`) and the model folder."""
    from covidcxr import zoo

    path = zoo.resolve(path)
    candidates = [path, path / "model"] if path.is_dir() else [path.parent]
    for folder in candidates:
        if (folder / CARD_FILE).is_file():
            break
    else:
        names = ", ".join(zoo.pretrained_names())
        pretrained = f"; or a pretrained model's name ({names})" if names else ""
        raise FileNotFoundError(
            f"{path}: no saved model here (expected {CARD_FILE} and {WEIGHTS_FILE} in it or in "
            f"its model/ folder, as `covidcxr train` writes them{pretrained})"
        )
    try:
        data = json.loads((folder / CARD_FILE).read_text(encoding="utf-8"))
        if data.get("format", 0) > ARTIFACT_FORMAT:
            raise ValueError(
                f"format {data['format']} is newer than this covidcxr reads ({ARTIFACT_FORMAT}); "
                "upgrade covidcxr"
            )
        known = ModelCard.__dataclass_fields__
        card = ModelCard(**{key: value for key, value in data.items() if key in known})
    except (json.JSONDecodeError, TypeError, ValueError) as error:
        raise ValueError(f"{folder / CARD_FILE}: not a valid model card ({error})") from None
    return card, folder


class Classifier:
    """A loaded classifier: ``network`` (eval mode, CPU) plus its :class:`ModelCard`.

    ``predict_proba`` takes file paths or images in the covidcxr convention (float (H, W) in
    [0, 1]) and returns probabilities ``(N, C)`` in ``card.class_names`` order, calibrated by
    the card's temperature.
    """

    def __init__(self, network: Any, card: ModelCard, folder: Path) -> None:
        self.network, self.card, self.folder = network, card, folder
        self._segmenter: Segmenter | None = None
        self._reference: Any = None

    @property
    def reference(self) -> Any:
        """The :class:`covidcxr.inference.ood.FeatureReference` saved with the model, or None
        (models saved before the check existed, untrained ones)."""
        if self._reference is None and self.card.ood:
            from covidcxr.inference.ood import load_reference

            self._reference = load_reference(self.folder / self.card.ood.get("file", OOD_FILE))
        return self._reference

    @property
    def class_names(self) -> list[str]:
        return list(self.card.class_names)

    def identity(self) -> dict[str, Any]:
        """Which model this is, for files its predictions go to: the registry model, the
        file's folder name, the weights file and the SHA-256 of its canonical bytes
        (:func:`covidcxr.tensorfile.file_digest`: the same weights give the same digest)."""
        weights, digest = self._weights_digest()
        return {
            "model": self.card.model,
            "name": weights.parent.name if weights.name == WEIGHTS_FILE else weights.name,
            "weights": str(weights),
            "sha256": digest,
            "class_names": self.class_names,
        }

    def _weights_digest(self) -> tuple[Path, str]:
        """The weights file and its digest (of the network itself when it was never saved)."""
        from covidcxr.tensorfile import canonical_bytes, file_digest

        weights = self.folder / WEIGHTS_FILE
        if weights.is_file():
            return weights, file_digest(weights)
        import hashlib

        from safetensors.torch import save

        state = {k: v.detach().cpu().contiguous() for k, v in self.network.state_dict().items()}
        return weights, hashlib.sha256(canonical_bytes(save(state))).hexdigest()

    @property
    def lung_mode(self) -> str:
        """What the classifier was trained to see: ``none``, ``crop`` or ``mask`` (lungs)."""
        return str((self.card.lungs or {}).get("mode", "none"))

    def use_segmenter(self, segmenter: str | Path | Segmenter) -> None:
        """Segment lungs with this model (for a classifier trained with --lungs crop/mask)."""
        loaded = segmenter if isinstance(segmenter, Segmenter) else load_model(segmenter)
        if not isinstance(loaded, Segmenter):
            raise ValueError(f"{segmenter}: not a lung segmentation model")
        self._segmenter = loaded

    @property
    def segmenter(self) -> Segmenter:
        """The lung segmenter this classifier's preprocessing needs: one set with
        :meth:`use_segmenter`, else the one saved inside the model folder."""
        if self._segmenter is None:
            bundled = self.folder / SEGMENTER_DIR
            if not (bundled / CARD_FILE).is_file():
                raise ValueError(
                    f"{self.folder}: this classifier sees only the lungs (--lungs "
                    f"{self.lung_mode}) and was trained on the dataset's own masks; pass a lung "
                    "segmentation model (--seg-model) to use it on other images"
                )
            self.use_segmenter(bundled)
        assert self._segmenter is not None
        return self._segmenter

    def focus(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """The images as the classifier was trained to see them (lung crop / mask)."""
        if self.lung_mode == "none":
            return list(images)
        from covidcxr.data.lungs import focus_on_lungs

        margin = float(self.card.lungs.get("margin", 0.05))
        masks = self.segmenter.predict_masks(images)
        return [
            focus_on_lungs(image, mask, self.lung_mode, margin)
            for image, mask in zip(images, masks, strict=True)
        ]

    def prepare(self, images: Sequence[np.ndarray]) -> Any:
        """uint8 tensor ``(N, 1, S, S)`` of images in the covidcxr convention, lung-focused as
        in training."""
        return prepare_images(self.focus(images), self.card.input_size)

    def predict_proba(
        self,
        inputs: Sequence[np.ndarray | str | Path],
        batch_size: int = 64,
        progress: Callable[[int, int], None] | None = None,
    ) -> np.ndarray:
        """Class probabilities ``(N, C)``; paths are read with :func:`covidcxr.io.read_image`
        (which raises for a bad file — use :func:`covidcxr.inference.predict.predict_files` to skip
        them)."""
        return self.analyse(inputs, batch_size, progress).probabilities

    def analyse(
        self,
        inputs: Sequence[np.ndarray | str | Path],
        batch_size: int = 64,
        progress: Callable[[int, int], None] | None = None,
    ) -> Analysis:
        """:meth:`predict_proba` plus the out-of-distribution check: an :class:`Analysis`
        whose ``unfamiliar[i]`` says that input ``i`` is unlike the training films."""
        from covidcxr.io import read_image

        images = [read_image(x) if isinstance(x, str | Path) else x for x in inputs]
        return self.analyse_prepared(self.prepare(images), batch_size, progress)

    def predict_prepared(
        self,
        images: Any,
        batch_size: int = 64,
        progress: Callable[[int, int], None] | None = None,
    ) -> np.ndarray:
        """Class probabilities ``(N, C)`` of uint8 images ``(N, 1, S, S)`` from :meth:`prepare`."""
        return self.analyse_prepared(images, batch_size, progress).probabilities

    def analyse_prepared(
        self,
        images: Any,
        batch_size: int = 64,
        progress: Callable[[int, int], None] | None = None,
    ) -> Analysis:
        """Probabilities ``(N, C)`` and, when the model has a feature reference, how unlike its
        training images each one is, from one forward pass over uint8 ``(N, 1, S, S)``."""
        from covidcxr.inference.batched import map_network, network_outputs

        checked = self.reference is not None
        joined = map_network(
            self.network,
            lambda batch: network_outputs(self.network, batch, self.card.temperature, checked),
            images,
            self.card.mean,
            self.card.std,
            batch_size,
            progress,
        ).numpy()
        classes = self.card.num_classes
        if joined.size == 0:
            joined = np.zeros((0, classes), dtype=np.float32)
        probabilities, features = joined[:, -classes:], joined[:, :-classes]
        reference = self.reference
        if reference is None:
            return Analysis(probabilities)
        if len(probabilities) == 0:
            return Analysis(probabilities, np.zeros(0), np.zeros(0, bool), 1.0)
        scores, unfamiliar = reference.flag(features, images)
        return Analysis(probabilities, scores, unfamiliar, 1.0)

    def __repr__(self) -> str:
        return f"Classifier({self.card.model!r}, classes={self.class_names}, from {self.folder})"


@dataclass
class Analysis:
    """What a classifier says of N images: calibrated ``probabilities`` (N, C) and, when the
    model carries a feature reference (:mod:`covidcxr.inference.ood`), ``ood_scores`` (N,) and
    ``unfamiliar`` (N,) bool: the score is above ``ood_threshold`` (1: the film's features or
    layout are further from the training films than 99.5 % of validation films)."""

    probabilities: np.ndarray
    ood_scores: np.ndarray | None = None
    unfamiliar: np.ndarray | None = None
    ood_threshold: float | None = None


class Segmenter:
    """A loaded lung-segmentation model: ``network`` (eval mode, CPU) plus its card.

    :meth:`predict_masks` returns one bool lung mask per image at that image's own size: the
    probability map is resized back (bilinear), thresholded at ``card.threshold`` and, when the
    card says so, post-processed (two largest components kept, holes filled).
    """

    def __init__(self, network: Any, card: ModelCard, folder: Path) -> None:
        self.network, self.card, self.folder = network, card, folder

    def predict_probabilities(self, images: Sequence[np.ndarray], batch_size: int = 8) -> Any:
        """Lung probabilities ``(N, S, S)`` at the model's input size."""
        from covidcxr.inference.batched import predict_probabilities

        prepared = prepare_images(images, self.card.input_size)
        return predict_probabilities(
            self.network, prepared, self.card.mean, self.card.std, batch_size
        )

    def predict_masks(
        self,
        images: Sequence[np.ndarray],
        batch_size: int = 8,
        postprocess: bool | None = None,
    ) -> list[np.ndarray]:
        """Bool lung masks, each the size of its input image (float (H, W) in [0, 1])."""
        from covidcxr.data.postprocess import postprocess_lungs
        from covidcxr.data.transforms import resize_float_map

        clean = self.card.postprocess if postprocess is None else postprocess
        masks = []
        for image, probability in zip(
            images, self.predict_probabilities(images, batch_size), strict=True
        ):
            resized = resize_float_map(probability.numpy(), image.shape)
            mask = resized >= self.card.threshold
            masks.append(postprocess_lungs(mask) if clean else mask)
        return masks

    def __repr__(self) -> str:
        return f"Segmenter({self.card.model!r}, from {self.folder})"


def prepare_images(images: Sequence[np.ndarray], input_size: int) -> Any:
    """uint8 tensor ``(N, 1, S, S)`` of images in the covidcxr convention, resized exactly as
    the training cache does."""
    import torch

    from covidcxr.data.transforms import resize_image

    size = (input_size, input_size)
    if not images:
        return torch.zeros((0, 1, *size), dtype=torch.uint8)
    stacked = np.stack([resize_image(image, size) for image in images])
    return torch.from_numpy(stacked).unsqueeze(1)


def load_model(path: str | Path) -> Classifier | Segmenter:
    """Load a saved model (folder, run folder, one of its two files, or the name of a pretrained
    model: ``covidcxr models``) for inference on CPU: a :class:`Classifier` or, for a
    segmentation model, a :class:`Segmenter`."""
    from safetensors.torch import load_file

    from covidcxr.models import create_model

    card, folder = read_card(path)
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise FileNotFoundError(f"{weights}: the model's weights are missing")
    if card.task == "segmentation":
        network = create_model(card.model, weights=None)
    else:
        network = create_model(card.model, num_classes=card.num_classes, weights=None)
    state = load_file(str(weights))
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise ValueError(f"{weights}: weights do not fit a {card.model} ({error})") from None
    network.eval()
    if card.task != "segmentation":
        # oneDNN's CPU convolutions are fastest on NHWC: seed-cnn answers in less than half
        # the time at batch 1 (benchmarks/bench_inference.py). U-Nets were slower so, and stay.
        import torch

        network.to(memory_format=torch.channels_last)
    kind = Segmenter if card.task == "segmentation" else Classifier
    return kind(network, card, folder)


def load_classifier(
    model: str | Path | Classifier,
    seg_model: str | Path | Segmenter | None = None,
    *,
    instead: str = "name a classifier",
) -> tuple[Classifier, Segmenter | None]:
    """A classifier and the lung segmenter that goes with it: what every front door loads.

    ``model`` and ``seg_model`` are what :func:`load_model` takes, or models already loaded. The
    segmenter is ``seg_model`` when given (and the classifier segments with it when it was
    trained on the lungs only), else, for such a classifier, the one saved with it; else None.
    ValueError names the file when ``model`` is a segmenter (``instead`` says what to do) or
    ``seg_model`` is not one, and when a lung-focused classifier has no segmenter at all."""
    classifier = model if isinstance(model, Classifier) else load_model(model)
    if not isinstance(classifier, Classifier):
        raise ValueError(f"{model}: is a lung segmentation model; {instead}")
    segmenter = None if seg_model is None else load_segmenter(seg_model)
    if classifier.lung_mode != "none":
        if segmenter is not None:
            classifier.use_segmenter(segmenter)
        segmenter = classifier.segmenter  # fails now, saying how to fix it
    return classifier, segmenter


def load_segmenter(model: str | Path | Segmenter) -> Segmenter:
    """A lung segmenter from what :func:`load_model` takes (or one already loaded)."""
    segmenter = model if isinstance(model, Segmenter) else load_model(model)
    if not isinstance(segmenter, Segmenter):
        raise ValueError(
            f"{model}: is a {segmenter.card.task} model, not a lung segmentation model "
            "(train one with `covidcxr segment train`)"
        )
    return segmenter


def _write_json(path: Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, default=_json_default))


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
