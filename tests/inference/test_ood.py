"""The out-of-distribution check: features (probabilistic PCA) and layout (thumbnail
correlation), fitted on training data, thresholded on validation data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from covidcxr.inference.ood import fit_reference, load_reference, thumbnails
from covidcxr.io import read_image
from helpers import REAL_DATASET, real_images


def _features(count: int, seed: int, width: int = 40, shift: float = 0.0) -> np.ndarray:
    """Correlated Gaussian features (count, width): most variance in a few directions."""
    generator = np.random.default_rng(seed)
    mixing = np.random.default_rng(99).normal(size=(width, width)) * np.linspace(3, 0.1, width)
    return generator.normal(size=(count, width)) @ mixing.T + shift


def _films(count: int, seed: int, size: int = 40) -> np.ndarray:
    """uint8 (count, 1, size, size) "films": two dark lungs beside a bright middle, with noise."""
    generator = np.random.default_rng(seed)
    columns = np.linspace(-1, 1, size)
    layout = 0.55 + 0.35 * np.exp(-((columns / 0.25) ** 2)) - 0.25 * (np.abs(columns) > 0.3)
    films = layout[None, None, :] + 0.08 * generator.normal(size=(count, size, size))
    return np.clip(np.rint(films * 255), 0, 255).astype(np.uint8)[:, None]


@pytest.fixture(scope="module")
def reference():
    return fit_reference(
        _features(2000, 0), _features(1000, 1), _films(2000, 0), _films(1000, 1), dims=8
    )


def test_flags_about_the_quantile_of_familiar_films_and_strange_ones(reference) -> None:
    familiar = reference.flag(_features(4000, 2), _films(4000, 2))[1]
    assert 0.002 < familiar.mean() < 0.03  # ~1 % of new films like the training ones
    far = reference.flag(_features(500, 3, shift=40.0), _films(500, 3))[1]  # ~3.5 sd/feature
    assert far.mean() > 0.99
    # the mean training film's feature score is about 1 by construction
    assert 0.8 < float(np.median(reference.feature_scores(_features(2000, 0)))) < 1.2


def test_inverted_rotated_or_flat_films_are_caught_by_their_layout(reference) -> None:
    films, features = _films(200, 4), _features(200, 4)
    assert reference.flag(features, films)[1].mean() < 0.05
    for strange in (255 - films, np.ascontiguousarray(films.transpose(0, 1, 3, 2))):
        assert reference.flag(features, strange)[1].mean() > 0.95
    noise = np.random.default_rng(5).integers(0, 256, films.shape, dtype=np.uint8)
    assert reference.flag(features, noise)[1].mean() > 0.95


def test_off_subspace_features_are_caught_by_the_residual() -> None:
    train = _features(2000, 0)
    reference = fit_reference(train, _features(500, 1), _films(2000, 0), _films(500, 1), dims=4)
    odd, films = _features(200, 4), _films(200, 4)
    # a change along the least-varying direction: the top 4 components do not see it
    least = np.linalg.svd(train - train.mean(axis=0), full_matrices=False)[2][-1]
    assert np.abs(reference.components @ least).max() < 1e-6
    step = 3 * np.sqrt(reference.residual_variance * reference.width * reference.threshold)
    assert reference.flag(odd + step * least, films)[1].mean() > 0.9
    assert reference.flag(odd, films)[1].mean() < 0.05


def test_real_films_correlate_with_each_other_and_not_inverted(reference) -> None:
    from covidcxr.data.transforms import resize_image

    films = np.stack([resize_image(read_image(p), (100, 100)) for p in real_images(REAL_DATASET)])
    small = thumbnails(films[:, None].astype(np.float64))
    assert small.shape == (44, 400) and np.allclose(np.linalg.norm(small, axis=1), 1, atol=1e-5)
    template = small.mean(axis=0)
    assert (small @ template > 0).all() and (
        thumbnails(255.0 - films[:, None]) @ template < 0
    ).all()


def test_save_load_and_the_torch_scorer_agree(reference, tmp_path: Path) -> None:
    loaded = load_reference(reference.save(tmp_path / "ood.safetensors"))
    probe, films = _features(50, 5, shift=1.0), _films(50, 5)
    np.testing.assert_allclose(loaded.score(probe, films), reference.score(probe, films))
    assert loaded.template_threshold == reference.template_threshold
    scorer = reference.torch_scorer()
    in_graph = scorer(torch.tensor(probe, dtype=torch.float32), torch.from_numpy(films)).numpy()
    np.testing.assert_allclose(in_graph, reference.score(probe, films), rtol=1e-3)
    summary = reference.summary()
    assert summary["dims"] == 8 and summary["threshold"] == 1.0


def test_bad_inputs_say_what_is_wrong(reference, tmp_path: Path) -> None:
    films = _films(5, 0)
    with pytest.raises(ValueError, match=r"\(N, D\) and \(M, D\)"):
        fit_reference(np.zeros((5, 3)), np.zeros((5, 4)), films, films)
    with pytest.raises(ValueError, match="at least 2 training"):
        fit_reference(np.zeros((1, 3)), np.zeros((1, 3)), films[:1], films[:1])
    with pytest.raises(ValueError, match="one image per feature row"):
        fit_reference(np.zeros((5, 3)), np.zeros((5, 3)), films[:4], films)
    with pytest.raises(ValueError, match=r"features should be \(N, 40\)"):
        reference.score(np.zeros((2, 7)), films[:2])
    with pytest.raises(ValueError, match=r"\(N, 1, S, S\) with S >= 20"):
        thumbnails(np.zeros((2, 1, 8, 8)))
    (tmp_path / "junk.safetensors").write_bytes(b"not a reference")
    with pytest.raises(ValueError, match="not a covidcxr feature reference"):
        load_reference(tmp_path / "junk.safetensors")
    # constant features and films (a dead trunk, blank images) still give finite scores
    flat = fit_reference(np.ones((10, 4)), np.ones((3, 4)), films[:1].repeat(10, 0), films[:3])
    assert np.isfinite(flat.score(np.ones((2, 4)), films[:2])).all()
