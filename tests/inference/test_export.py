"""ONNX export: parity with PyTorch on real X-rays, the card inside the file, lung-focused
models with their segmenter, refusal on disagreement, and the CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from typer.testing import CliRunner

from covidcxr.cli import app
from covidcxr.inference.artifact import load_model
from covidcxr.inference.export import (
    ONNX_FILE,
    PARITY_TOLERANCE,
    SEGMENTER_TOLERANCE,
    OnnxClassifier,
    OnnxSegmenter,
    ParityError,
    export_onnx,
    load_onnx,
)
from covidcxr.io import read_image
from helpers import real_images, save_untrained

runner = CliRunner()


@pytest.fixture(scope="module")
def xrays(real_dataset: Path) -> list[np.ndarray]:
    return [read_image(path) for path in real_images(real_dataset, 12)]


@pytest.fixture(scope="module")
def seed_cnn(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_untrained(tmp_path_factory.mktemp("seed") / "model", "seed-cnn", temperature=1.7)


@pytest.fixture(scope="module")
def seed_cnn_onnx(seed_cnn: Path, xrays: list[np.ndarray]):
    return export_onnx(seed_cnn, check_images=xrays)


def test_seed_cnn_matches_pytorch_on_real_xrays(seed_cnn_onnx, seed_cnn, xrays) -> None:
    result = seed_cnn_onnx
    assert result.path == seed_cnn / ONNX_FILE and result.path.is_file()
    assert result.images_checked == len(xrays) == 12
    assert result.max_abs_difference < PARITY_TOLERANCE
    # An independent check, through the public loaders, on images not resized alike.
    torch_probabilities = load_model(seed_cnn).predict_proba(xrays)
    onnx_probabilities = load_onnx(result.path).predict_proba(xrays)
    assert np.abs(onnx_probabilities - torch_probabilities).max() < PARITY_TOLERANCE
    assert np.allclose(onnx_probabilities.sum(axis=1), 1.0, atol=1e-5)


def test_the_card_travels_inside_one_file(seed_cnn_onnx, seed_cnn, tmp_path) -> None:
    moved = tmp_path / "elsewhere.onnx"
    moved.write_bytes(seed_cnn_onnx.path.read_bytes())
    assert not list(tmp_path.glob("*.data"))  # weights are inside, not external data
    loaded = load_onnx(moved)
    assert isinstance(loaded, OnnxClassifier)
    assert loaded.class_names == ["Normal", "COVID", "Viral Pneumonia"]
    assert loaded.card.temperature == pytest.approx(1.7)  # calibration is inside the graph
    model = onnx.load(str(moved))
    assert [i.name for i in model.graph.input] == ["image"]
    assert [o.name for o in model.graph.output] == ["probabilities", "logits"]
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8


def test_temperature_is_applied_in_the_graph(seed_cnn_onnx, xrays) -> None:
    session = load_onnx(seed_cnn_onnx.path).session
    batch = load_model(seed_cnn_onnx.path.parent).prepare(xrays[:3]).numpy()
    probabilities, logits = session.run(None, {"image": batch})
    expected = np.exp(logits / 1.7) / np.exp(logits / 1.7).sum(axis=1, keepdims=True)
    assert np.abs(probabilities - expected).max() < 1e-6


def test_any_batch_size_runs(seed_cnn_onnx) -> None:
    session = load_onnx(seed_cnn_onnx.path).session
    for count in (1, 5):
        batch = np.zeros((count, 1, 100, 100), np.uint8)
        assert session.run(["probabilities"], {"image": batch})[0].shape == (count, 3)


@pytest.mark.parametrize("lungs", ["none", "crop"])
def test_disagreement_writes_nothing_and_keeps_an_earlier_export(
    tmp_path: Path, xrays, monkeypatch: pytest.MonkeyPatch, lungs: str
) -> None:
    import covidcxr.inference.export as export

    model = save_untrained(tmp_path / "model", lungs=lungs)
    good = export_onnx(model, tmp_path / "out.onnx", xrays[:2])
    before = {path.name: path.read_bytes() for path in tmp_path.glob("*.onnx")}
    assert len(before) == (2 if lungs == "crop" else 1)
    original = export._run
    calls = []

    def drifting(session, images, batch_size, progress=None):
        calls.append(1)  # the classifier (checked last) drifts by 1e-3; a segmenter does not
        shift = 1e-3 if len(calls) == len(before) else 0.0
        return original(session, images, batch_size, progress) + shift

    monkeypatch.setattr(export, "_run", drifting)
    with pytest.raises(ParityError, match=r"disagree by 0\.001"):
        export_onnx(model, tmp_path / "out.onnx", xrays[:2])
    after = {path.name: path.read_bytes() for path in tmp_path.glob("*.onnx")}
    assert after == before and not list(tmp_path.glob(".*partial"))
    assert good.max_abs_difference < PARITY_TOLERANCE


def test_lung_focused_model_exports_its_segmenter(tmp_path: Path, xrays) -> None:
    model = save_untrained(tmp_path / "model", lungs="crop")
    result = export_onnx(model, tmp_path / "lungs.onnx", xrays[:4])
    assert result.segmenter_path == tmp_path / "lungs.segmenter.onnx"
    assert result.segmenter_max_abs_difference < SEGMENTER_TOLERANCE
    assert result.end_to_end_max_abs_difference < PARITY_TOLERANCE  # all-lung masks: no flips
    loaded = load_onnx(result.path)
    assert isinstance(loaded.segmenter, OnnxSegmenter)
    expected = load_model(model).predict_proba(xrays[:4])
    assert np.abs(loaded.predict_proba(xrays[:4]) - expected).max() < PARITY_TOLERANCE
    result.segmenter_path.unlink()
    with pytest.raises(ValueError, match=r"segmenter\.onnx is missing"):
        load_onnx(result.path).predict_proba(xrays[:1])


def test_missing_or_foreign_onnx_files_say_what_to_do(tmp_path: Path) -> None:
    model = save_untrained(tmp_path / "model")
    with pytest.raises(FileNotFoundError, match="covidcxr export"):
        load_onnx(model)
    foreign = tmp_path / "foreign.onnx"
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["x"], ["y"])],
        "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])],
    )
    onnx.save(onnx.helper.make_model(graph), str(foreign))
    with pytest.raises(ValueError, match="without a covidcxr model card"):
        load_onnx(foreign)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="cannot load"):
        load_onnx(garbage)


def test_cli_export_then_predict_with_onnx_runtime(tmp_path: Path, real_dataset: Path) -> None:
    model = save_untrained(tmp_path / "run" / "model")
    folder = real_dataset / "COVID" / "images"
    result = runner.invoke(app, ["export", str(tmp_path / "run"), "--check", str(folder)])
    assert result.exit_code == 0, result.output
    assert "Parity with PyTorch on" in result.output and "check images" in result.output
    assert (model / ONNX_FILE).is_file()
    outputs = {}
    for runtime in ("torch", "onnx"):
        out = tmp_path / f"{runtime}.csv"
        result = runner.invoke(
            app,
            ["predict", str(tmp_path / "run"), str(folder), "--out", str(out),
             "--runtime", runtime, "--quiet", "--workers", "0"],
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        outputs[runtime] = np.loadtxt(out, delimiter=",", skiprows=1, usecols=(2, 3, 4, 5))
    assert outputs["onnx"].shape[0] == len(list(folder.glob("*.png")))
    assert np.abs(outputs["onnx"] - outputs["torch"]).max() < PARITY_TOLERANCE


def test_cli_export_refuses_a_non_onnx_name(tmp_path: Path) -> None:
    model = save_untrained(tmp_path / "model")
    result = runner.invoke(app, ["export", str(model), "--out", str(tmp_path / "m.txt")])
    assert result.exit_code == 2 and ".onnx file" in result.output
