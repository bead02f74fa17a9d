"""Files replaced whole or not at all (covidcxr.atomic)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from covidcxr import atomic


def test_a_write_replaces_the_file_whole_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "settings.yaml"
    atomic.write_text(target, "one: 1\n")
    atomic.write_text(target, "two: 2\n")
    assert target.read_text() == "two: 2\n"
    assert [p.name for p in target.parent.iterdir()] == ["settings.yaml"]
    mask = os.umask(0)
    os.umask(mask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask  # not mkstemp's private 0600


def test_a_failure_midway_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "model.json"
    atomic.write_bytes(target, b"old")
    with pytest.raises(RuntimeError, match="killed"), atomic.replacing(target) as partial:
        partial.write_bytes(b"half of the ne")
        raise RuntimeError("killed")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.json"]


def test_a_failed_replace_keeps_the_old_file(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "splits.csv"
    atomic.write_text(target, "old\n")

    def failing_replace(source: str, destination: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(atomic.os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        atomic.write_text(target, "new\n")
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["splits.csv"]


def test_two_writers_of_one_file_never_share_a_temporary(tmp_path: Path) -> None:
    target = tmp_path / "splits.csv"
    with atomic.replacing(target) as first, atomic.replacing(target) as second:
        assert first != second
        first.write_text("first\n")
        second.write_text("second\n")
    assert target.read_text() == "first\n"  # the last to finish wins, whole
