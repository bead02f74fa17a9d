"""External sets in `covidcxr evaluate`: scored whole, compared class by class with the main
set, per source, and a verdict that says when the figures collapse."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from covidcxr.analysis.evaluate import compare_sets
from covidcxr.cli import app
from helpers import REAL_DATASET


def _figures(accuracy: float, sensitivity: dict[str, float]) -> dict:
    def interval(value: float) -> dict:
        return {"value": value, "low": value - 0.05, "high": min(1.0, value + 0.05)}

    return {
        "data": "somewhere",
        "test_accuracy": accuracy,
        "test": {"num_samples": 50},
        "test_intervals": {
            "accuracy": interval(accuracy),
            "per_class": {
                name: {
                    "sensitivity": interval(v),
                    "specificity": interval(0.9),
                    "ppv": interval(0.8),
                }
                for name, v in sensitivity.items()
            },
        },
        "per_source": {"single_source_classes": []},
    }


def test_a_fall_in_one_class_is_called_a_collapse_and_small_changes_are_not() -> None:
    internal = _figures(0.95, {"Normal": 0.96, "COVID": 0.90})
    fine = compare_sets(internal, _figures(0.91, {"Normal": 0.93, "COVID": 0.85}))
    assert not fine["collapsed"] and "no class's sensitivity falls" in fine["verdict"]
    assert abs(fine["per_class"]["COVID"]["sensitivity"]["difference"] + 0.05) < 1e-9
    assert fine["per_class"]["COVID"]["sensitivity"]["internal"] == 0.90
    bad = compare_sets(internal, _figures(0.90, {"Normal": 0.96, "COVID": 0.60}))
    assert bad["collapsed"] and "COVID sensitivity -30.0 points" in bad["verdict"]
    worse = compare_sets(internal, _figures(0.70, {"Normal": 0.9, "COVID": 0.85}))
    assert worse["verdict"].split("collapse: ")[1].startswith("accuracy -25.0 points")


def test_evaluate_scores_external_sets_and_compares_them(tmp_path: Path) -> None:
    out = tmp_path / "evaluation"
    arguments = ["evaluate", "seed-cnn-db", "--data", str(REAL_DATASET), "--out", str(out)]
    arguments += ["--external", str(REAL_DATASET), "-q"]
    result = CliRunner().invoke(app, arguments)
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    (external,) = metrics["external"]
    assert (out / "external" / external["name"] / "metrics.json").is_file()
    assert external["num_images"] == metrics["test"]["num_samples"]
    assert abs(external["accuracy_difference"]) < 1e-9 and not external["collapsed"]
    for figures in external["per_class"].values():
        assert figures["sensitivity"]["difference"] in (None, 0.0)
    assert "External set" in result.output and "sensitivity" in result.output
