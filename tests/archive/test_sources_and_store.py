"""The archive engine without a cluster: lists of files, the output folder's parts and resume,
the refusals, and a clear error (not an import failure) where Ray is not installed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from archive.ray_helpers import ray_or_skip
from covidcxr.archive import ray_engine
from covidcxr.archive.sources import iter_sources
from covidcxr.archive.store import PREDICTIONS, ArchiveOutput
from helpers import gradient, write_png

NAMES = ["Normal", "COVID", "Viral Pneumonia"]


@pytest.fixture(autouse=True)
def _pyarrow() -> None:
    ray_or_skip()  # pyarrow comes with the ray extra


def row(path: str, p_covid: float = 0.5) -> dict:
    rest = (1.0 - p_covid) / 2
    return {
        "path": path, "predicted": "COVID", "confidence": p_covid,
        "p_Normal": rest, "p_COVID": p_covid, "p_Viral Pneumonia": rest,
    }  # fmt: skip


def test_lists_name_files_and_folders_relative_to_themselves(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    images = [write_png(tmp_path / "films" / f"{name}.png", gradient()) for name in "abc"]
    write_png(tmp_path / "films" / "masks" / "a.png", np.zeros((8, 8), np.uint8))
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("path,label\nfilms/a.png,COVID\n,Normal\nfilms/gone.png,Normal\n")
    listing = tmp_path / "lists" / "more.parquet"
    listing.parent.mkdir()
    pq.write_table(pa.table({"path": ["../films", str(images[0])]}), listing)

    found = list(iter_sources([manifest, listing]))

    assert found == [
        (images[0], None),
        (Path(f"{manifest}, row 3"), "no path"),
        (tmp_path / "films" / "gone.png", "no such file or folder"),
        (images[1], None),  # the folder walked, its masks left out, a.png listed once
        (images[2], None),
    ]
    assert all(path.is_absolute() for path, _ in found)


def test_a_list_without_a_path_column_is_refused(tmp_path: Path) -> None:
    listing = tmp_path / "files.csv"
    listing.write_text("file,label\na.png,COVID\n")
    with pytest.raises(ValueError, match=r"needs a 'path' column.*'file', 'label'"):
        list(iter_sources([listing]))


def test_parts_left_by_a_killed_run_count_as_done_and_are_merged_in_order(
    tmp_path: Path,
) -> None:
    import pyarrow.parquet as pq

    out = tmp_path / "out"
    killed = ArchiveOutput(out, NAMES, checked=False)
    killed.add([row("/x/b.png", 0.7)])
    killed.flush()
    killed.add([row("/x/a.png", 0.6)])  # not flushed: lost with the driver
    with pytest.raises(FileExistsError, match="--resume"):
        ArchiveOutput(out, NAMES, checked=False)

    resumed = ArchiveOutput(out, NAMES, checked=False, resume=True)
    assert resumed.done == {"/x/b.png"}
    resumed.add([row("/x/a.png", 0.6), row("/x/c.png", 0.9)])
    order = {"/x/a.png": 0, "/x/b.png": 1, "/x/c.png": 2}
    assert resumed.finish([(Path("/x/d.png"), "the file is empty")], order) == 3

    table = pq.read_table(out / PREDICTIONS)
    assert table.column("path").to_pylist() == ["/x/a.png", "/x/b.png", "/x/c.png"]
    assert table.column("p_COVID").to_pylist() == [0.6, 0.7, 0.9]
    assert (out / "predictions.csv").read_text().splitlines()[1] == (
        "/x/a.png,COVID,0.6,0.2,0.6,0.2"
    )
    assert (out / "failures.csv").read_text() == "path,reason\n/x/d.png,the file is empty\n"
    assert not (out / ".parts").exists()
    assert ArchiveOutput(out, NAMES, checked=False, resume=True).done == set(order)


def test_rows_of_another_model_are_not_resumed(tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = ArchiveOutput(out, NAMES, checked=False)
    first.add([row("/x/a.png")])
    first.finish([], {})
    with pytest.raises(ValueError, match="not this model's predictions"):
        ArchiveOutput(out, NAMES, checked=True, resume=True)  # with ood columns
    forced = ArchiveOutput(out, NAMES, checked=True, force=True)
    assert forced.done == set() and not (out / PREDICTIONS).exists()


def test_without_ray_the_error_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails as if not installed
    with pytest.raises(ray_engine.RayMissingError, match=r"pip install 'covidcxr\[ray\]'"):
        ray_engine.predict_on_ray("seed-cnn-db", [], "unused")


def test_importing_the_archive_package_imports_no_ray() -> None:
    code = (
        "import sys, covidcxr.archive, covidcxr.archive.ray_engine; "
        "print(sorted(m for m in ('ray', 'pyarrow', 'torch') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
