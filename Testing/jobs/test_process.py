"""Background runs: real ``python -m MedSegCNNLib`` subprocesses polled, cancelled and failing; event parsing."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from cli_support import SAMPLE
from model_support import save_tiny_model

from MedSegCNNLib import Image, read_image, write_image
from MedSegCNNLib.data.export import write_training_folder
from MedSegCNNLib.errors import InputError
from MedSegCNNLib.inference.options import PredictOptions
from MedSegCNNLib.jobs import BackgroundRun, Progress, predict_args, train_args
from MedSegCNNLib.jobs.process import advance, format_duration, parse_event
from MedSegCNNLib.progress import STOP_ACKNOWLEDGED, Event
from MedSegCNNLib.training.config import TrainingConfig

TIMEOUT_S = 120


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory) -> Path:
    """An untrained tiny 3D U-Net (patch 16³, 1 mm) saved as a model folder."""
    return save_tiny_model(tmp_path_factory.mktemp("models") / "tiny")


def _ramp(path: Path, size: int) -> Path:
    """A ``size``³ image at 1 mm (a smooth ramp): (size/8 - 1)³ windows of 16³ with overlap 0.5."""
    axis = np.arange(size, dtype=np.float32)
    write_image(Image.from_array(axis[:, None, None] + axis[None, :, None] * 2 + axis[None, None, :] * 3), path)
    return path


def _poll_until(run: BackgroundRun, wanted: str) -> list[Event]:
    """Poll (as a Qt timer would) until an event of kind ``wanted`` arrives or the run ends."""
    events: list[Event] = []
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        events += run.poll()
        if run.state != "running" or any(event.kind == wanted for event in events):
            return events
        time.sleep(0.02)
    raise AssertionError(f"no {wanted!r} event within {TIMEOUT_S} s; log:\n{run.log}")


# ----- event parsing and progress (no process) ---------------------------------------------------------------


def test_parse_event_reads_json_event_lines_only():
    assert parse_event('{"event":"step","step":3,"loss":"inf"}') == Event("step", {"step": 3, "loss": "inf"})
    for line in ("Segmented 1 image(s)", "[1, 2]", '{"no": "kind"}', '{"event": 3}', ""):
        assert parse_event(line) is None


def test_progress_follows_training_and_prediction_events():
    progress = Progress(None, "starting")
    training = [
        Event("start", {"total_steps": 4, "device": "cpu"}),
        Event("step", {"epoch": 1, "step": 1, "eta_s": 9.0}),
        Event("step", {"epoch": 1, "step": 2, "eta_s": 6.0}),
        Event("epoch", {"epoch": 1, "eta_s": 5.0}),
        Event("validation", {"epoch": 1, "mean_dice": 0.5}),
        Event("message", {"text": "hello"}),
    ]
    seen = []
    for event in training:
        progress = advance(progress, event, total_steps=4)
        seen.append(progress)
    assert [p.fraction for p in seen] == [0.0, 0.25, 0.5, 0.5, 0.5, 0.5]
    assert [p.eta_s for p in seen] == [None, 9.0, 6.0, 5.0, 5.0, 5.0]
    assert seen[1].stage == "training: epoch 1" and "0.500" in seen[4].stage and seen[5] == seen[4]
    assert advance(progress, Event("end", {"status": "cancelled"})).fraction == 0.5
    assert advance(progress, Event("end", {"status": "time_budget"})) == Progress(1.0, "training time_budget")
    window = Event("progress", {"stage": "segmenting a", "fraction": 0.25, "eta_s": 3.0, "done": 1, "total": 2})
    assert advance(progress, window) == Progress(0.25, "segmenting a", 3.0)
    assert advance(progress, Event("case", {"case": "a", "index": 1, "total": 2})) == Progress(0.5, "segmented a")


def test_progress_lines_tell_the_stage_and_the_time_left():
    assert format_duration(0.4) == "0 s" and format_duration(-3) == "0 s"
    assert format_duration(59.6) == "1 min 00 s"
    assert format_duration(200) == "3 min 20 s"
    assert format_duration(7500) == "2 h 05 min"
    assert Progress(0.5, "segmenting case_01", 200.0).describe() == "segmenting case_01; about 3 min 20 s left"
    assert Progress(None, "").describe() == "working"


# ----- real processes ----------------------------------------------------------------------------------------


def test_predict_runs_to_completion_with_progress(tmp_path, model_folder):
    output = tmp_path / "small.seg.nrrd"
    source = _ramp(tmp_path / "small.nii.gz", 24)
    run = BackgroundRun(predict_args(model_folder, source, output, PredictOptions(device="cpu")))
    assert run.state == "idle" and run.poll() == []
    run.start()
    assert run.state == "running"
    events = _poll_until(run, "case")
    assert run.wait(TIMEOUT_S) == "completed", run.log
    events += run.poll()
    assert run.returncode == 0 and run.error is None and run.poll() == []
    kinds = [event.kind for event in events]
    assert kinds[-1] == "case" and kinds.count("progress") >= 1 and set(kinds) == {"progress", "case"}
    windows = [event.data for event in events if event.kind == "progress"]
    assert windows[-1]["done"] == windows[-1]["total"] == 8 and windows[-1]["fraction"] == 1.0
    assert run.progress == Progress(1.0, "completed", 0.0)
    assert run.last_event("case").data["output"] == str(output)
    assert read_image(output).shape == (24, 24, 24)
    assert "Traceback" not in run.log
    with pytest.raises(RuntimeError, match="started already"):
        run.start()


def test_cancel_mid_prediction_leaves_nothing_behind(tmp_path, model_folder):
    work = tmp_path / "work"  # e.g. the panel's temporary folder for this run
    work.mkdir()
    source = _ramp(work / "big.nii", 96)  # 1331 windows: far from done when cancelled
    outputs = tmp_path / "out"
    outputs.mkdir()
    run = BackgroundRun(
        predict_args(model_folder, source, outputs / "big.seg.nrrd", PredictOptions(device="cpu", probabilities=True)),
        cleanup=[work],
    ).start()
    events = _poll_until(run, "progress")
    assert run.state == "running", run.log
    assert 0.0 < run.progress.fraction < 1.0 and run.progress.stage == "segmenting big"
    assert events[-1].data["done"] < events[-1].data["total"]
    assert run.cancel(timeout=TIMEOUT_S) == "cancelled"
    assert run.returncode == 130  # reaped (no zombie); the stop request became KeyboardInterrupt: a clean stop
    assert STOP_ACKNOWLEDGED in run.log  # no signal: works from a GUI on Windows too
    assert "medsegcnn: error: interrupted" in run.log
    assert run.progress.stage == "cancelled" and run.error is None
    assert list(outputs.iterdir()) == []  # no output, no .partial file
    assert not work.exists()  # the cleanup paths are gone
    assert run.cancel() == "cancelled" and run.wait() == "cancelled"  # again: harmless


def test_failure_reports_the_cli_error_and_keeps_the_log(tmp_path):
    cleanup = tmp_path / "inputs"
    cleanup.mkdir()
    run = BackgroundRun(
        predict_args(tmp_path / "no-model", tmp_path / "x.nii.gz", tmp_path / "y.nii.gz"), cleanup=[cleanup]
    )
    assert run.start().wait(TIMEOUT_S) == "failed"
    assert run.returncode == 1
    assert "does not exist" in run.error and "medsegcnn: error:" not in run.error
    assert "medsegcnn: error:" in run.log
    assert run.progress.stage == "failed" and not cleanup.exists()
    assert run.cancel() == "failed"  # ended already: nothing changes


def test_cancel_before_start_and_a_missing_interpreter(tmp_path):
    run = BackgroundRun(["info"], cleanup=[tmp_path / "never-made"])
    assert run.cancel() == "cancelled" and run.returncode is None
    broken = BackgroundRun(["info"], python=str(tmp_path / "no-python"))
    with pytest.raises(InputError, match="Could not start"):
        broken.start()
    assert broken.state == "failed" and "Could not start" in broken.error


def test_training_on_exported_data_is_cancelled_with_a_checkpoint(tmp_path):
    pairs = [
        (read_image(SAMPLE / "imagesTr" / f"{case}.nii.gz"), read_image(SAMPLE / "labelsTr" / f"{case}.nii.gz"))
        for case in ("hippocampus_004", "hippocampus_006")
    ]
    data = write_training_folder(
        pairs, tmp_path / "data", labels={1: "Anterior", 2: "Posterior"}, channel_names=["MRI"]
    )
    config = TrainingConfig(
        network={"name": "unet", "features": [4, 8, 16]}, batch_size=1, epochs=1, device="cpu",
        steps_per_epoch=200, patch_size=(16, 16, 16), fold=None,
    )  # fmt: skip
    run = BackgroundRun(train_args(data, tmp_path / "run", config)).start()
    events = _poll_until(run, "step")
    assert run.state == "running", run.log
    assert events[0].kind == "plan" and events[0].data["total_steps"] == 200
    assert events[1].kind == "start" and events[1].data["train_cases"] == 2
    assert 0.0 < run.progress.fraction < 1.0 and run.progress.eta_s > 0
    assert run.cancel(timeout=TIMEOUT_S) == "cancelled"
    assert run.returncode == 130  # the stop request reached the trainer's own handler: checkpoint, then exit
    assert STOP_ACKNOWLEDGED in run.log
    assert run.last_event("end").data["status"] == "cancelled"
    assert (tmp_path / "run" / "checkpoints" / "last" / "training_state.json").is_file()
    assert not (tmp_path / "run" / "model").exists()


@pytest.mark.skipif(os.name == "nt", reason="a POSIX shell stands in for the launcher")
def test_cancel_reaches_an_interpreter_behind_a_launcher_that_keeps_stdin(tmp_path, model_folder):
    """Like PythonSlicer (a launcher starting the real interpreter) if it did not pass its standard input on: the
    unacknowledged request falls back to SIGTERM for the process group, which reaches the interpreter."""
    launcher = tmp_path / "launcher.sh"
    launcher.write_text(f'#!/bin/sh\nsleep 600 | "{sys.executable}" "$@"\n')  # its stdin: a pipe nobody writes
    launcher.chmod(0o755)
    source = _ramp(tmp_path / "big.nii", 144)  # 4913 windows: still running when the acknowledgement wait ends
    outputs = tmp_path / "out"
    outputs.mkdir()
    args = predict_args(model_folder, source, outputs / "big.nii.gz", PredictOptions(device="cpu"))
    run = BackgroundRun(args, python=str(launcher))
    run.start()
    _poll_until(run, "progress")
    assert run.state == "running", run.log
    assert run.cancel(timeout=TIMEOUT_S) == "cancelled"
    assert STOP_ACKNOWLEDGED not in run.log, run.log  # the stop line never arrived ...
    assert "medsegcnn: error: interrupted" in run.log, (run.returncode, run.log)  # ... SIGTERM: a clean stop
    assert list(outputs.iterdir()) == []
