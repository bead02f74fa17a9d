"""Class names, integer labels and the aliases different releases and users write.

Labels are fixed across covidcxr: Normal = 0, COVID = 1, Viral Pneumonia = 2, Lung Opacity = 3.
Three classes (the paper's setting) is the default; Lung Opacity joins with ``num_classes=4``.
"""

from __future__ import annotations

import re

ALL_CLASS_NAMES: tuple[str, ...] = ("Normal", "COVID", "Viral Pneumonia", "Lung Opacity")

# Keys are compared after lower-casing and removing spaces, hyphens and underscores.
_ALIASES: dict[str, str] = {
    "normal": "Normal",
    "healthy": "Normal",
    "nofinding": "Normal",
    "covid": "COVID",
    "covid19": "COVID",
    "covid2019": "COVID",
    "sarscov2": "COVID",
    "viralpneumonia": "Viral Pneumonia",
    "pneumoniaviral": "Viral Pneumonia",
    "lungopacity": "Lung Opacity",
    "opacity": "Lung Opacity",
}


def _alias_key(name: str) -> str:
    return re.sub(r"[\s_\-]+", "", name.strip().lower())


def canonical_class_name(name: str) -> str | None:
    """Map a folder name or label such as ``"covid-19"`` or ``"Lung_Opacity"`` to its canonical
    class name (one of :data:`ALL_CLASS_NAMES`), or ``None`` when it names no known class."""
    return _ALIASES.get(_alias_key(name))


def class_names(num_classes: int = 3) -> tuple[str, ...]:
    """The class names used with ``num_classes`` classes (3 or 4), in label order."""
    if num_classes not in (3, 4):
        raise ValueError(
            f"num_classes should be 3 (Normal, COVID, Viral Pneumonia) or 4 (adds Lung Opacity), "
            f"got {num_classes}"
        )
    return ALL_CLASS_NAMES[:num_classes]


def label_of(name: str, num_classes: int = 3) -> int | None:
    """Integer label of a class name or alias; ``None`` when the class is unknown or not part of
    the ``num_classes`` setting (Lung Opacity with 3 classes)."""
    canonical = canonical_class_name(name)
    names = class_names(num_classes)
    return names.index(canonical) if canonical in names else None
