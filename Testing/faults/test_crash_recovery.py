"""Fault class 4 (crash recovery) and the run-folder lock of class 5: ``medsegcnn train`` killed with SIGKILL
at several points resumes to the weights of an uninterrupted run; a second run into a held folder is refused;
a run that fails before its first checkpoint leaves the folder as it found it; every hint is right.

Kills come two ways, both a real SIGKILL of a real ``medsegcnn train`` child: from outside, when the child's
``--progress json`` stream reports an event (the child may be a little further by then), or from inside, at
an exact point (half-way through a checkpoint write, between a checkpoint's two renames), by a child that
wraps one internal function and kills itself there.
"""

from __future__ import annotations

import csv
import json
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from cli_support import ROOT, SAMPLE, medsegcnn
from fault_support import assert_unchanged, error_line, leftovers, snapshot
from safetensors.torch import load_file

from MedSegCNNLib.atomic import is_temporary
from MedSegCNNLib.training.run_folder import LOCK_FILE

TINY = {"network": {"name": "unet", "features": [4, 8, 16]}, "batch_size": 1, "channels_last": False}
EPOCHS, STEPS_PER_EPOCH = 3, 3
TOTAL_STEPS = EPOCHS * STEPS_PER_EPOCH

#: A child that runs ``medsegcnn`` and kills itself (SIGKILL) at one exact point: its first step, or epoch 2's end.
KILLING_CHILD = """
import json, os, pathlib, signal, sys
from MedSegCNNLib.checkpoint import training_state
from MedSegCNNLib.cli.main import main
from MedSegCNNLib.training.history import TrainingHistory

point, epoch = sys.argv[1], 2

def kill():
    os.kill(os.getpid(), signal.SIGKILL)

if point == "checkpoint-half-written":  # the tensors are in the new checkpoint, its JSON is not
    write_json = training_state.write_json
    def write_then_maybe_die(path, data):
        if data.get("epoch") == epoch:
            kill()
        write_json(path, data)
    training_state.write_json = write_then_maybe_die
elif point == "checkpoint-swap":  # the old checkpoint is moved aside, the new one not yet in its place
    rename = pathlib.Path.rename
    def rename_or_die(self, target):
        if self.name.startswith(".last.") and self.name.endswith(".partial"):
            if json.loads((self / "training_state.json").read_text())["epoch"] == epoch:
                kill()
        return rename(self, target)
    pathlib.Path.rename = rename_or_die
elif point == "first-step":  # training has begun, nothing is saved yet
    from MedSegCNNLib.training import trainer
    trainer.train_step = lambda *args, **kwargs: kill()
elif point == "log-before-checkpoint":  # the log has the epoch's row, the checkpoint is the epoch before
    write = TrainingHistory.write
    def write_then_die(self, folder):
        write(self, folder)
        if self.rows and self.rows[-1]["epoch"] == epoch:
            kill()
    TrainingHistory.write = write_then_die
sys.exit(main(sys.argv[2:]))
"""


def train_args(output: Path, config: Path, *extra: str, data: Path = SAMPLE) -> list[str]:
    """The arguments of a tiny run (``config``: :func:`tiny_config`'s file) of a few seconds."""
    return [
        "train",
        "--data",
        str(data),
        "--output",
        str(output),
        "--config",
        str(config),
        "--patch-size",
        "16,16,16",
        "--device",
        "cpu",
        "--precision",
        "fp32",
        "--epochs",
        str(EPOCHS),
        "--steps-per-epoch",
        str(STEPS_PER_EPOCH),
        "--fold",
        "all",
        "--seed",
        "7",
        *extra,
    ]


def start(args: list[str], *, wrapper: str | None = None) -> subprocess.Popen[str]:
    """A ``medsegcnn`` child with JSON progress on a pipe (``wrapper``: a :data:`KILLING_CHILD` point)."""
    prefix = ["-c", KILLING_CHILD, wrapper] if wrapper else ["-m", "MedSegCNNLib"]
    return subprocess.Popen(
        [sys.executable, *prefix, *args, "--progress", "json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )


def kill_on(process: subprocess.Popen[str], matches: Callable[[dict[str, Any]], bool]) -> None:
    """SIGKILL ``process`` when an event of its JSON progress ``matches``; waits until it is gone."""
    for line in process.stdout:
        if matches(json.loads(line)):
            process.send_signal(signal.SIGKILL)
            break
    process.communicate(timeout=120)
    assert process.returncode == -signal.SIGKILL


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory) -> Path:
    """A ``--config`` file with :data:`TINY`."""
    path = tmp_path_factory.mktemp("config") / "tiny.json"
    path.write_text(json.dumps(TINY))
    return path


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_config) -> Path:
    """An uninterrupted run with the same seed."""
    output = tmp_path_factory.mktemp("reference") / "run"
    result = medsegcnn(*train_args(output, tiny_config), "--progress", "none")
    assert result.returncode == 0, result.stderr
    return output


def log_rows(output: Path) -> list[dict[str, str]]:
    with (output / "training_log.csv").open(newline="") as file:
        return list(csv.DictReader(file))


def temporaries(output: Path) -> list[Path]:
    """Temporary or partial files of ours, a lock file, and folders set aside (``.previous``)."""
    ours = [path for path in output.rglob("*") if is_temporary(path) or path.name == LOCK_FILE]
    return sorted({*leftovers(output), *ours})


def ours(path: Path) -> bool:
    """Whether ``path`` is our lock file or lies in a temporary file or folder of ours."""
    return path.name == LOCK_FILE or any(is_temporary(Path(part)) for part in path.parts)


def assert_same_as(output: Path, reference: Path) -> None:
    """Same final weights and training log (but the times) as the reference run; nothing temporary left."""
    expected = load_file(reference / "model" / "model.safetensors")
    actual = load_file(output / "model" / "model.safetensors")
    assert expected.keys() == actual.keys()
    assert all(torch.equal(expected[name], actual[name]) for name in expected)
    rows, expected_rows = log_rows(output), log_rows(reference)
    assert [row["epoch"] for row in rows] == [str(epoch) for epoch in range(1, EPOCHS + 1)]
    for row, expected_row in zip(rows, expected_rows, strict=True):
        assert {**row, "seconds": ""} == {**expected_row, "seconds": ""}
    assert temporaries(output) == []


KILLS = {
    # from outside, on a progress event
    "planning": ("plan", None),  # before anything is trained: no checkpoint
    "mid-epoch after a checkpoint": ("step", STEPS_PER_EPOCH + 1),
    # from inside, at an exact point
    "first step": ("first-step", None),  # training has begun: no checkpoint yet
    "log written, checkpoint not": ("log-before-checkpoint", None),
    "half-written checkpoint": ("checkpoint-half-written", None),
    "between a checkpoint's renames": ("checkpoint-swap", None),
}


def assert_killed_where_meant(output: Path, kind: str) -> None:
    """The folder shows the exact kill points of :data:`KILLING_CHILD` (epoch 2's end)."""
    checkpoints = output / "checkpoints"
    partial = [path for path in checkpoints.glob(".last.*") if path.name.endswith(".partial")]
    if kind == "log-before-checkpoint":
        assert [row["epoch"] for row in log_rows(output)] == ["1", "2"]  # a row the checkpoint does not have
    elif kind == "checkpoint-half-written":
        written = [sorted(path.name for path in folder.iterdir()) for folder in partial]
        assert written == [["training_state.safetensors"]]
        assert (checkpoints / "last").is_dir()
    elif kind == "checkpoint-swap":
        assert not (checkpoints / "last").exists() and len(partial) == 1
        assert [path.name.endswith(".previous") for path in checkpoints.glob(".last.*")].count(True) == 1


REFUSED_RERUNS = ("mid-epoch after a checkpoint", "between a checkpoint's renames")
"""Kills after which a plain re-run is tried first (the hint must name --resume; the swap must be undone)."""


def assert_a_plain_rerun_points_at_resume(output: Path, args: list[str]) -> None:
    folder = {path: digest for path, digest in snapshot(output).items() if not ours(path.relative_to(output))}
    rerun = medsegcnn(*args, "--progress", "none")
    assert rerun.returncode == 1
    assert error_line(rerun) == (
        f"Output folder {output} holds an unfinished run with a checkpoint; pass --resume to continue it or "
        "--overwrite to start again."
    )
    assert_unchanged(folder)  # the run's files; a crash's stale temporaries may go, an interrupted swap is undone
    checkpoint = output / "checkpoints" / "last" / "training_state.json"
    assert checkpoint.is_file() and not any(map(ours, output.rglob("*")))


@pytest.mark.parametrize("point", KILLS)
def test_a_killed_run_resumes_to_the_weights_of_an_uninterrupted_run(tmp_path, tiny_config, reference, point):
    output, data = tmp_path / "run", snapshot(SAMPLE)
    args = train_args(output, tiny_config)
    kind, step = KILLS[point]
    if kind in ("plan", "step"):
        kill_on(start(args), lambda event: event["event"] == kind and event.get("step", step) == step)
    else:
        killed = start(args, wrapper=kind)
        killed.communicate(timeout=120)
        assert killed.returncode == -signal.SIGKILL
    assert (output / LOCK_FILE).is_file()  # left by the killed run; it must not block
    checkpoint = output / "checkpoints" / "last"
    assert_killed_where_meant(output, kind)
    if kind in ("plan", "first-step"):
        assert not checkpoint.exists()
        if kind == "plan":  # a plain re-run starts again: nothing to resume, so no --resume hint
            resumed = medsegcnn(*args, "--progress", "none")
            message = f"medsegcnn: INFO: {output} holds a run stopped before its first checkpoint: starting again."
        else:  # --resume is no dead end: it starts the run again with its saved configuration
            resumed = medsegcnn(*args, "--resume", "--progress", "none")
            message = (
                f"medsegcnn: WARNING: {output} holds no checkpoint (its run stopped before the first one): "
                "starting that run again from its first step."
            )
        assert message in resumed.stderr.splitlines(), resumed.stderr
    else:
        if point in REFUSED_RERUNS:
            assert_a_plain_rerun_points_at_resume(output, args)
        resumed = medsegcnn(*args, "--resume", "--progress", "none")
        if kind != "step":  # killed at epoch 2's end: back to epoch 1's checkpoint
            assert f"Resuming {output} at step {STEPS_PER_EPOCH} of {TOTAL_STEPS}" in resumed.stderr
    assert resumed.returncode == 0, resumed.stderr
    assert f"Training completed after {TOTAL_STEPS} steps ({EPOCHS} epochs)." in resumed.stdout
    assert_same_as(output, reference)
    assert_unchanged(data)


def test_a_second_run_into_a_held_folder_is_refused_and_the_first_is_unaffected(tmp_path, tiny_config, reference):
    output = tmp_path / "run"
    args = train_args(output, tiny_config)
    first = start(args)
    for line in first.stdout:
        if json.loads(line)["event"] == "start":
            first.send_signal(signal.SIGSTOP)  # holds the lock, changes nothing while the others try
            break
    try:
        before, listing = snapshot(output), sorted(output.rglob("*"))
        options = ("--overwrite", "--resume", None)
        seconds = [start([*args, *([option] if option else [])]) for option in options]  # at once: faster
        for option, second in zip(options, seconds, strict=True):
            result = subprocess.CompletedProcess(second.args, 0, *second.communicate(timeout=120))
            assert second.returncode == 1, option
            assert error_line(result) == (
                f"Output folder {output} is in use by another training run (process {first.pid}); wait for it to "
                "end or choose another folder."
            )
        assert_unchanged(before)
        assert sorted(output.rglob("*")) == listing
    finally:
        first.send_signal(signal.SIGCONT)
    first.communicate(timeout=120)
    assert first.returncode == 0
    assert_same_as(output, reference)


def labels_misdeclared(tmp_path: Path) -> Path:
    """The sample dataset with its labels declared as 0, 1, 3 (its label maps hold 0, 1, 2)."""
    data = tmp_path / "data"
    shutil.copytree(SAMPLE, data)
    description = json.loads((data / "dataset.json").read_text())
    description["labels"] = dict(zip(["background", "Anterior", "Posterior"], [0, 1, 3], strict=True))
    (data / "dataset.json").write_text(json.dumps(description))
    return data


FAILURES = ["new folder, bad option", "empty folder, bad data", "finished run replaced, bad option"]


@pytest.mark.parametrize("case", FAILURES)
def test_a_run_that_fails_before_its_first_checkpoint_leaves_the_folder_as_found(
    tmp_path, tiny_config, reference, case
):
    output = tmp_path / "parent" / "run"
    extra: list[str] = ["--patch-size", "15,16,16"]
    data = SAMPLE
    expected = (  # raised while planning, after preprocessing
        "The unet's input spatial size must be a multiple of (2, 4, 4) per axis; got (15, 16, 16). Pad to a multiple "
        "of (2, 4, 4) (e.g. (16, 16, 16))."
    )
    if case == "empty folder, bad data":
        output.mkdir(parents=True)
        data, extra = labels_misdeclared(tmp_path), []
        expected = (
            "Dataset Hippocampus cannot be used: label values not declared in the label names (0=background, "
            "1=Anterior, 3=Posterior): hippocampus_004 (2), hippocampus_006 (2), hippocampus_007 (2), hippocampus_008 "
            "(2), hippocampus_014 (2) (+7 more) (declare them, or fix the label maps)."
        )
    elif case == "finished run replaced, bad option":
        shutil.copytree(reference, output)
        extra.append("--overwrite")
    before, inputs, listing = snapshot(output.parent), snapshot(data), sorted(output.parent.rglob("*"))
    result = medsegcnn(*train_args(output, tiny_config, *extra, data=data), "--progress", "none")
    assert result.returncode == 1
    assert error_line(result) == expected
    assert_unchanged(before)
    assert_unchanged(inputs)
    if case == "new folder, bad option":
        assert not output.parent.exists()  # created by the run, with its parent: both removed
    else:
        assert sorted(output.parent.rglob("*")) == listing  # nothing added (no lock, no temporary), nothing lost


HINTS = {
    "missing folder": "Nothing to resume in {output}: the folder does not exist; check the path.",
    "empty folder": "Nothing to resume in {output}: it holds nothing; start a new run without --resume.",
    "other files": (
        "Nothing to resume in {output}: it holds no training run (only other files); start a new run without "
        "--resume (with --overwrite: its files are kept)."
    ),
}


@pytest.mark.parametrize("case", HINTS)
def test_resume_with_nothing_to_resume_says_what_to_do(tmp_path, case):
    output = tmp_path / "run"
    if case != "missing folder":
        output.mkdir()
    if case == "other files":
        (output / "notes.txt").write_text("mine")
    before, listing = snapshot(tmp_path), sorted(tmp_path.rglob("*"))
    result = medsegcnn("train", "--data", SAMPLE, "--output", output, "--resume", "--progress", "none")
    assert result.returncode == 1
    assert error_line(result) == HINTS[case].format(output=output)
    assert_unchanged(before)
    assert sorted(tmp_path.rglob("*")) == listing
