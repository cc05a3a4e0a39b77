"""Fixtures of the annotation tests: a folder of real sample cases and projects made from it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from annotation_support import CASES, kill_learners, sample_images
from cli_support import SAMPLE


@pytest.fixture
def images(tmp_path: Path) -> Path:
    """The 12 bundled Hippocampus images in their own folder."""
    return sample_images(tmp_path)


@pytest.fixture
def labels(tmp_path: Path) -> Path:
    """The reference label maps of the first three cases (no dataset.json beside them)."""
    folder = tmp_path / "labels"
    folder.mkdir()
    for case in CASES[:3]:
        shutil.copy(SAMPLE / "labelsTr" / f"{case}.nii.gz", folder)
    return folder


@pytest.fixture(autouse=True)
def _no_learner_outlives_its_test(tmp_path: Path):
    """Kill every background learner of the test's projects when the test ends (a failing test leaves none)."""
    yield
    kill_learners(tmp_path)
