"""Fixtures of the annotation tests: a folder of real sample cases, some of their labels, no stray learner."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from annotation_support import kill_learners, sample_images, sample_labels


@pytest.fixture
def images(tmp_path: Path) -> Path:
    """The 12 bundled Hippocampus images in their own folder."""
    return sample_images(tmp_path)


@pytest.fixture
def labels(tmp_path: Path) -> Path:
    """The reference label maps of the first three cases (no dataset.json beside them)."""
    return sample_labels(tmp_path)


@pytest.fixture(autouse=True)
def _no_learner_outlives_its_test(tmp_path: Path) -> Iterator[None]:
    """Kill every background learner of the test's projects when the test ends."""
    yield
    kill_learners(tmp_path)
