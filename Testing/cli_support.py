"""Helpers for tests that run the ``medsegcnn`` command line as a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "Resources" / "SampleData" / "Hippocampus"
PRED, REF = SAMPLE / "predictionsTr", SAMPLE / "labelsTr"


def medsegcnn(*args: str | os.PathLike[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "MedSegCNNLib", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )


def assert_clean_failure(result: subprocess.CompletedProcess[str], fragment: str, status: int = 1) -> None:
    """One ``medsegcnn: error:`` line naming the problem, the given exit status, no traceback."""
    assert result.returncode == status, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, result.stderr
    assert fragment in errors[0], result.stderr
