"""Settings as data: frozen dataclasses, read from YAML, overridden from the command line, and
written next to every run so that it can be repeated exactly.

Precedence, lowest first: the model's paper defaults (``ModelSpec.defaults``), the YAML file
(``--config``), then the flags given on the command line. ``None`` in a field means "use the
model's default"; :func:`resolve` fills those in.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BALANCE_CHOICES = ("none", "weights", "sampler")
LR_SCHEDULES = ("none", "plateau")
"""``plateau``: divide the learning rate by 5 when 3 epochs in a row bring no lower validation
loss (PyTorch's ReduceLROnPlateau with patience 2); ``none``: a constant rate, as in the
paper."""
DEFAULT_PRESET = "default"
LUNG_CHOICES = ("none", "crop", "mask")
"""What the classifier sees: the whole image, the lungs' bounding box, or only the lungs."""
NO_WEIGHTS = "none"
"""``weights`` value for random initialisation (``None`` means the model's default)."""


@dataclass(frozen=True)
class AugmentConfig:
    """Random augmentation. By default what the paper's Keras ImageDataGenerator did: rotation
    (± degrees), shift (fraction of the side), zoom (± fraction) and horizontal flip.

    The photometric settings (0: off) redraw how a film was acquired and processed, which
    differs from one hospital and one copy of a dataset to the next: ``gamma`` (exposure: a
    gamma drawn log-uniformly from [1 / (1 + g), 1 + g]), ``contrast`` (± fraction),
    ``blur`` (Gaussian sigma up to this many pixels at the input size, half of the images) and
    ``jpeg`` (re-encode half of the images at a JPEG quality drawn from [jpeg, 95])."""

    rotation: float = 10.0
    shift: float = 0.1
    zoom: float = 0.1
    horizontal_flip: bool = True
    gamma: float = 0.0
    contrast: float = 0.0
    blur: float = 0.0
    jpeg: int = 0


@dataclass(frozen=True)
class TrainConfig:
    """Everything ``covidcxr train`` needs. See the module docstring for precedence."""

    data: str
    model: str = "seed-cnn"
    out: str | None = None
    num_classes: int = 3
    weights: str | None = None
    augment: bool = False
    augmentation: AugmentConfig = field(default_factory=AugmentConfig)
    balance: str = "none"
    fine_tune: int = 0
    feature_cache: bool = True
    postprocess: bool = True
    lungs: str = "none"
    seg_model: str | None = None
    lung_margin: float = 0.05
    batch_size: int | None = None
    max_epochs: int | None = None
    patience: int | None = None
    learning_rate: float | None = None
    lr_schedule: str | None = None
    preset: str = DEFAULT_PRESET
    fractions: tuple[float, ...] | None = None
    seed: int = 0
    split: str | None = None
    allow_outside: bool = False
    accelerator: str = "auto"
    devices: int | str = 1
    strategy: str = "auto"
    num_nodes: int = 1
    precision: str = "32-true"
    decode_workers: int | None = None
    loader_workers: int = 0
    cache_dir: str | None = None
    quiet: bool = False

    def to_dict(self) -> dict[str, Any]:
        """Plain data for YAML / JSON (tuples become lists)."""
        return _plain(dataclasses.asdict(self))

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)


def config_from_mapping(values: Mapping[str, Any]) -> TrainConfig:
    """Build a :class:`TrainConfig` from a mapping (e.g. parsed YAML); unknown keys are errors."""
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(
            f"unknown training setting(s) {', '.join(unknown)}; valid settings: "
            f"{', '.join(sorted(known))}"
        )
    values = dict(values)
    if "data" not in values or not values["data"]:
        raise ValueError("the training setting 'data' (the dataset folder) is required")
    if isinstance(values.get("augmentation"), Mapping):
        augment_known = {f.name for f in dataclasses.fields(AugmentConfig)}
        bad = sorted(set(values["augmentation"]) - augment_known)
        if bad:
            raise ValueError(
                f"unknown augmentation setting(s) {', '.join(bad)}; valid: "
                f"{', '.join(sorted(augment_known))}"
            )
        values["augmentation"] = AugmentConfig(**values["augmentation"])
    if values.get("fractions") is not None:
        values["fractions"] = tuple(float(v) for v in values["fractions"])
    config = TrainConfig(**values)
    if config.balance not in BALANCE_CHOICES:
        raise ValueError(
            f"balance should be one of {', '.join(BALANCE_CHOICES)}, got {config.balance!r}"
        )
    if config.lungs not in LUNG_CHOICES:
        raise ValueError(f"lungs should be one of {', '.join(LUNG_CHOICES)}, got {config.lungs!r}")
    if config.lr_schedule is not None and config.lr_schedule not in LR_SCHEDULES:
        raise ValueError(
            f"lr_schedule should be one of {', '.join(LR_SCHEDULES)}, got {config.lr_schedule!r}"
        )
    return config


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping of settings; a clear error for a missing file or a non-mapping."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such config file")
    with path.open(encoding="utf-8") as handle:
        loaded = yaml.safe_load(handle)
    if loaded is None:
        return {}
    if not isinstance(loaded, Mapping):
        raise ValueError(f"{path}: expected a mapping of settings, got {type(loaded).__name__}")
    return dict(loaded)


def save_yaml(config: TrainConfig, path: str | Path) -> Path:
    """Write the (resolved) config as YAML, atomically."""
    import yaml

    from covidcxr.atomic import write_text

    return write_text(path, yaml.safe_dump(config.to_dict(), sort_keys=False))


def resolve(config: TrainConfig) -> TrainConfig:
    """Fill every ``None`` that has a model default: output folder, weights, batch size,
    epochs, patience, learning rate and its schedule, split fractions. The defaults are the
    model's (``ModelSpec.defaults``), overlaid with its preset ``config.preset`` when that is
    not ``"default"`` (``"paper"``: the paper's own protocol)."""
    from covidcxr.models import get_model_spec

    spec = get_model_spec(config.model)
    defaults = model_defaults(spec, config.preset)
    weights = config.weights if config.weights is not None else spec.default_weights
    return config.replace(
        out=config.out or str(Path("runs") / config.model),
        weights=NO_WEIGHTS if weights in (None, NO_WEIGHTS, "random") else str(weights),
        batch_size=config.batch_size or int(defaults.get("batch_size", 64)),
        max_epochs=config.max_epochs or int(defaults.get("max_epochs", 50)),
        patience=config.patience
        if config.patience is not None
        else int(defaults.get("patience", 3)),
        learning_rate=config.learning_rate or float(defaults.get("learning_rate", 1e-3)),
        lr_schedule=config.lr_schedule or str(defaults.get("lr_schedule", "none")),
        fractions=tuple(config.fractions or defaults.get("fractions", (0.7, 0.1, 0.2))),
    )


def model_defaults(spec: Any, preset: str = DEFAULT_PRESET) -> dict[str, Any]:
    """The training defaults of registry entry ``spec`` under ``preset``; ValueError naming
    the presets the model has when it has no such one."""
    defaults = dict(spec.defaults)
    if preset == DEFAULT_PRESET:
        return defaults
    presets = dict(spec.presets)
    if preset not in presets:
        known = ", ".join([DEFAULT_PRESET, *presets])
        raise ValueError(f"model {spec.name!r} has no preset {preset!r}; its presets: {known}")
    return defaults | dict(presets[preset])


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def settings_for_run(
    flags: Mapping[str, Any],
    config_file: str | Path | None = None,
    resume: bool = False,
    out: str | Path | None = None,
    quiet: bool = False,
    task: str = "classification",
) -> TrainConfig:
    """The settings of a ``covidcxr train`` (or ``segment train``) run: the YAML file's (on
    ``resume`` the run's own ``config.yaml`` in ``out``), overridden by ``flags`` (the options
    given, keyed by setting name). Raises ValueError / FileNotFoundError naming the flag to fix:
    no ``data``, nothing to resume, or a model of another ``task``."""
    from covidcxr.models import get_model_spec

    if resume:
        if out is None:
            raise ValueError("--resume needs --out: the run folder to continue")
        saved = Path(out) / "config.yaml"
        if not saved.is_file():
            raise FileNotFoundError(f"{out}: nothing to resume (no config.yaml there)")
        config_file = saved
    settings = load_yaml(config_file) if config_file is not None else {}
    settings |= dict(flags)
    if not settings.get("data"):
        raise ValueError(
            "--data is required: the dataset folder or CSV manifest to train on (or a "
            "`data:` line in the --config file)"
        )
    if quiet:
        settings["quiet"] = True
    config = config_from_mapping(settings)
    spec = get_model_spec(config.model, task)
    if spec.task != task:
        command = "covidcxr segment train" if spec.task == "segmentation" else "covidcxr train"
        raise ValueError(f"{spec.name} is a {spec.task} model: train it with `{command}`")
    return config
