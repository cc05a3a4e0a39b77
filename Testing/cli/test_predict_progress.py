"""``medsegcnn predict --progress json``: per-window progress events (throttled), and SIGTERM as a clean stop."""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
from model_support import save_tiny_model

from MedSegCNNLib import Image, write_image
from MedSegCNNLib.atomic import atomic_path
from MedSegCNNLib.cli.main import EXIT_INTERRUPTED, main
from MedSegCNNLib.inference.progress import PredictionProgress


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory) -> Path:
    """An untrained tiny 3D U-Net (patch 16³, 1 mm) saved as a model folder."""
    return save_tiny_model(tmp_path_factory.mktemp("models") / "tiny", ("bg", "fg"))


@pytest.fixture
def restore_cli_logging():
    """``main`` configures the package logger for a terminal; put it back for the tests that follow."""
    logger = logging.getLogger("MedSegCNNLib")
    state = (logger.handlers[:], logger.propagate, logger.level)
    yield
    logger.handlers[:], logger.propagate, logger.level = state[0], state[1], state[2]


def _ramp(path: Path, size: int) -> Path:
    """A ``size``³ image at 1 mm: (size/8 - 1)³ windows of 16³ with overlap 0.5."""
    axis = np.arange(size, dtype=np.float32)
    write_image(Image.from_array(axis[:, None, None] + axis[None, :, None] * 2 + axis[None, None, :] * 3), path)
    return path


def test_window_progress_is_throttled_and_reports_the_whole_run():
    now = [100.0]
    events = []
    progress = PredictionProgress(events.append, cases=2, interval_s=0.2, clock=lambda: now[0])
    first = progress.for_case(0, "a")
    for time_s, done in ((100.5, 1), (100.6, 2), (100.75, 3), (100.8, 4)):
        now[0] = time_s
        first(done, 4)
    second = progress.for_case(1, "b")
    now[0] = 100.85
    second(1, 2)  # within 0.2 s of the last event: skipped
    now[0] = 100.9
    second(2, 2)  # a case's last window: always reported
    data = [event.data for event in events]
    assert [event.kind for event in events] == ["progress"] * 4
    assert [(d["case"], d["done"]) for d in data] == [(1, 1), (1, 3), (1, 4), (2, 2)]
    assert [d["fraction"] for d in data] == [0.125, 0.375, 0.5, 1.0]
    assert data[0]["eta_s"] == pytest.approx(0.5 * 0.875 / 0.125) and data[-1]["eta_s"] == 0.0
    assert data[0] == {**data[0], "stage": "segmenting a", "cases": 2, "total": 4}


def test_predict_emits_window_progress_before_each_case(tmp_path, model_folder, capsys, restore_cli_logging):
    inputs = tmp_path / "in"
    inputs.mkdir()
    _ramp(inputs / "a.nii.gz", 24)  # 8 windows
    _ramp(inputs / "b.nii.gz", 32)  # 27 windows
    status = main(["predict", "--model", str(model_folder), "--input", str(inputs), "--output", str(tmp_path / "out"),
                   "--device", "cpu", "--progress", "json"])  # fmt: skip
    assert status == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]  # stdout holds only JSON lines
    kinds = [event["event"] for event in events]
    assert [kind for kind in kinds if kind != "progress"] == ["case", "case"]
    first_case = kinds.index("case")
    assert kinds[0] == "progress" and "progress" in kinds[first_case + 1 :]
    windows = [event for event in events if event["event"] == "progress"]
    fractions = [event["fraction"] for event in windows]
    assert fractions == sorted(fractions) and fractions[0] > 0.0 and fractions[-1] == 1.0
    ends = [(event["stage"], event["done"], event["total"]) for event in windows if event["done"] == event["total"]]
    assert ends == [("segmenting a", 8, 8), ("segmenting b", 27, 27)]
    assert all(event["cases"] == 2 and (event["eta_s"] is None or event["eta_s"] >= 0) for event in windows)


def test_sigterm_while_writing_stops_cleanly_and_leaves_no_partial_file(
    tmp_path, model_folder, monkeypatch, restore_cli_logging
):
    """SIGTERM raises KeyboardInterrupt inside the atomic write, whose temporary file is then removed."""

    def write_then_terminated(image, path, *, overwrite=False, **_options):
        with atomic_path(path, overwrite=overwrite) as partial:
            partial.write_bytes(b"half an image")
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(30)  # interrupted at once
        raise AssertionError("SIGTERM did not interrupt the write")

    monkeypatch.setattr("MedSegCNNLib.image.io.write_image", write_then_terminated)
    output = tmp_path / "out"
    output.mkdir()

    def not_replaced(_number, _frame):  # in force only if main() installed no handler of its own
        raise RuntimeError("SIGTERM reached the previous handler")

    previous = signal.signal(signal.SIGTERM, not_replaced)
    try:
        status = main(["predict", "--model", str(model_folder), "--input", str(_ramp(tmp_path / "a.nii.gz", 16)),
                       "--output", str(output / "a.nii.gz"), "--device", "cpu", "--progress", "none"])  # fmt: skip
        assert signal.getsignal(signal.SIGTERM) is not_replaced  # restored afterwards
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert status == EXIT_INTERRUPTED
    assert list(output.iterdir()) == []
