"""The run folder's lock, what a folder holds, and undoing a run that failed before its first checkpoint."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from MedSegCNNLib.atomic import temporary_path
from MedSegCNNLib.errors import InputError, OutputExistsError
from MedSegCNNLib.training.run_folder import (
    LOCK_FILE,
    Holding,
    RunFolder,
    acquire_run_lock,
    claim_run_folder,
    restore_interrupted_folder,
)

pytestmark = pytest.mark.skipif(os.name == "nt", reason="the tests hold locks from POSIX child processes")

HOLDER = textwrap.dedent(
    """
    import fcntl, os, sys, time
    descriptor = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o666)
    fcntl.flock(descriptor, fcntl.LOCK_EX)
    os.write(descriptor, str(os.getpid()).encode())
    print("locked", flush=True)
    time.sleep(60)
    """
)


def in_use(folder: Path, pid: int) -> str:
    return (
        f"Output folder {folder} is in use by another training run (process {pid}); wait for it to end or choose "
        "another folder."
    )


def test_a_held_lock_refuses_a_second_holder_and_is_free_after_release(tmp_path):
    lock = acquire_run_lock(tmp_path)
    assert (tmp_path / LOCK_FILE).read_text() == f"{os.getpid()}\n" and not lock.found_stale
    with pytest.raises(InputError) as refused:
        acquire_run_lock(tmp_path)  # another open file description: flock refuses it even in this process
    assert str(refused.value) == in_use(tmp_path, os.getpid())
    lock.release()
    assert not (tmp_path / LOCK_FILE).exists()
    acquire_run_lock(tmp_path).release()


def test_the_lock_of_a_killed_process_is_free_and_its_file_does_not_block(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path / LOCK_FILE)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline() == "locked\n"
        with pytest.raises(InputError) as refused:
            acquire_run_lock(tmp_path)
        assert str(refused.value) == in_use(tmp_path, holder.pid)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.communicate(timeout=30)
    assert (tmp_path / LOCK_FILE).is_file()  # left behind by the crash
    lock = acquire_run_lock(tmp_path)
    assert lock.found_stale
    lock.release()
    assert list(tmp_path.iterdir()) == []


def test_an_interrupted_folder_swap_is_undone(tmp_path):
    checkpoints = tmp_path / "checkpoints"
    previous = temporary_path(checkpoints / "last", kind="previous")
    partial = temporary_path(checkpoints / "last")
    previous.mkdir(parents=True)
    partial.mkdir()
    (previous / "training_state.json").write_text("{}")
    assert restore_interrupted_folder(checkpoints / "last")
    assert (checkpoints / "last" / "training_state.json").is_file() and not previous.exists()
    assert not restore_interrupted_folder(checkpoints / "last")  # present: nothing to do


def make_run(folder: Path, *, checkpoint: bool = False, model: bool = False) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "training_config.json").write_text('{"config": {"epochs": 7}}')
    (folder / "checkpoints").mkdir()
    if checkpoint:
        (folder / "checkpoints" / "last").mkdir()
    if model:
        (folder / "model").mkdir()


@pytest.mark.parametrize(
    ("setup", "holding"),
    [
        ({}, Holding.STOPPED_EARLY),
        ({"checkpoint": True}, Holding.UNFINISHED),
        ({"checkpoint": True, "model": True}, Holding.FINISHED),
    ],
)
def test_what_a_folder_holds_decides_what_a_plain_run_may_do(tmp_path, setup, holding):
    output = tmp_path / "run"
    make_run(output, **setup)
    (output / "notes.txt").write_text("mine")
    if holding is Holding.STOPPED_EARLY:  # starts again: the old files are set aside until the first checkpoint
        folder = RunFolder.claim(output, resume=False, overwrite=False)
        assert folder.aside is not None and sorted(p.name for p in output.iterdir()) == sorted(
            [LOCK_FILE, folder.aside.name, "notes.txt"]
        )
        folder.roll_back()
        folder.release()
        assert sorted(p.name for p in output.iterdir()) == ["checkpoints", "notes.txt", "training_config.json"]
        return
    with pytest.raises(OutputExistsError, match=f"holds {holding.value};"):
        RunFolder.claim(output, resume=False, overwrite=False)
    assert not (output / LOCK_FILE).exists()


def test_a_committed_run_drops_the_replaced_files_and_a_failed_one_restores_them(tmp_path):
    output = tmp_path / "run"
    make_run(output, checkpoint=True, model=True)
    with claim_run_folder(output, resume=False, overwrite=True) as folder:
        (output / "checkpoints").mkdir()
        folder.commit()
        assert folder.aside is None
    assert sorted(p.name for p in output.iterdir()) == ["checkpoints"]
    make_run(tmp_path / "other", checkpoint=True)
    with pytest.raises(KeyboardInterrupt), claim_run_folder(tmp_path / "other", resume=False, overwrite=True):
        (tmp_path / "other" / "splits.json").write_text("{}")
        raise KeyboardInterrupt
    assert sorted(p.name for p in (tmp_path / "other").iterdir()) == ["checkpoints", "training_config.json"]
    assert (tmp_path / "other" / "checkpoints" / "last").is_dir()


def test_a_failed_run_removes_the_folders_it_created(tmp_path):
    with pytest.raises(RuntimeError), claim_run_folder(tmp_path / "a" / "b", resume=False, overwrite=False):
        (tmp_path / "a" / "b" / "training_config.json").write_text("{}")
        raise RuntimeError("planning failed")
    assert list(tmp_path.iterdir()) == []


def test_resume_without_a_checkpoint_restarts_with_the_saved_configuration(tmp_path):
    output = tmp_path / "run"
    make_run(output)
    with claim_run_folder(output, resume=True, overwrite=False) as folder:
        assert not folder.resume and folder.saved_config == {"epochs": 7}
    other_ranks = RunFolder.observe(output, resume=True)  # reads, never locks
    assert not other_ranks.resume and other_ranks.lock is None
