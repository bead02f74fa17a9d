"""Pretrained models that ship inside the package, loadable by name wherever a model folder is
accepted: ``covidcxr predict efficientnet-lite0-db chest.png``,
``covidcxr.load_model("unet-lite-db")``, ``--seg-model unet-lite-db``, and ``covidcxr serve``,
which serves :func:`default_model` (the best shipped classifier, with the shipped lung model)
when given no model.

Each model is a folder beside this file, exactly as ``covidcxr train`` writes ``model/``
(``model.json``, ``model.safetensors``, ``ood.safetensors``, ``segmenter/`` for lung-focused
classifiers) plus a ``README.md`` model card. ``recipes/zoo.py`` trains and copies them here; how,
on what, and with which figures is in each card and in the README's "Pretrained models".
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path

ZOO_DIR = Path(__file__).resolve().parent
INDEX_FILE = "index.json"


def _index() -> dict:
    path = ZOO_DIR / INDEX_FILE
    if not path.is_file():
        return {}
    return json.loads(path.read_text(encoding="utf-8"))


def pretrained_names() -> list[str]:
    """Names of the shipped models, in the order the index lists them."""
    listed = _index().get("models", [])
    return [name for name in listed if (ZOO_DIR / name / "model.json").is_file()]


def default_model(task: str = "classification") -> str | None:
    """The shipped model ``covidcxr serve`` uses by default for ``task`` (``classification``
    or ``segmentation``), or None when none ships."""
    key = {"classification": "default_classifier", "segmentation": "default_segmenter"}[task]
    name = _index().get(key)
    return name if name in pretrained_names() else None


def pretrained_folder(name: str) -> Path:
    """The folder of shipped model ``name``; ValueError naming the close matches otherwise."""
    names = pretrained_names()
    if name in names:
        return ZOO_DIR / name
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
    hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    raise ValueError(
        f"{name!r} is neither a saved model folder nor a pretrained model.{hint} Pretrained: "
        f"{', '.join(names) or 'none'}"
    )


def resolve(location: str | Path) -> Path:
    """``location`` itself when it exists on disk, else the folder of the pretrained model of
    that name, else ``location`` unchanged (the caller's not-found error then names it)."""
    path = Path(location).expanduser()
    if path.suffix or len(path.parts) != 1:
        return path
    if path.exists() and (_holds_model(path) or str(location) not in pretrained_names()):
        return path
    if str(location) in pretrained_names():
        return ZOO_DIR / str(location)
    return path


def _holds_model(path: Path) -> bool:
    """A saved model or a run folder (not, say, a folder of outputs named after a model)."""
    return path.is_file() or (path / "model.json").is_file() or (path / "model").is_dir()


def is_pretrained(folder: str | Path) -> bool:
    """True for a folder inside the package's zoo (never to be written into)."""
    try:
        return Path(folder).resolve().is_relative_to(ZOO_DIR)
    except OSError:
        return False
