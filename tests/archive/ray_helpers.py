"""Helpers of the archive tests: find the processes of a Ray cluster started for them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

INSTALL = "pip install -e '.[ray]'"


def ray_or_skip() -> None:
    """Skip (or, under ``CI=true``, fail) when Ray Data is not installed."""
    try:
        import pyarrow  # noqa: F401
        import ray.data  # noqa: F401
    except ImportError as error:
        message = f"Ray Data is not installed ({error}); {INSTALL} to run the archive tests"
        if os.environ.get("CI") == "true":
            pytest.fail(message + " (CI=true: these tests must run)")
        pytest.skip(message)


def descendants(pid: int) -> set[int]:
    """Process ids under ``pid`` (Linux ``/proc``)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    found: set[int] = set()
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.add(child)
            stack.append(child)
    return found


def processes_named(root: int, fragment: str) -> list[int]:
    """Processes under ``root`` whose command line (Ray's process title) holds ``fragment``."""
    found = []
    for pid in sorted(descendants(root)):
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if fragment in title:
            found.append(pid)
    return found
