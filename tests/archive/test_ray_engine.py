"""``predict_on_ray`` on a real Ray cluster (``ray start --head``, 2 CPUs, loopback): the local
engine's answers and failures, a classifier actor killed mid-run without a row lost, and a rerun
that resumes."""

from __future__ import annotations

import csv
import os
import shutil
import signal
from pathlib import Path

import pytest

from archive.ray_helpers import processes_named
from covidcxr.inference.predict import predict_files
from helpers import real_images

pytestmark = pytest.mark.slow

MODEL = "seed-cnn-db"  # shipped, with an out-of-distribution reference: every column is checked
ACTOR = "MapBatches(ClassifyBatch)"  # in the process title of a classifier actor


def copy_real(
    real_dataset: Path, folder: Path, count: int, start: int = 0, link: bool = False
) -> list[Path]:
    """``count`` real X-rays copied (or linked) into two sub-folders of ``folder``, cycling
    through the real sample when it holds fewer."""
    sources = real_images(real_dataset)
    copies = []
    for index in range(start, start + count):
        target = folder / f"site{index % 2}" / f"xray{index:03d}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        source = sources[index % len(sources)]
        if link:
            target.symlink_to(source.resolve())  # another path: another row
        else:
            shutil.copyfile(source, target)
        copies.append(target)
    return copies


def add_bad_files(folder: Path, good: Path) -> None:
    """An empty file, text named .png and a truncated PNG."""
    (folder / "empty.png").write_bytes(b"")
    (folder / "site0" / "notes.png").write_text("not an image\n")
    (folder / "site1" / "cut.png").write_bytes(good.read_bytes()[:400])


def read_predictions(out: Path) -> list[dict]:
    import pyarrow.parquet as pq

    return pq.read_table(out / "predictions.parquet").to_pylist()


def assert_same_rows(ray_rows: list[dict], local_rows: list[dict]) -> None:
    assert [row["path"] for row in ray_rows] == [row["path"] for row in local_rows]
    for ray_row, local_row in zip(ray_rows, local_rows, strict=True):
        assert list(ray_row) == list(local_row)
        for column, value in local_row.items():
            if isinstance(value, float):
                assert ray_row[column] == pytest.approx(value, abs=1e-5), column
            else:
                assert ray_row[column] == value, column


def test_ray_gives_the_local_engines_predictions_and_failures(
    ray_cluster: tuple[str, int], real_dataset: Path, tmp_path: Path
) -> None:
    from covidcxr.archive import predict_on_ray

    address, _ = ray_cluster
    folder = tmp_path / "archive"
    good = copy_real(real_dataset, folder, 10)
    add_bad_files(folder, good[0])
    inputs = [folder, tmp_path / "gone"]
    local_csv = tmp_path / "local.csv"
    local = predict_files(MODEL, inputs, local_csv, workers=0, keep_rows=True)

    out = tmp_path / "out"
    result = predict_on_ray(MODEL, inputs, out, address=address, batch_size=4)

    assert (result.predicted, result.skipped, result.out) == (10, 0, out)
    assert_same_rows(read_predictions(out), local.rows)
    assert sorted(result.failures) == sorted(local.failures)
    assert len(result.failures) == 4  # three bad files and the missing input
    with (out / "failures.csv").open(newline="", encoding="utf-8") as handle:
        listed = [(Path(row["path"]), row["reason"]) for row in csv.DictReader(handle)]
    assert listed == result.failures
    with (out / "predictions.csv").open() as ray_file, local_csv.open() as local_file:
        assert ray_file.readline() == local_file.readline()  # the same header
        assert len(ray_file.readlines()) == 10
    assert (out / "predictions.parquet.model.json").read_text() == (
        tmp_path / "local.csv.model.json"
    ).read_text()


def test_a_killed_actor_loses_nothing_and_a_rerun_resumes(
    ray_cluster: tuple[str, int],
    real_dataset: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from covidcxr.archive import predict_on_ray, ray_engine

    address, head = ray_cluster
    folder = tmp_path / "archive"
    count = 120
    copy_real(real_dataset, folder, count, link=True)
    monkeypatch.setattr(ray_engine, "FILES_PER_BLOCK", 4)  # many small tasks: rows come early
    killed: list[int] = []
    restarted: list[int] = []

    def kill_an_actor_once(done: int, total: int) -> None:
        # Called on the driver as rows arrive: once some have and most are still due, SIGKILL
        # the classifier actor in the middle of its work; then watch for its replacement.
        actors = processes_named(head, ACTOR)
        if not killed and 8 <= done <= total // 2:
            for pid in actors:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
        elif killed:
            restarted.extend(pid for pid in actors if pid not in killed)

    out = tmp_path / "out"
    result = predict_on_ray(
        MODEL, [folder], out, address=address, batch_size=2, progress=kill_an_actor_once
    )

    assert killed, f"no process titled {ACTOR} under the Ray head to kill"
    assert restarted, "the killed actor was not replaced while rows were still due"
    assert (result.predicted, result.failures) == (count, [])
    first = read_predictions(out)

    copy_real(real_dataset, folder, 6, start=count)
    again = predict_on_ray(MODEL, [folder], out, address=address, batch_size=8, resume=True)

    assert (again.skipped, again.predicted, again.failures) == (count, 6, [])
    everything = predict_files(MODEL, [folder], workers=0, keep_rows=True).rows
    assert_same_rows(read_predictions(out), everything)  # every file once, the same answers
    before = {row["path"] for row in first}
    assert_same_rows(first, [row for row in everything if row["path"] in before])
    assert len(first) == count and not (out / ".parts").exists()
