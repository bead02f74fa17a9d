"""Saved models: the card built from a registry spec, and untrained artefacts for rehearsals."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from covidcxr.inference.artifact import Classifier, ModelCard, Segmenter, load_model, save_untrained
from covidcxr.models import get_model_spec


def test_card_from_spec_takes_what_the_spec_knows() -> None:
    spec = get_model_spec("seed-cnn")
    card = ModelCard.from_spec(spec, ("A", "B"), temperature=2.0)
    assert (card.model, card.task, card.input_size) == ("seed-cnn", "classification", 100)
    assert card.class_names == ["A", "B"] and card.temperature == 2.0
    assert card.mean == list(spec.mean) and card.target_layer == spec.target_layer
    assert ModelCard.from_spec(get_model_spec("tiny-unet"), ["lung"]).task == "segmentation"


@pytest.mark.parametrize(("model", "kind"), [("tiny-cnn", Classifier), ("tiny-unet", Segmenter)])
def test_untrained_models_load_and_are_reproducible(tmp_path: Path, model: str, kind) -> None:
    first = load_model(save_untrained(tmp_path / "a", model, seed=3))
    second = load_model(save_untrained(tmp_path / "b", model, seed=3))
    other = load_model(save_untrained(tmp_path / "c", model, seed=4))
    assert isinstance(first, kind)
    image = np.linspace(0, 1, 80 * 90, dtype=np.float32).reshape(80, 90)
    if kind is Classifier:
        outputs = [m.predict_proba([image]) for m in (first, second, other)]
    else:
        outputs = [m.predict_probabilities([image]).numpy() for m in (first, second, other)]
    assert np.array_equal(outputs[0], outputs[1])
    assert not np.array_equal(outputs[0], outputs[2])


def test_running_the_shipped_models_never_imports_lightning(real_dataset: Path) -> None:
    # the layering (ARCHITECTURE.md): inference sits below the training engine; a segmenter's
    # predict_masks once imported Lightning through the training module
    film = next(iter(sorted(real_dataset.rglob("images/*.png"))))
    script = (
        "import sys\n"
        "from covidcxr.inference.artifact import load_model\n"
        f"film = {str(film)!r}\n"
        "from covidcxr.io import read_image\n"
        "image = read_image(film)\n"
        "load_model('unet-lite-db').predict_masks([image])\n"
        "load_model('seed-cnn-db').analyse([film])\n"
        "print(sorted(m for m in ('lightning', 'covidcxr.training') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
