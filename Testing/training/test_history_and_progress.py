"""Training log (CSV + PNG) and progress events."""

from __future__ import annotations

import io
import json
import math

from MedSegCNNLib.progress import Event, JsonLinesProgress, TqdmProgress
from MedSegCNNLib.training.history import TrainingHistory


def test_history_csv_round_trip_and_plot(tmp_path):
    history = TrainingHistory()
    history.add({"epoch": 1, "train_loss": 1.5, "lr": 0.01, "seconds": 2.0})
    history.add({"epoch": 2, "train_loss": 1.0, "lr": 0.009, "seconds": 2.0, "val_mean_dice": 0.5, "val_dice_1": 0.5})
    history.add({"epoch": 2, "train_loss": 0.9, "lr": 0.009, "seconds": 2.0, "val_mean_dice": 0.6})  # resumed epoch
    history.write(tmp_path)
    restored = TrainingHistory.from_csv((tmp_path / "training_log.csv").read_text())
    assert [row["epoch"] for row in restored.rows] == [1, 2]
    assert restored.rows[1]["train_loss"] == 0.9 and restored.rows[1]["val_mean_dice"] == 0.6
    assert "val_mean_dice" not in restored.rows[0]
    assert (tmp_path / "training_curves.png").read_bytes()[:4] == b"\x89PNG"


def test_json_lines_progress_writes_one_parsable_object_per_event():
    stream = io.StringIO()
    sink = JsonLinesProgress(stream)
    sink(Event("step", {"epoch": 1, "step": 3, "loss": 0.5, "lr": 0.01, "eta_s": math.inf}))
    sink(Event("validation", {"epoch": 1, "mean_dice": 0.8, "dice": {1: 0.8}, "best_epoch": 1, "best_mean_dice": 0.8}))
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first == {"event": "step", "epoch": 1, "step": 3, "loss": 0.5, "lr": 0.01, "eta_s": "inf"}
    assert second["event"] == "validation" and second["dice"] == {"1": 0.8}


def test_tqdm_progress_renders_a_run():
    stream = io.StringIO()
    sink = TqdmProgress(stream)
    start = {"total_steps": 2, "epochs": 1, "steps_per_epoch": 2, "train_cases": 3, "val_cases": 1}
    sink(Event("start", {**start, "device": "cpu", "precision": "fp32"}))
    sink(Event("step", {"epoch": 1, "step": 2, "loss": 0.25, "lr": 0.01, "eta_s": 0.0}))
    sink(
        Event(
            "validation", {"epoch": 1, "mean_dice": 0.75, "dice": {"1": 0.75}, "best_epoch": 1, "best_mean_dice": 0.75}
        )
    )
    sink(Event("end", {"status": "completed", "epochs_done": 1, "model": "out/model"}))
    text = stream.getvalue()
    assert "Training on cpu" in text and "mean Dice 0.7500" in text and "Training completed" in text
