"""Helpers of the annotation tests: the bundled sample cases and their references."""

from __future__ import annotations

import shutil
from pathlib import Path

from cli_support import SAMPLE

CASES = sorted(path.name.removesuffix(".nii.gz") for path in (SAMPLE / "imagesTr").iterdir())


def reference(case: str) -> Path:
    """The bundled reference label map of ``case`` (plays the user's corrected segmentation)."""
    return SAMPLE / "labelsTr" / f"{case}.nii.gz"


def sample_images(tmp_path: Path) -> Path:
    """The 12 bundled Hippocampus images, copied into ``tmp_path/images``."""
    folder = tmp_path / "images"
    shutil.copytree(SAMPLE / "imagesTr", folder)
    return folder
