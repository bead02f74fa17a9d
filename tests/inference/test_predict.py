"""Streaming prediction: every format written as it goes, resumed after a cut, bad files
listed, rows not kept in memory, lung-focused models focused, and the CLI."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import covidcxr.inference.predict as predict_module
from covidcxr.cli import app
from covidcxr.inference.artifact import load_model
from covidcxr.inference.predict import iter_image_files, predict_files
from helpers import real_images, save_untrained, write_png

runner = CliRunner()


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_untrained(tmp_path_factory.mktemp("predict") / "model")


@pytest.fixture
def archive(tmp_path: Path, real_dataset: Path) -> Path:
    """A nested folder of 12 real X-rays (links), one bad file, a mask folder and a hidden
    file that must be skipped."""
    root = tmp_path / "archive"
    for index, source in enumerate(real_images(real_dataset, 12)):
        target = root / f"site{index % 3}" / f"day{index % 2}" / f"img{index:02d}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(source.resolve())
    (root / "site0" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    write_png(root / "site1" / "masks" / "img01.png", np.full((8, 8), 255, np.uint8))
    write_png(root / ".hidden.png", np.full((8, 8), 255, np.uint8))
    return root


def read_rows(path: Path) -> list[dict]:
    if path.suffix == ".csv":
        with path.open(newline="", encoding="utf-8", errors="surrogateescape") as handle:
            return list(csv.DictReader(handle))
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text().splitlines()]
    return json.loads(path.read_text())["predictions"]


def test_walk_is_sorted_and_skips_masks_and_hidden_files(archive: Path) -> None:
    found = list(iter_image_files([archive, archive / "nope"]))
    files = [path for path, reason in found if reason is None]
    assert len(files) == 13  # 12 X-rays + the broken one
    assert files == sorted(files, key=lambda p: (p.parent.relative_to(archive).parts, p.name))
    assert not any("masks" in p.parts or p.name.startswith(".") for p in files)
    assert found[-1] == (archive / "nope", "no such file or folder")


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".json"])
def test_a_cut_off_output_is_resumed_to_the_same_predictions(
    model: Path, archive: Path, tmp_path: Path, suffix: str
) -> None:
    out = tmp_path / f"predictions{suffix}"
    full = predict_files(model, [archive], out, workers=0)
    assert full.predicted == 12 and full.rows == []  # streamed, not kept
    assert [p.name for p, _ in full.failures] == ["broken.png"]
    complete = read_rows(out)
    assert len(complete) == 12
    data = out.read_bytes()
    for cut in (len(data) // 3, 2 * len(data) // 3):  # mid-row cuts
        out.write_bytes(data[:cut])
        resumed = predict_files(model, [archive], out, workers=0, resume=True)
        assert 0 < resumed.skipped < 12 and resumed.skipped + resumed.predicted == 12
        rows = read_rows(out)
        assert sorted(r["path"] for r in rows) == sorted(r["path"] for r in complete)
        by_path = {r["path"]: float(r["p_COVID"]) for r in complete}
        assert all(float(r["p_COVID"]) == pytest.approx(by_path[r["path"]]) for r in rows)
    again = predict_files(model, [archive], out, workers=0, resume=True)
    assert (again.predicted, again.skipped) == (0, 12)


def test_failures_are_listed_beside_a_csv(model: Path, archive: Path, tmp_path: Path) -> None:
    out = tmp_path / "p.csv"
    predict_files(model, [archive], out, workers=0)
    listed = (tmp_path / "p.csv.failures.csv").read_text()
    assert "broken.png" in listed and "corrupt or cut off" in listed
    json_out = tmp_path / "p.json"
    predict_files(model, [archive], json_out, workers=0)
    failures = json.loads(json_out.read_text())["failures"]
    assert [Path(f["path"]).name for f in failures] == ["broken.png"]


def test_resuming_another_models_file_is_refused(model, archive, tmp_path) -> None:
    out = tmp_path / "p.csv"
    out.write_text("path,predicted,confidence,p_A,p_B\n")
    with pytest.raises(ValueError, match="not a prediction file of this model"):
        predict_files(model, [archive], out, workers=0, resume=True)


def test_worker_processes_give_the_same_rows_in_the_same_order(
    model: Path, archive: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(predict_module, "CHUNK", 5)  # several chunks decoded ahead
    single = predict_files(model, [archive], workers=0)
    pooled = predict_files(model, [archive], workers=2)
    assert [r["path"] for r in pooled.rows] == [r["path"] for r in single.rows]
    assert np.allclose(
        [r["confidence"] for r in pooled.rows], [r["confidence"] for r in single.rows]
    )


def test_progress_reaches_the_total(model: Path, archive: Path) -> None:
    calls: list[tuple[int, int]] = []
    predict_files(model, [archive], workers=0, progress=lambda d, t: calls.append((d, t)))
    assert calls[0] == (0, 13) and calls[-1] == (13, 13)


class LeftHalf:
    """A stand-in lung segmenter: the left half of every image is "lung"."""

    def predict_masks(self, images):
        masks = []
        for image in images:
            mask = np.zeros(image.shape, bool)
            mask[:, : image.shape[1] // 2] = True
            masks.append(mask)
        return masks


@pytest.mark.parametrize("mode", ["crop", "mask"])
def test_lung_focused_models_see_the_lungs_as_in_training(
    tmp_path: Path, real_dataset: Path, mode: str
) -> None:
    classifier = load_model(save_untrained(tmp_path / "model", lungs=mode))
    classifier._segmenter = LeftHalf()
    files = real_images(real_dataset, 6)
    expected = classifier.predict_proba(files)
    rows = predict_files(classifier, files, workers=0).rows
    got = np.array([[r["p_Normal"], r["p_COVID"], r["p_Viral Pneumonia"]] for r in rows])
    assert np.abs(got - expected).max() < 1e-6
    whole = load_model(save_untrained(tmp_path / "plain")).predict_proba(files)
    assert np.abs(got - whole).max() > 1e-4  # the focusing changed what the network saw


def test_cli_streams_to_stdout_and_lists_bad_files(model: Path, archive: Path) -> None:
    result = runner.invoke(app, ["predict", str(model), str(archive), "--quiet", "--workers", "0"])
    assert result.exit_code == 1  # some inputs failed (README, "Exit codes")
    lines = [line for line in result.stdout.splitlines() if "\t" in line]
    assert len(lines) == 12
    assert "1 file skipped" in result.stderr and "broken.png" in result.stderr


def test_cli_resume_needs_an_output(model: Path, archive: Path) -> None:
    result = runner.invoke(app, ["predict", str(model), str(archive), "--resume"])
    assert result.exit_code == 2 and "--resume needs --out" in result.output


def test_cli_resume_reports_what_was_there(model: Path, archive: Path, tmp_path: Path) -> None:
    out = tmp_path / "p.jsonl"
    args = ["predict", str(model), str(archive), "--out", str(out), "--quiet", "--workers", "0"]
    assert runner.invoke(app, args).exit_code == 1  # broken.png
    result = runner.invoke(app, [*args, "--resume"])
    assert result.exit_code == 1
    assert "Wrote 0 predictions" in result.stdout and "(12 already there)" in result.stdout


def test_unknown_runtime_is_refused(model: Path, archive: Path) -> None:
    with pytest.raises(ValueError, match="runtime should be one of torch, onnx"):
        predict_files(model, [archive], runtime="tensorrt")


def test_resume_survives_odd_file_names(model: Path, real_dataset: Path, tmp_path: Path) -> None:
    """A comma, a quote, a newline and bytes that are not UTF-8 in names; the CSV is cut
    inside the quoted name that holds the newline."""
    source = real_images(real_dataset)[0].resolve()
    root = tmp_path / "odd"
    root.mkdir()
    names = [b"a,comma.png", b'a "quote".png', b"new\nline.png", b"latin\xe9.png", b"z.png"]
    for name in names:
        os.symlink(source, os.path.join(os.fsencode(root), name))
    out = tmp_path / "p.csv"
    predict_files(model, [root], out, workers=0)
    data = out.read_bytes()
    assert len(read_rows(out)) == 5
    cut = data.index(b"new\nline.png") + len(b"new\n")  # inside the quoted field
    out.write_bytes(data[:cut])
    resumed = predict_files(model, [root], out, workers=0, resume=True)
    assert resumed.failures == []
    rows = read_rows(out)
    assert len(rows) == 5 and len({row["path"] for row in rows}) == 5
    assert (resumed.skipped, resumed.predicted) == (3, 2)  # new\nline is fourth in sorted order


def test_resume_refuses_a_csv_broken_before_its_end(model, archive, tmp_path) -> None:
    """A malformed record in the middle (a hand edit, another program) is refused and the file
    kept; only a record cut off at the very end is dropped and predicted again."""
    out = tmp_path / "p.csv"
    predict_files(model, [archive], out, workers=0)
    lines = out.read_bytes().split(b"\r\n")
    lines[3] = b'"' + lines[3].replace(b",", b'"x,', 1)  # text after a closing quote
    broken = b"\r\n".join(lines)
    out.write_bytes(broken)
    with pytest.raises(ValueError, match=r"p\.csv: not a CSV file this program wrote \(line 4"):
        predict_files(model, [archive], out, workers=0, resume=True)
    assert out.read_bytes() == broken


@pytest.mark.parametrize("suffix", [".csv", ".json"])
def test_a_file_cut_inside_its_header_starts_over(model, archive, tmp_path, suffix) -> None:
    out = tmp_path / f"p{suffix}"
    predict_files(model, [archive], out, workers=0)
    out.write_bytes(out.read_bytes()[:10])
    resumed = predict_files(model, [archive], out, workers=0, resume=True)
    assert (resumed.skipped, resumed.predicted) == (0, 12)
    assert len(read_rows(out)) == 12


def test_resume_refuses_a_jsonl_it_did_not_write(model, archive, tmp_path) -> None:
    notes = tmp_path / "notes.jsonl"
    notes.write_text('{"id": 1, "note": "important"}\n')
    with pytest.raises(ValueError, match="not this model's predictions"):
        predict_files(model, [archive], notes, workers=0, resume=True)
    assert notes.read_text() == '{"id": 1, "note": "important"}\n'


def test_resume_matches_relative_and_absolute_paths(
    model: Path, archive: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "p.jsonl"
    monkeypatch.chdir(archive.parent)
    predict_files(model, [Path(archive.name)], out, workers=0)
    calls: list[tuple[int, int]] = []
    again = predict_files(
        model, [archive], out, workers=0, resume=True, progress=lambda *c: calls.append(c)
    )
    assert (again.skipped, again.predicted) == (12, 0)
    assert calls[0] == (12, 13)  # the bar starts where the last run stopped
    warnings: list[str] = []
    other = tmp_path / "other"
    other.mkdir()
    (other / "x.png").symlink_to(next(archive.rglob("img00.png")).resolve())
    predict_files(model, [other], out, workers=0, resume=True, warn=warnings.append)
    assert any("none of the 12 rows" in message for message in warnings)


def test_a_decoder_crash_is_one_bad_file(model, archive, tmp_path, monkeypatch) -> None:
    from covidcxr import io as covidcxr_io

    original = covidcxr_io.read_image

    def flaky(path, **kwargs):
        if "img03" in str(path):
            raise ZeroDivisionError("a decoder bug")
        return original(path, **kwargs)

    monkeypatch.setattr(covidcxr_io, "read_image", flaky)
    result = predict_files(model, [archive], tmp_path / "p.csv", workers=0)
    assert result.predicted == 11
    reasons = dict((p.name, r) for p, r in result.failures)
    assert "ZeroDivisionError: a decoder bug" in reasons["img03.png"]


# --- what predict refuses to write, and whose rows a file holds --------------------------------


def test_an_existing_output_needs_resume_or_force(model, archive, tmp_path) -> None:
    out = tmp_path / "p.csv"
    predict_files(model, [archive], out, workers=0)
    first = out.read_bytes()
    with pytest.raises(FileExistsError, match="--resume to continue it, --force to replace it"):
        predict_files(model, [archive], out, workers=0)
    assert out.read_bytes() == first
    replaced = predict_files(model, [archive], out, workers=0, force=True)
    assert replaced.predicted == 12 and len(read_rows(out)) == 12
    with pytest.raises(ValueError, match="contradict"):
        predict_files(model, [archive], out, workers=0, resume=True, force=True)


def test_outputs_that_are_not_prediction_files_are_refused(model, archive, tmp_path) -> None:
    xray = next(archive.rglob("img02.png"))
    before = xray.read_bytes()
    for out, message in (
        (xray, "is one of the inputs|predictions are written as"),
        (tmp_path / "p.txt", r"\.txt is none of them"),
        (tmp_path / "p", "no suffix is none of them"),
        (tmp_path, "is a folder"),
    ):
        with pytest.raises(ValueError, match=message):
            predict_files(model, [archive, xray], out, workers=0, force=True)
    assert xray.read_bytes() == before
    table = tmp_path / "list.csv"
    table.write_text("not an image\n")
    with pytest.raises(ValueError, match="is one of the inputs"):
        predict_files(model, [table], table, workers=0, force=True)


def test_the_output_records_its_model_and_resume_refuses_another(model, archive, tmp_path) -> None:
    out = tmp_path / "p.jsonl"
    predict_files(model, [archive], out, workers=0)
    recorded = json.loads((tmp_path / "p.jsonl.model.json").read_text())
    assert recorded["sha256"] == load_model(model).identity()["sha256"]
    assert recorded["weights"].endswith("model.safetensors")
    out.write_bytes(out.read_bytes()[: len(out.read_bytes()) // 2])
    other = save_untrained(tmp_path / "other", seed=7)
    before = out.read_bytes()
    with pytest.raises(ValueError, match=r"written by tiny-cnn .* not by this model"):
        predict_files(other, [archive], out, workers=0, resume=True)
    assert out.read_bytes() == before  # nothing written
    resumed = predict_files(model, [archive], out, workers=0, resume=True)
    assert resumed.skipped + resumed.predicted == 12


def test_identity_is_the_same_for_the_same_weights(model, tmp_path) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(model, copy)
    assert load_model(copy).identity()["sha256"] == load_model(model).identity()["sha256"]
    assert save_untrained(tmp_path / "again") is not None  # seed 0, as the fixture
    again = load_model(tmp_path / "again").identity()["sha256"]
    assert again == load_model(model).identity()["sha256"]


def test_cli_fails_when_nothing_was_predicted(model: Path, tmp_path: Path) -> None:
    text = tmp_path / "notes.png"
    text.write_text("not an X-ray")
    result = runner.invoke(app, ["predict", str(model), str(text), str(tmp_path / "gone.png"),
                                 "--quiet", "--workers", "0"])  # fmt: skip
    assert result.exit_code == 3, result.output
    assert "2 files skipped" in result.output and "no input could be read" in result.output


def test_cli_refuses_to_overwrite(model: Path, archive: Path, tmp_path: Path) -> None:
    out = tmp_path / "p.csv"
    args = ["predict", str(model), str(archive), "--out", str(out), "--quiet", "--workers", "0"]
    assert runner.invoke(app, args).exit_code == 1  # broken.png
    refused = runner.invoke(app, args)
    assert refused.exit_code == 2 and "already exists" in refused.output
    assert runner.invoke(app, [*args, "--force"]).exit_code == 1
