"""Helpers for tests that run the ``medsegcnn`` command line as a subprocess (or, for further cases of one
fault class, in the test's own process)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from subprocess import CompletedProcess

import pytest

from MedSegCNNLib.cli.main import main

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


def medsegcnn_in_process(capsys: pytest.CaptureFixture[str], *args: str | os.PathLike[str]) -> CompletedProcess[str]:
    """``medsegcnn ARGS`` run by the command line's ``main`` in this process: the exit status (``main``'s return,
    or argparse's ``SystemExit``) and the captured output, as :func:`medsegcnn` gives them, without a new
    Python's start-up of a few seconds. For the further cases of one fault class, beside a real subprocess."""
    argv = [str(arg) for arg in args]
    capsys.readouterr()
    try:
        status = main(argv)
    except SystemExit as exit_:
        status = exit_.code if isinstance(exit_.code, int) else 1
    out, err = capsys.readouterr()
    return CompletedProcess(["medsegcnn", *argv], status, out, err)


def assert_clean_failure(result: subprocess.CompletedProcess[str], fragment: str, status: int = 1) -> None:
    """One ``medsegcnn: error:`` line naming the problem, the given exit status, no traceback."""
    assert result.returncode == status, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, result.stderr
    assert fragment in errors[0], result.stderr
