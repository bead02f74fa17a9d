"""The command line: thin over the library, fast to start, clear errors with exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from covidcxr.cli import app

runner = CliRunner()


def test_help_lists_the_commands() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "data" in result.output and "research use only" in result.output
    result = runner.invoke(app, ["data", "--help"])
    for command in ("inspect", "phantoms", "split", "cache"):
        assert command in result.output


def test_cli_import_stays_light() -> None:
    # `covidcxr --help` must answer in about a second: no numpy / torch / matplotlib at import.
    script = (
        "import sys, covidcxr.cli\n"
        "heavy = [m for m in ('numpy', 'torch', 'matplotlib', 'PIL', 'pydicom', 'lightning')"
        " if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.startswith("covidcxr ")


def test_phantoms_inspect_split_cache_round_trip(tmp_path: Path) -> None:
    data = tmp_path / "data"
    result = runner.invoke(
        app, ["data", "phantoms", str(data), "--per-class", "6", "--seed", "3", "--quiet"]
    )
    assert result.exit_code == 0, result.output
    assert "COVID 6" in result.output

    again = runner.invoke(app, ["data", "phantoms", str(data), "--per-class", "6", "--quiet"])
    assert again.exit_code == 2 and "overwrite" in again.output

    result = runner.invoke(
        app,
        ["data", "inspect", str(data), "--json", "--workers", "0", "--out", str(tmp_path / "f")],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["counts"] == {"Normal": 6, "COVID": 6, "Viral Pneumonia": 6}
    assert report["layout"] == "radiography-database" and report["unreadable"] == []
    assert (tmp_path / "f" / "class_counts.png").is_file()

    text = runner.invoke(app, ["data", "inspect", str(data), "--workers", "0", "--quiet"])
    assert text.exit_code == 0 and "Layout:  radiography-database" in text.output

    splits = tmp_path / "splits.csv"
    result = runner.invoke(
        app, ["data", "split", str(data), "--out", str(splits), "--workers", "0", "--quiet"]
    )
    assert result.exit_code == 0, result.output
    assert splits.read_text().startswith("path,label,class_name,split")

    cache_dir = tmp_path / "cache"
    args = ["data", "cache", str(data), "--size", "32", "--masks", "--cache-dir", str(cache_dir)]
    first = runner.invoke(app, [*args, "--workers", "0", "--quiet"])
    assert first.exit_code == 0, first.output
    assert "18 decoded" in first.output
    second = runner.invoke(app, [*args, "--workers", "0", "--quiet"])
    assert "images: 18 at 32x32 — 18 already cached, 0 decoded" in second.output


def test_errors_exit_2_with_a_message(tmp_path: Path) -> None:
    result = runner.invoke(app, ["data", "inspect", str(tmp_path / "nowhere")])
    assert result.exit_code == 2 and "no such file or folder" in result.output
    result = runner.invoke(
        app, ["data", "split", str(tmp_path), "--out", "x.csv", "--fractions", "a,b"]
    )
    assert result.exit_code == 2 and "--fractions" in result.output


def test_manifests_outside_their_folder_need_allow_outside(tmp_path: Path) -> None:
    from covidcxr.data.phantoms import write_phantoms

    data = tmp_path / "data"
    write_phantoms(data, per_class=6, seed=5)
    images = sorted(data.glob("*/images/*.png"))
    lists = tmp_path / "lists"
    lists.mkdir()
    manifest = lists / "manifest.csv"
    rows = [f"../data/{p.relative_to(data).as_posix()},{p.parent.parent.name}" for p in images]
    manifest.write_text("path,label\n" + "\n".join(rows) + "\n")
    splits = tmp_path / "splits.csv"
    for command in (["split", str(manifest), "--out", str(splits)], ["inspect", str(manifest)]):
        refused = runner.invoke(app, ["data", *command, "--workers", "0", "--quiet"])
        assert refused.exit_code == 2 and "--allow-outside" in refused.output, refused.output
        allowed = runner.invoke(
            app, ["data", *command, "--workers", "0", "--quiet", "--allow-outside"]
        )
        assert allowed.exit_code == 0, allowed.output
    assert len(splits.read_text().splitlines()) == len(images) + 1


def test_cache_lists_entries_left_out_before_reading(tmp_path: Path) -> None:
    from covidcxr.data.phantoms import write_phantoms

    data = tmp_path / "data"
    write_phantoms(data, per_class=3, seed=6)
    (data / "COVID" / "images" / "COVID-99.png").symlink_to(tmp_path / "gone.png")
    result = runner.invoke(
        app,
        ["data", "cache", str(data), "--size", "16", "--workers", "0", "--quiet",
         "--cache-dir", str(tmp_path / "cache")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "1 entry skipped or wrong before reading" in result.output
    assert "COVID-99.png" in result.output and "images: 9 at 16x16" in result.output


def test_serve_checks_its_limits_before_serving(tmp_path: Path) -> None:
    for flags, named in (
        (["--max-pending", "0"], "--max-pending"),
        (["--decode-budget-mb", "10"], "--decode-budget-mb"),
        (["--allowed-host", "a*b.org"], "--allowed-host"),
        (["--timeout", "-1"], "--timeout"),
    ):
        result = runner.invoke(app, ["serve", str(tmp_path / "no-model"), *flags])
        assert result.exit_code == 2, (flags, result.output)
        assert named in result.output and "serving" not in result.output, result.output


def test_predict_engine_flags_are_checked_before_anything_runs(tmp_path: Path) -> None:
    image = tmp_path / "x.png"
    image.write_bytes(b"")
    bogus = runner.invoke(app, ["predict", "seed-cnn-db", str(image), "--engine", "spark"])
    assert bogus.exit_code == 2 and "--engine should be local or ray" in bogus.output
    no_out = runner.invoke(app, ["predict", "seed-cnn-db", str(image), "--engine", "ray"])
    assert no_out.exit_code == 2 and "--engine ray needs --out" in no_out.output
    onnx = runner.invoke(
        app,
        ["predict", "seed-cnn-db", str(image), "--engine", "ray", "--out", str(tmp_path / "o"),
         "--runtime", "onnx"],
    )  # fmt: skip
    assert onnx.exit_code == 2 and "leave out --runtime" in onnx.output
