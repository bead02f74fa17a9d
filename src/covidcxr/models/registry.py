"""The model registry: one string name per network, its spec, and ``create_model``.

Two tasks share it: classifiers (``task="classification"``: images -> class logits) and
segmentation networks (``task="segmentation"``: images -> per-pixel mask logits).

Families register themselves with :func:`register` in their own module (``seed_cnn.py``,
``transfer.py``, ``unet.py``); those modules are imported on the first registry lookup, so that
listing the names stays cheap and torchvision / timm / MONAI are imported only when a network
that needs them is built. Names are listed family by family in ``_FAMILY_MODULES`` order
(paper models first), whichever family module happened to be imported first.
"""

from __future__ import annotations

import difflib
import enum
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import import_module
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, TypeAlias

from covidcxr.models.base import ClassifierNetwork

if TYPE_CHECKING:
    from covidcxr.models.unet import SegmentationNetwork

# Modules whose import registers models, in listing order; imported lazily by ``_registry()``.
_FAMILY_MODULES: tuple[str, ...] = (
    "covidcxr.models.seed_cnn",
    "covidcxr.models.transfer",
    "covidcxr.models.unet",
)

# The tasks a network can serve, with create_model's num_classes when none is given.
_DEFAULT_NUM_CLASSES: Mapping[str, int] = MappingProxyType({"classification": 3, "segmentation": 1})
TASKS: tuple[str, ...] = tuple(_DEFAULT_NUM_CLASSES)
"""Values of :attr:`ModelSpec.task`: ``"classification"`` and ``"segmentation"``."""


@dataclass(frozen=True)
class ModelSpec:
    """What the rest of covidcxr needs to know about a registered network.

    Attributes:
        name: the registry name, e.g. ``"seed-cnn"``.
        input_size: side of the square input image in pixels (images are resized to it).
        in_channels: channels of the input tensor: 3 for the classifiers (grey images are
            repeated to RGB), 1 for the segmentation networks (grey as it is).
        mean, std: per-channel normalisation applied to images in [0, 1] before the network:
            ``x = (image - mean) / std``; one value per input channel.
        target_layer: dotted path of the module Grad-CAM hooks, for
            ``network.get_submodule(target_layer)``; its output is a (B, C, h, w) activation.
        frozen_trunk: True when everything before the head is frozen (no trainable
            parameters, always in eval mode), so ``forward_features`` can be cached (always
            False for segmentation networks, which have no head).
        default_weights: what ``create_model`` loads when no ``weights`` is given:
            ``"imagenet"`` or None (random initialisation).
        defaults: the training defaults for this model: ``max_epochs``, ``fractions``
            (train, val, test), ``batch_size``, ``learning_rate``, ``patience`` (early
            stopping), ``lr_schedule``.
        presets: named sets of settings laid over ``defaults`` (``--preset NAME``); ``paper``
            is the paper's own protocol where it differs from covidcxr's defaults.
        description: one line for ``covidcxr models`` listings.
        test_only: tiny networks for fast tests, hidden from ``list_models()`` by default.
        task: ``"classification"`` (a :class:`ClassifierNetwork`: (B, C, S, S) images ->
            (B, num_classes) logits) or ``"segmentation"`` (a ``SegmentationNetwork``: (B, C,
            H, W) images -> (B, 1, H, W) mask logits).
        stages: the frozen trunk's parts in forward order, each a tuple of submodule names
            relative to the trunk; ``--fine-tune N`` trains the last N (empty: the model
            cannot be fine-tuned).

    Raises:
        ValueError: ``task`` is not one of :data:`TASKS`, or ``mean`` / ``std`` do not have
            one value per input channel.
    """

    name: str
    input_size: int
    in_channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    target_layer: str
    frozen_trunk: bool
    default_weights: str | None
    defaults: Mapping[str, Any] = field(hash=False)
    description: str
    test_only: bool = False
    task: str = "classification"
    stages: tuple[tuple[str, ...], ...] = ()
    presets: Mapping[str, Mapping[str, Any]] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(
                f"model {self.name!r}: task should be one of {', '.join(TASKS)}, got {self.task!r}"
            )
        if not len(self.mean) == len(self.std) == self.in_channels:
            raise ValueError(
                f"model {self.name!r}: mean and std should have one value per input channel "
                f"({self.in_channels}), got mean={self.mean!r}, std={self.std!r}"
            )
        # A read-only view, so that a frozen spec cannot be changed through its defaults.
        object.__setattr__(self, "defaults", MappingProxyType(dict(self.defaults)))
        presets = {name: MappingProxyType(dict(values)) for name, values in self.presets.items()}
        object.__setattr__(self, "presets", MappingProxyType(presets))


class _SpecDefault(enum.Enum):
    """Sentinel type for "the weights named by the model's spec"."""

    WEIGHTS = "the spec's default weights"


SPEC_DEFAULT = _SpecDefault.WEIGHTS
"""Default of ``create_model(weights=...)``: load ``spec.default_weights``."""

WeightsArg: TypeAlias = str | os.PathLike[str] | _SpecDefault | None
"""``None`` (random init), ``"imagenet"``, a path to a local weights file, or SPEC_DEFAULT."""

Network: TypeAlias = "ClassifierNetwork | SegmentationNetwork"
"""What :func:`create_model` returns: a classifier or a segmentation network, per
``network.spec.task``."""

Builder: TypeAlias = Callable[[ModelSpec, int, "str | Path | None"], Network]
"""``builder(spec, num_classes, weights)`` with weights already resolved to None, "imagenet"
or a Path."""


@dataclass(frozen=True)
class _Entry:
    spec: ModelSpec
    builder: Builder


_ENTRIES: dict[str, _Entry] = {}
_families_loaded = False


def register(spec: ModelSpec) -> Callable[[Builder], Builder]:
    """Decorator registering ``builder(spec, num_classes, weights)`` under ``spec.name``."""

    def decorate(builder: Builder) -> Builder:
        if spec.name in _ENTRIES:
            raise ValueError(f"model name {spec.name!r} is already registered")
        _ENTRIES[spec.name] = _Entry(spec, builder)
        return builder

    return decorate


def _family_rank(entry: _Entry) -> int:
    """Position of the entry's family in ``_FAMILY_MODULES``; other modules come last."""
    module = getattr(entry.builder, "__module__", None)
    return _FAMILY_MODULES.index(module) if module in _FAMILY_MODULES else len(_FAMILY_MODULES)


def _registry() -> dict[str, _Entry]:
    global _families_loaded
    if not _families_loaded:
        for module in _FAMILY_MODULES:
            import_module(module)
        # Importing one family module directly (say ``unet`` through ``covidcxr.models``)
        # registers it early; restore the documented order: by family, then as registered.
        ordered = sorted(_ENTRIES.items(), key=lambda item: _family_rank(item[1]))
        _ENTRIES.clear()
        _ENTRIES.update(ordered)
        _families_loaded = True
    return _ENTRIES


def list_models(include_test: bool = False, task: str | None = None) -> list[str]:
    """Registered model names, family by family (the paper's models first, then the transfer
    backbones, then segmentation networks).

    Args:
        include_test: also list the tiny test-only networks.
        task: only the models for this task (``"classification"`` or ``"segmentation"``);
            None lists every task.

    Raises:
        ValueError: ``task`` is not None or one of :data:`TASKS`.
    """
    if task is not None and task not in TASKS:
        raise ValueError(f"task should be None or one of {', '.join(TASKS)}, got {task!r}")
    return [
        name
        for name, entry in _registry().items()
        if (include_test or not entry.spec.test_only) and task in (None, entry.spec.task)
    ]


def _entry(name: str, task: str | None = None) -> _Entry:
    entries = _registry()
    if name in entries:
        return entries[name]
    # suggestions come from the models a user would pick: this task's, not the test-only ones
    offered = list_models(task=task)
    close = difflib.get_close_matches(str(name).lower(), offered, n=3, cutoff=0.5)
    hint = f"Did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
    kind = f"{task} models" if task is not None else "models"
    raise ValueError(f"unknown model name {name!r}. {hint}Available {kind}: {', '.join(offered)}")


def get_model_spec(name: str, task: str | None = None) -> ModelSpec:
    """The :class:`ModelSpec` registered under ``name``. When there is none, ValueError with the
    close matches among the non-test models of ``task`` (every task when None)."""
    return _entry(name, task).spec


def _resolve_weights(spec: ModelSpec, weights: WeightsArg) -> str | Path | None:
    if weights is SPEC_DEFAULT:
        weights = spec.default_weights
    if weights is None:
        return None
    if spec.default_weights is None:
        raise ValueError(
            f"model {spec.name!r} has no pretrained weights to load (got weights={weights!r}); "
            "use weights=None. To restore a trained network, load its checkpoint's state dict."
        )
    if isinstance(weights, str) and weights.lower() == "imagenet":
        return "imagenet"
    if isinstance(weights, str | os.PathLike):
        path = Path(weights).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f"weights file for {spec.name!r} not found: {path} "
                "(weights must be None, 'imagenet' or the path of an existing file)"
            )
        return path
    raise TypeError(
        f"weights must be None, 'imagenet' or a path, got {type(weights).__name__}: {weights!r}"
    )


def create_model(
    name: str, num_classes: int | None = None, weights: WeightsArg = SPEC_DEFAULT
) -> Network:
    """Build the network registered as ``name`` (a classifier with a new ``num_classes``-way
    head, or a segmentation network).

    Args:
        name: a name from :func:`list_models` (or a test-only one).
        num_classes: width of the logits; None means 3 for classifiers (the paper's three
            classes) and 1 for segmentation networks (one lung-mask channel, the only width
            they support).
        weights: ``None`` for random initialisation; ``"imagenet"`` for the official ImageNet
            weights of the trunk (torchvision downloads them once into
            ``$TORCH_HOME/hub/checkpoints``; efficientnet-lite0 loads them from an installed
            package); a path to a local ImageNet weights file in the upstream library's format.
            By default the spec's ``default_weights``. Weights only ever fill the trunk: the
            head is initialised at random from the caller's torch seed.

    Returns:
        For ``spec.task == "classification"``, a :class:`ClassifierNetwork` mapping (B, 3, S, S)
        images, normalised with the spec's mean/std, to (B, num_classes) logits; for
        ``"segmentation"``, a ``SegmentationNetwork`` mapping (B, 1, H, W) images to (B, 1, H,
        W) mask logits. Either way ``network.spec`` is its :class:`ModelSpec`.

    Raises:
        ValueError: unknown name (with the closest names), bad ``num_classes``, weights for a
            model that has none, or a weights file whose tensors do not fit.
        FileNotFoundError: ``weights`` is a path that does not exist.
        WeightsUnavailableError: the ImageNet weights cannot be downloaded or found offline.
    """
    entry = _entry(name)
    if num_classes is None:
        num_classes = _DEFAULT_NUM_CLASSES[entry.spec.task]
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    resolved = _resolve_weights(entry.spec, weights)
    network = entry.builder(entry.spec, num_classes, resolved)
    if network.spec is not entry.spec:
        raise RuntimeError(f"builder of {name!r} returned a network with another spec")
    return network
