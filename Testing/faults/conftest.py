"""Fixtures shared by the fault-injection suite."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from cli_support import SAMPLE


@pytest.fixture
def small_dataset(tmp_path: Path) -> Path:
    """Three Hippocampus cases in imagesTr/ and labelsTr/ (matched by name, no dataset.json)."""
    folder = tmp_path / "data"
    for sub in ("imagesTr", "labelsTr"):
        (folder / sub).mkdir(parents=True)
        for case in sorted((SAMPLE / sub).iterdir())[:3]:
            shutil.copy(case, folder / sub / case.name)
    return folder
