"""``medsegcnn train`` as a subprocess: JSON progress, cancel with SIGINT and resume, bad input."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path

from cli_support import ROOT, SAMPLE, assert_clean_failure, medsegcnn

TINY = {"network": {"name": "unet", "features": [4, 8, 16]}, "batch_size": 1}


def tiny_config(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(TINY))
    return path


def train_args(tmp_path: Path, output: Path, *extra: str) -> list[str]:
    return [
        "train",
        "--data",
        str(SAMPLE),
        "--output",
        str(output),
        "--config",
        str(tiny_config(tmp_path)),
        "--patch-size",
        "16,16,16",
        "--device",
        "cpu",
        *extra,
    ]


def test_train_on_the_sample_data_with_json_progress(tmp_path):
    output = tmp_path / "model"
    result = medsegcnn(*train_args(tmp_path, output, "--epochs", "1", "--steps-per-epoch", "2", "--progress", "json"))
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]  # stdout holds only JSON lines
    kinds = [event["event"] for event in events]
    assert kinds[:2] == ["plan", "start"] and kinds[-1] == "end" and kinds.count("step") == 2
    assert "validation" in kinds
    assert events[0]["total_steps"] == 2 and events[0]["network"]["features"] == [4, 8, 16]
    start = events[1]
    assert start["train_cases"] + start["val_cases"] == 12 and start["val_cases"] >= 2  # fold 0 of 5
    card = json.loads((output / "model" / "model.json").read_text())
    assert card["labels"]["1"]["name"] == "Anterior" and card["channels"] == ["MRI"]
    assert card["network"]["features"] == [4, 8, 16] and card["patch_size"] == [16, 16, 16]
    assert (output / "splits.json").is_file() and (output / "training_log.csv").is_file()


def test_sigint_saves_a_checkpoint_and_resume_finishes(tmp_path):
    output = tmp_path / "model"
    args = train_args(tmp_path, output, "--epochs", "2", "--steps-per-epoch", "25", "--fold", "all")
    process = subprocess.Popen(
        [sys.executable, "-m", "MedSegCNNLib", *args, "--progress", "json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    for line in process.stdout:
        if json.loads(line)["event"] == "step":
            process.send_signal(signal.SIGINT)
            break
    remaining, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert json.loads(remaining.splitlines()[-1])["status"] == "cancelled"
    assert (output / "checkpoints" / "last" / "training_state.json").is_file()
    assert not (output / "model").exists()
    resumed = medsegcnn(*args, "--resume", "--progress", "none")
    assert resumed.returncode == 0, resumed.stderr
    assert "Training completed after 50 steps (2 epochs)" in resumed.stdout
    assert (output / "model" / "model.json").is_file()


def test_existing_output_is_refused(tmp_path):
    output = tmp_path / "model"
    output.mkdir()
    (output / "keep.txt").write_text("keep")
    assert_clean_failure(medsegcnn(*train_args(tmp_path, output, "--epochs", "1")), "--overwrite")
    assert [path.name for path in output.iterdir()] == ["keep.txt"]


def test_bad_training_inputs(tmp_path):
    assert_clean_failure(
        medsegcnn(*train_args(tmp_path, tmp_path / "a", "--freeze-encoder")), "--freeze-encoder needs --init-from"
    )
    result = medsegcnn("train", "--data", str(tmp_path / "missing"), "--output", str(tmp_path / "b"))
    assert_clean_failure(result, "missing")
    assert_clean_failure(medsegcnn(*train_args(tmp_path, tmp_path / "c", "--patch-size", "15,16,16")), "multiple of")
    assert_clean_failure(medsegcnn(*train_args(tmp_path, tmp_path / "d", "--fold", "7")), "fold")
    result = medsegcnn(*train_args(tmp_path, tmp_path / "e", "--init-from", str(tmp_path / "weights.pt")))
    assert result.returncode == 1 and "Traceback" not in result.stderr


def test_plan_prints_the_plan_as_json_without_training(tmp_path):
    args = ["plan", "--data", str(SAMPLE), "--config", str(tiny_config(tmp_path)), "--device", "cpu"]
    result = medsegcnn(*args, "--time-budget", "5", "--fold", "all", "--json")
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert plan["budget_seconds"] == 300 and plan["network"]["features"] == [4, 8, 16]
    assert plan["patch_size"] == [36, 52, 36] and plan["precision"] in ("fp32", "bf16")  # 3 levels: divisor 4
    assert plan["total_steps"] * plan["step_seconds"] <= 300 and plan["total_steps"] >= 50
    text = medsegcnn(*args, "--dims", "2")
    assert text.returncode == 0, text.stderr
    assert "network unet 2D" in text.stdout and "add --time-budget MIN" in text.stdout


def test_plan_refuses_a_budget_too_short_with_the_minimum(tmp_path):
    result = medsegcnn("plan", "--data", str(SAMPLE), "--time-budget", "0.01", "--device", "cpu")
    assert_clean_failure(result, "time budget of 0.01 min is too short")
    assert re.search(r"give --time-budget \d+ or more\.$", result.stderr.strip())
