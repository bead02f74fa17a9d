"""Shared fixtures. Builders of test files live in ``helpers.py``."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import REAL_DATASET


@pytest.fixture(scope="session")
def real_dataset() -> Path:
    """The real-sample copy of the database's layout (read-only; never copied into the repo)."""
    assert REAL_DATASET.is_dir(), (
        f"{REAL_DATASET} is missing: tests expect the shared folder beside the repository "
        "(../shared/data/real-sample)"
    )
    return REAL_DATASET
