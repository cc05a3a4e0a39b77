"""Helpers of the annotation tests: the bundled sample cases and their references."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
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


def kill_learners(folder: Path) -> None:
    """Kill every background learner of the projects below ``folder`` (each leads its own process group)."""
    from MedSegCNNLib.annotation.learner import LEARNER_LOCK
    from MedSegCNNLib.folder_lock import lock_is_held

    for lock in folder.rglob(LEARNER_LOCK):
        if os.name == "posix" and lock_is_held(lock):
            with contextlib.suppress(OSError, ValueError, IndexError):
                os.killpg(int(lock.read_text().splitlines()[0]), signal.SIGKILL)
