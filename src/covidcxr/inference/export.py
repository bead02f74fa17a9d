"""ONNX export, and models that run on ONNX Runtime instead of PyTorch.

:func:`export_onnx` writes a saved model as one ``.onnx`` file that holds the whole inference
path after resizing: the uint8 image ``(N, 1, S, S)`` goes in (the same tensor
:meth:`covidcxr.inference.artifact.Classifier.prepare` makes), the normalisation, the network and,
for a classifier, the temperature-calibrated softmax run inside the graph. The model card travels in
the file's metadata (``covidcxr.card``), so :func:`load_onnx` needs nothing else. A classifier
trained on the lungs alone (``--lungs crop|mask``) needs its lung segmenter: it is exported
beside it as ``<name>.segmenter.onnx``.

Every export is checked before the file is put in place: ONNX Runtime and PyTorch run the same
images and the largest absolute difference between their probabilities must stay below
:data:`PARITY_TOLERANCE`.

Graph inputs and outputs:

==============  ==========================  =============================================
name            shape, type                 what
==============  ==========================  =============================================
image           (N, 1, S, S) uint8          resized grey image, bright = dense
probabilities   (N, C) float32              classifier: softmax(logits / temperature)
logits          (N, C) float32              classifier: raw network output
ood_score       (N,) float32                classifier with a feature reference: its
                                            out-of-distribution score
                                            (:mod:`covidcxr.inference.ood`)
probabilities   (N, S, S) float32           segmenter: lung probability per pixel
==============  ==========================  =============================================
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from covidcxr.inference.artifact import Classifier, ModelCard, Segmenter

__all__ = [
    "ONNX_FILE",
    "PARITY_TOLERANCE",
    "SEGMENTER_TOLERANCE",
    "ExportResult",
    "OnnxClassifier",
    "OnnxSegmenter",
    "ParityError",
    "export_onnx",
    "load_onnx",
]

ONNX_FILE = "model.onnx"
"""Where :func:`export_onnx` writes by default: beside ``model.json`` in the model folder."""

PARITY_TOLERANCE = 1e-4
"""Largest allowed |ONNX Runtime - PyTorch| on any class probability of the check images."""

SEGMENTER_TOLERANCE = 1e-3
"""The same for a lung segmenter's per-pixel probabilities. A U-Net's ~16k outputs per image
differ by up to ~1.2e-4 between the two runtimes (float32 sums in another order; measured on
the demo's unet-lite and the real sample), which flips a handful of pixels that sit exactly at
the threshold: 18 of 34 million there."""

OOD_TOLERANCE = 1e-3
"""Largest allowed relative difference of the out-of-distribution score (float32 in the graph,
float64 in PyTorch's path)."""

CARD_KEY = "covidcxr.card"
SEGMENTER_SUFFIX = ".segmenter.onnx"
OPSET = 18


class ParityError(ValueError):
    """ONNX Runtime's probabilities differ from PyTorch's by more than the tolerance."""


@dataclass
class ExportResult:
    """What :func:`export_onnx` wrote and how closely ONNX Runtime matched PyTorch."""

    path: Path
    max_abs_difference: float
    images_checked: int
    segmenter_path: Path | None = None
    segmenter_max_abs_difference: float | None = None
    end_to_end_max_abs_difference: float | None = None


def export_onnx(
    model: str | Path,
    out: str | Path | None = None,
    check_images: Sequence[np.ndarray] | None = None,
    tolerance: float = PARITY_TOLERANCE,
) -> ExportResult:
    """Export the saved model at ``model`` (run folder, model folder or ``model.json``) to ONNX.

    The classifier's probabilities must match PyTorch's within ``tolerance`` on the resized
    check images; a lung-focused classifier's segmenter, within :data:`SEGMENTER_TOLERANCE` per
    pixel. For such a classifier the whole path (segment, focus, classify) is compared as well
    and reported (``end_to_end_max_abs_difference``), not enforced: where a lung-mask pixel at
    the threshold flips, the crop moves by a pixel.

    Args:
        model: a classifier or a lung segmenter saved by covidcxr.
        out: the ``.onnx`` file to write; default ``model.onnx`` in the model folder (for a
            pretrained model, ``<name>.onnx`` in the current folder).
        check_images: images in the covidcxr convention (float ``(H, W)`` in [0, 1]) to compare
            ONNX Runtime with PyTorch on; default: 8 seeded synthetic images.
        tolerance: the largest allowed absolute difference of any probability.

    Raises:
        ParityError: the two runtimes disagree beyond ``tolerance``; nothing is written and an
            earlier export at ``out`` (and its segmenter) is left as it was.
    """
    from covidcxr import zoo
    from covidcxr.inference.artifact import load_model

    loaded = load_model(model)
    if out is not None:
        target = Path(out)
    elif zoo.is_pretrained(loaded.folder):  # never write into the installed package
        target = Path.cwd() / f"{loaded.folder.name}.onnx"
    else:
        target = loaded.folder / ONNX_FILE
    if target.suffix.lower() != ".onnx":
        raise ValueError(f"{target}: the output should be a .onnx file")
    images = list(check_images) if check_images is not None else _synthetic_images()
    if not images:
        raise ValueError("check_images is empty: give at least one image to compare runtimes on")
    result = ExportResult(target, 0.0, len(images))
    parts = [(loaded, target)]
    if isinstance(loaded, Classifier) and loaded.lung_mode != "none":
        segmenter_path = target.with_name(target.name.removesuffix(".onnx") + SEGMENTER_SUFFIX)
        parts.insert(0, (loaded.segmenter, segmenter_path))
        result.segmenter_path = segmenter_path
    partials = [path.with_name(f".{path.name}.partial") for _, path in parts]
    try:
        differences = [
            _export_checked(
                part, partial, images, tolerance if part is loaded else SEGMENTER_TOLERANCE, path
            )
            for (part, path), partial in zip(parts, partials, strict=True)
        ]
        if len(parts) == 2:  # the whole lung-focused path: segment, focus, classify
            exported = OnnxClassifier(_session(partials[1]), loaded.card, partials[1])
            exported.use_segmenter(
                OnnxSegmenter(_session(partials[0]), loaded.segmenter.card, partials[0])
            )
            whole = np.abs(exported.predict_proba(images) - loaded.predict_proba(images))
            result.end_to_end_max_abs_difference = float(whole.max())
        # Every file passed: only now replace any earlier export, the classifier last.
        for (_, path), partial in zip(parts, partials, strict=True):
            os.replace(partial, path)
    finally:
        for partial in partials:
            partial.unlink(missing_ok=True)
    result.max_abs_difference = differences[-1]
    if result.segmenter_path is not None:
        result.segmenter_max_abs_difference = differences[0]
    return result


def load_onnx(path: str | Path) -> OnnxClassifier | OnnxSegmenter:
    """Load an exported model for ONNX Runtime: a ``.onnx`` file, or a model / run folder
    holding ``model.onnx``."""
    from covidcxr import zoo

    path = Path(path)
    candidates = [path] if path.suffix.lower() == ".onnx" else [path / ONNX_FILE]
    if path.is_dir():
        candidates.append(path / "model" / ONNX_FILE)
    if str(path) in zoo.pretrained_names():  # where `covidcxr export NAME` puts it
        candidates.append(Path.cwd() / f"{path}.onnx")
    found = next((candidate for candidate in candidates if candidate.is_file()), None)
    if found is None:
        raise FileNotFoundError(
            f"{path}: no ONNX model here (looked for {', '.join(map(str, candidates))}); "
            f"create it with `covidcxr export {path}`"
        )
    session = _session(found)
    raw = session.get_modelmeta().custom_metadata_map.get(CARD_KEY)
    if raw is None:
        raise ValueError(
            f"{found}: an ONNX file without a covidcxr model card; export it with `covidcxr "
            "export` so its classes and preprocessing travel with it"
        )
    known = ModelCard.__dataclass_fields__
    card = ModelCard(**{key: value for key, value in json.loads(raw).items() if key in known})
    kind = OnnxSegmenter if card.task == "segmentation" else OnnxClassifier
    return kind(session, card, found)


class OnnxClassifier(Classifier):
    """A :class:`~covidcxr.inference.artifact.Classifier` whose network runs on ONNX Runtime: the
    same preprocessing (``prepare``), the same calibrated probabilities."""

    def __init__(self, session: Any, card: ModelCard, path: Path) -> None:
        super().__init__(None, card, path.parent)
        self.session, self.path = session, path

    def _weights_digest(self) -> tuple[Path, str]:
        """The ``.onnx`` file and the SHA-256 of its bytes (see :meth:`Classifier.identity`)."""
        import hashlib

        return self.path, hashlib.sha256(self.path.read_bytes()).hexdigest()

    @property
    def segmenter(self) -> Segmenter:
        if self._segmenter is None:
            bundled = self.path.with_name(self.path.name.removesuffix(".onnx") + SEGMENTER_SUFFIX)
            if not bundled.is_file():
                raise ValueError(
                    f"{self.path}: this classifier sees only the lungs (--lungs {self.lung_mode}) "
                    f"and {bundled.name} is missing beside it; export the model again"
                )
            self.use_segmenter(load_onnx(bundled))
        assert self._segmenter is not None
        return self._segmenter

    def use_segmenter(self, segmenter: str | Path | Segmenter) -> None:
        if isinstance(segmenter, str | Path) and Path(segmenter).suffix.lower() == ".onnx":
            segmenter = load_onnx(segmenter)
        super().use_segmenter(segmenter)

    def analyse_prepared(self, images: Any, batch_size: int = 64, progress: Any = None) -> Any:
        from covidcxr.inference.artifact import Analysis

        if not self.card.ood:
            return Analysis(_run(self.session, images, batch_size, progress))
        outputs = ["probabilities", "ood_score"]
        probabilities, scores = _run(self.session, images, batch_size, progress, outputs)
        threshold = float(self.card.ood.get("threshold", 1.0))
        return Analysis(probabilities, scores, scores > threshold, threshold)

    def __repr__(self) -> str:
        return f"OnnxClassifier({self.card.model!r}, classes={self.class_names}, from {self.path})"


class OnnxSegmenter(Segmenter):
    """A :class:`~covidcxr.inference.artifact.Segmenter` running on ONNX Runtime."""

    def __init__(self, session: Any, card: ModelCard, path: Path) -> None:
        super().__init__(None, card, path.parent)
        self.session, self.path = session, path

    def predict_probabilities(self, images: Sequence[np.ndarray], batch_size: int = 8) -> Any:
        import torch

        from covidcxr.inference.artifact import prepare_images

        prepared = prepare_images(images, self.card.input_size)
        return torch.from_numpy(_run(self.session, prepared, batch_size))

    def __repr__(self) -> str:
        return f"OnnxSegmenter({self.card.model!r}, from {self.path})"


# --------------------------------------------------------------------------------------------


def _export_checked(
    loaded: Classifier | Segmenter,
    partial: Path,
    images: list[np.ndarray],
    tolerance: float,
    target: Path,
) -> float:
    """Export ``loaded`` to ``partial`` (named ``target`` in messages) and compare ONNX Runtime
    with PyTorch on ``images``; the worst difference is returned."""
    import onnx

    from covidcxr.inference.artifact import prepare_images

    partial.parent.mkdir(parents=True, exist_ok=True)
    _trace(loaded, partial)
    proto = onnx.load(str(partial))
    card = asdict(loaded.card)
    onnx.helper.set_model_props(proto, {CARD_KEY: json.dumps(card, default=str)})
    proto.doc_string = (
        f"covidcxr {loaded.card.model} ({loaded.card.task}); research use only, not a "
        "diagnostic device"
    )
    onnx.checker.check_model(proto)
    onnx.save(proto, str(partial))
    prepared = prepare_images(images, loaded.card.input_size)
    session = _session(partial)
    if isinstance(loaded, Classifier):
        analysis = loaded.analyse_prepared(prepared, batch_size=16)
        reference = analysis.probabilities
        if analysis.ood_scores is not None:
            scores = _run(session, prepared, 16, names=["ood_score"])[0]
            relative = np.abs(scores - analysis.ood_scores) / np.maximum(analysis.ood_scores, 1)
            if not float(relative.max()) < OOD_TOLERANCE:
                raise ParityError(
                    f"{target}: ONNX Runtime and PyTorch disagree by {relative.max():.3g} "
                    f"(relative) on the out-of-distribution scores of {len(images)} images "
                    f"(tolerance {OOD_TOLERANCE:g}); nothing written"
                )
    else:
        reference = loaded.predict_probabilities(images).numpy()
    exported = _run(session, prepared, 16)
    difference = float(np.abs(exported - reference).max())
    if not difference < tolerance:
        raise ParityError(
            f"{target}: ONNX Runtime and PyTorch disagree by {difference:.3g} on the "
            f"probabilities of {len(images)} images (tolerance {tolerance:g}); nothing written"
        )
    return difference


def _deployable(loaded: Classifier | Segmenter) -> Any:
    """The ``nn.Module`` that is traced: uint8 image in, probabilities (and logits) out."""
    import torch
    from torch import nn

    from covidcxr.inference.batched import normalise

    card = loaded.card
    segmenter = isinstance(loaded, Segmenter)
    reference = None if segmenter else loaded.reference

    class Deployed(nn.Module):
        def __init__(self, network: nn.Module) -> None:
            super().__init__()
            self.network = network
            self.scorer = None if reference is None else reference.torch_scorer()

        def forward(self, image: torch.Tensor) -> Any:
            batch = normalise(image, card.mean, card.std, card.in_channels)
            if segmenter:
                return torch.sigmoid(self.network(batch))[:, 0]
            features = self.network.forward_features(batch)
            logits = self.network.forward_head(features)
            probabilities = torch.softmax(logits / card.temperature, dim=1)
            if self.scorer is None:
                return probabilities, logits
            return probabilities, logits, self.scorer(features, image)

    return Deployed(loaded.network).eval()


def _trace(loaded: Classifier | Segmenter, path: Path) -> None:
    import torch

    module = _deployable(loaded)
    size = loaded.card.input_size
    example = torch.zeros((2, 1, size, size), dtype=torch.uint8)
    outputs = ["probabilities"] if isinstance(loaded, Segmenter) else ["probabilities", "logits"]
    if module.scorer is not None:
        outputs.append("ood_score")
    # The exporter prints its progress and warns about opsets and decompositions: not news.
    with warnings.catch_warnings(), torch.no_grad(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (example,),
            str(path),
            input_names=["image"],
            output_names=outputs,
            opset_version=OPSET,
            dynamo=True,
            dynamic_shapes=({0: torch.export.Dim("batch")},),
            external_data=False,
            verbose=False,
        )


def _session(path: Path) -> Any:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only
    try:
        return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own untyped exceptions
        raise ValueError(f"{path}: ONNX Runtime cannot load this file ({error})") from None


def _run(
    session: Any,
    images: Any,
    batch_size: int,
    progress: Any = None,
    names: Sequence[str] | None = None,
) -> Any:
    """The ``probabilities`` output of ``session`` over uint8 ``images`` (N, 1, S, S), in
    batches; with ``names``, a list of those outputs instead."""
    array = images.numpy() if hasattr(images, "numpy") else np.asarray(images)
    if array.dtype != np.uint8 or array.ndim != 4 or array.shape[1] != 1:
        raise ValueError(f"images should be uint8 (N, 1, S, S), got {array.dtype} {array.shape}")
    wanted = list(names) if names is not None else ["probabilities"]
    available = {output.name: output for output in session.get_outputs()}
    missing = [name for name in wanted if name not in available]
    if missing:
        raise ValueError(
            f"this ONNX file has no {', '.join(missing)} output (exported by an older covidcxr); "
            "export the model again"
        )
    outputs: list[list[np.ndarray]] = [[] for _ in wanted]
    total = len(array)
    for start in range(0, total, batch_size):
        batch = np.ascontiguousarray(array[start : start + batch_size])
        for collected, result in zip(outputs, session.run(wanted, {"image": batch}), strict=True):
            collected.append(result)
        if progress is not None:
            progress(min(total, start + batch_size), total)
    joined = []
    for name, collected in zip(wanted, outputs, strict=True):
        if collected:
            joined.append(np.concatenate(collected).astype(np.float32, copy=False))
        else:
            shape = [int(s) if isinstance(s, int) else 0 for s in available[name].shape[1:]]
            joined.append(np.zeros((0, *shape), dtype=np.float32))
    return joined if names is not None else joined[0]


def _synthetic_images(count: int = 8) -> list[np.ndarray]:
    """Seeded stand-ins for X-rays when no check images are given: smooth gradients with
    noise, so every intensity range and some texture reach the network."""
    generator = np.random.default_rng(0)
    images = []
    for index in range(count):
        size = 160 + 24 * index
        ramp = np.linspace(0.0, 1.0, size, dtype=np.float32)
        base = 0.5 * ramp[None, :] + 0.3 * ramp[::-1, None]
        noise = generator.random((size, size), dtype=np.float32) * 0.2
        images.append(np.clip(base + noise, 0.0, 1.0))
    return images
