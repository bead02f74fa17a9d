"""The HTML report: every section present, every image decodes, numbers equal metrics.json."""

from __future__ import annotations

import base64
import io
import json
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from covidcxr.analysis.report import SECTIONS, build_report
from covidcxr.cli import app
from covidcxr.data.phantoms import write_phantoms
from covidcxr.training.config import TrainConfig
from covidcxr.training.train import train


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.sections: list[str] = []
        self.images: list[str] = []
        self.text: list[str] = []
        self.external: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "section":
            self.sections.append(values.get("id") or "")
        if tag == "img":
            self.images.append(values.get("src") or "")
        if tag in ("link", "script") or (
            tag == "img" and not (values.get("src") or "").startswith("data:")
        ):
            self.external.append(tag)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("report")
    data = root / "data"
    write_phantoms(data, per_class=16, seed=3)
    out = root / "run"
    config = TrainConfig(
        data=str(data), model="tiny-cnn", out=str(out), max_epochs=2, batch_size=8,
        quiet=True, accelerator="cpu", decode_workers=0, cache_dir=str(root / "cache"),
    )  # fmt: skip
    assert train(config, log=lambda _: None) is not None
    return out, data


def parse(path: Path) -> _Collector:
    collector = _Collector()
    collector.feed(path.read_text(encoding="utf-8"))
    return collector


def test_report_with_data_has_every_section_and_the_run_numbers(
    run: tuple[Path, Path], tmp_path: Path
) -> None:
    run_dir, data = run
    result = build_report(run_dir, tmp_path / "report.html", data, workers=0)
    page = parse(result.path)
    assert page.sections == [key for key, _ in SECTIONS]
    assert not page.external  # self-contained: no scripts, stylesheets or linked images
    assert len(page.images) >= 8  # EDA figures, curves, confusion matrix, reliability, gallery
    for source in page.images:
        assert source.startswith("data:image/png;base64,")
        with Image.open(io.BytesIO(base64.b64decode(source.split(",", 1)[1]))) as image:
            image.load()
            assert image.width > 20 and image.height > 20
    text = " ".join(page.text)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert f"{100 * metrics['test_accuracy']:.2f} %" in text
    assert f"{metrics['calibration']['temperature']:.2f}" in text
    for name, scores in metrics["test"]["per_class"].items():
        assert f"{100 * scores['recall']:.2f} %" in text, name
    low = metrics["test_intervals"]["accuracy"]["low"]
    assert f"{100 * low:.2f} %" in text
    for section in result.sections:
        assert section.finding and section.finding in text
    # the probes ran on the test split and said something about them
    assert result.data["probes"]["lungs_removed"]["num_images"] == metrics["test"]["num_samples"]
    assert result.data["leakage"]["finding"]
    # Grad-CAM beside its even-spread baseline, counts explained, one verdict, ROC, provenance
    assert "Grad-CAM was computed for" in text
    fractions = result.data["lung_fractions"]  # None when this tiny run's maps are all zero
    if fractions is not None:
        assert 0 < fractions["lung_area"] < 1 and "a map spread evenly" in text
    assert result.data["verdict"]["evidence"]
    assert set(result.data["roc_auc"]) == set(metrics["class_names"])
    assert all(0 <= auc <= 1 for auc in result.data["roc_auc"].values())
    provenance = result.data["provenance"]
    assert provenance["synthetic"] is True and provenance["data"] == str(data)
    assert f"covidcxr: {provenance['covidcxr']}" in text


def test_the_verdict_reconciles_heatmaps_and_probes() -> None:
    """The demo's contradiction: 22.65 % of the evidence in lungs covering 31 %, no accuracy
    with the lungs blacked out, 96 % falling to 42 % with only the lungs: one conclusion."""
    from covidcxr.analysis.report.gather import _verdict_section

    chance = {"majority_rate": 1 / 3}
    extra = {
        "lung_fractions": {"overall": {"mean": 0.2265}, "lung_area": 0.31},
        "probes": {
            "lungs_removed": {"accuracy": 0.35, "chance": chance, "flag": False},
            "lungs_only": {"accuracy": 0.42, "intact_accuracy": 0.96, "chance": chance},
        },
    }
    section = _verdict_section(extra)
    assert section.finding.startswith("It depends on the image outside the lungs")
    assert "heatmaps favour the lungs little" in section.finding
    assert "loses most of its accuracy" in section.finding
    extra["lung_fractions"]["overall"]["mean"] = 0.8
    extra["probes"]["lungs_only"]["accuracy"] = 0.93
    assert _verdict_section(extra).finding.startswith("It looks mostly at the lungs")
    assert "Not measured" in _verdict_section({}).finding


def test_calibration_prose_says_when_no_temperature_was_fitted(tmp_path: Path) -> None:
    from covidcxr.analysis.report.gather import _calibration_section

    part = {"ece_before": 0.044, "ece_after": 0.044, "nll_before": 0.2, "nll_after": 0.2}
    note = "the validation split does not pin the temperature down: kept T = 1"
    metrics = {"calibration": {"temperature": 1.0, "val": part, "test": part, "note": note}}
    finding = _calibration_section(tmp_path, metrics).finding
    assert finding.startswith("No temperature was applied") and note in finding
    assert "from 4.40 % to 4.40 %" not in finding


def test_report_without_data_still_has_every_section(
    run: tuple[Path, Path], tmp_path: Path
) -> None:
    run_dir, _ = run
    result = CliRunner().invoke(
        app, ["report", str(run_dir), "--out", str(tmp_path / "r.html"), "--quiet"]
    )
    assert result.exit_code == 0, result.output
    page = parse(tmp_path / "r.html")
    assert page.sections == [key for key, _ in SECTIONS]
    assert "Pass --data" in " ".join(page.text)
    # a model trained on phantoms says so at the top of its report
    assert "trained on synthetic phantoms only" in " ".join(page.text[:12])


def test_predict_says_a_phantom_model_knows_nothing_of_real_films(
    run: tuple[Path, Path], real_dataset: Path
) -> None:
    run_dir, _ = run
    image = next(real_dataset.rglob("images/*.png"))
    result = CliRunner().invoke(app, ["predict", str(run_dir), str(image)])
    assert result.exit_code == 0, result.output
    assert "warning: This model was trained on synthetic phantoms only" in result.output


def test_report_refuses_a_folder_without_a_run(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 2 and "metrics.json" in result.output


def test_explain_command_draws_heatmaps_with_the_dataset_masks(
    run: tuple[Path, Path], tmp_path: Path, real_dataset: Path
) -> None:
    run_dir, _ = run
    images = real_dataset / "Viral Pneumonia" / "images"
    result = CliRunner().invoke(
        app,
        ["explain", str(run_dir), str(images), "--out", str(tmp_path / "cams"), "--data",
         str(real_dataset), "--method", "gradcam++", "--quiet"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.output.count("% in lungs") == 15
    overlays = sorted((tmp_path / "cams").glob("*.png"))
    assert len(overlays) == 15
    with Image.open(overlays[0]) as overlay:
        assert overlay.mode == "RGB" and overlay.size == (299, 299)


def test_report_scores_external_sets_and_the_verdict_repeats_them(
    run: tuple[Path, Path], tmp_path: Path
) -> None:
    from helpers import REAL_DATASET

    run_dir, data = run
    result = build_report(run_dir, tmp_path / "r.html", data, workers=0, external=[REAL_DATASET])
    (external,) = result.data["external"]
    assert external["num_images"] == 44 and external["verdict"]
    sections = {s.key: s for s in result.sections}
    assert external["verdict"] in sections["external"].finding
    assert external["verdict"] in " ".join(result.data["verdict"]["evidence"])
    if external["collapsed"]:  # a phantom-trained model on real films: expected
        assert "collapse" in sections["verdict"].finding
    text = " ".join(parse(result.path).text)
    assert "points" in text and "real-sample" in text
