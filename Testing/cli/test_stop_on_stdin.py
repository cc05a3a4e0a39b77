"""``medsegcnn --stop-on-stdin``: a ``stop`` line or the end of standard input stops a command cleanly; a
command that finishes is not held up by the watcher."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from cli_support import ROOT
from model_support import save_tiny_model

from MedSegCNNLib import Image, write_image
from MedSegCNNLib.cli.main import EXIT_INTERRUPTED

TIMEOUT_S = 120


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("models") / "tiny", ("bg", "fg"))


def _start(*args: str | Path) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "MedSegCNNLib", "--stop-on-stdin", *map(str, args)]
    pipes = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    return subprocess.Popen(command, text=True, cwd=ROOT, **pipes)


def _segment_big_image(tmp_path: Path, model_folder: Path) -> tuple[subprocess.Popen[str], Path]:
    """A prediction far from done (1331 windows) once its first progress event has been read."""
    axis = np.arange(96, dtype=np.float32)
    write_image(Image.from_array(axis[:, None, None] + axis[None, :, None] + axis[None, None, :]), tmp_path / "a.nii")
    outputs = tmp_path / "out"
    outputs.mkdir()
    process = _start("predict", "--model", model_folder, "--input", tmp_path / "a.nii", "--output",
                     outputs / "a.nii.gz", "--device", "cpu", "--progress", "json")  # fmt: skip
    for line in process.stdout:
        if json.loads(line)["event"] == "progress":
            return process, outputs
    raise AssertionError(f"no progress event; stderr:\n{process.stderr.read()}")


@pytest.mark.parametrize("how", ["stop line", "end of input"])
def test_stdin_stops_a_prediction_and_leaves_nothing_behind(tmp_path, model_folder, how):
    process, outputs = _segment_big_image(tmp_path, model_folder)
    if how == "stop line":
        process.stdin.write("status?\nstop\n")  # other lines are ignored
        process.stdin.flush()
    else:
        process.stdin.close()  # as when the parent (Slicer) exits
    process.stdout.read()  # until the process exits (it prints little more)
    stderr = process.stderr.read()
    assert process.wait(timeout=TIMEOUT_S) == EXIT_INTERRUPTED, stderr
    expected = "Stop requested on standard input." if how == "stop line" else "Standard input closed: stopping."
    assert expected in stderr and "medsegcnn: error: interrupted" in stderr
    assert list(outputs.iterdir()) == []  # no output, no .partial file
    process.stdin.close()


def test_a_command_that_finishes_is_not_held_by_the_open_input():
    process = _start("models", "--json")
    try:  # stdin stays open: the watcher thread must not keep the process alive
        stdout = process.stdout.read()
        assert process.wait(timeout=TIMEOUT_S) == 0, process.stderr.read()
    finally:
        process.stdin.close()
    assert "hippocampus-tiny" in stdout
