"""The output folder of a training run: one run at a time, what the folder holds, and leaving it as found.

**Lock.** A run holds an advisory, exclusive lock on ``OUTPUT/.medsegcnn.lock`` (``fcntl.flock`` on POSIX,
``msvcrt.locking`` on Windows) from before it writes or clears anything in the folder until it ends. The
operating system drops the lock when the process ends, however it ends, so a lock file left behind by a killed
run is stale and never blocks: only a live holder does. The file holds the holder's process id (for the
message) and is removed when the lock is released. Under ``torchrun`` only rank 0 takes it; the other ranks
never write or clear anything in the folder.

**What a folder holds** (:class:`Holding`): nothing; other files only; a run stopped before its first
checkpoint (run files, or the stale lock file of a killed run, but neither ``checkpoints/last`` nor
``model/``); an unfinished run with a checkpoint; a finished run (``model/``). A new run starts in an empty
folder or over a run stopped before its first checkpoint (nothing of it can be resumed); over anything else
only with ``overwrite`` (files that are not the run's are kept). ``resume`` continues the checkpoint; a run
stopped before its first checkpoint is started again from its first step, with its saved configuration.

**Leaving the folder as found.** A new run moves the previous run's files aside (a hidden ``.previous``
folder, see :mod:`MedSegCNNLib.atomic`) and deletes them once its own first checkpoint is complete
(:meth:`RunFolder.commit`). A run that fails before then is undone: its files are removed, the previous ones
moved back, and folders it created are removed. A run killed before its first checkpoint leaves the aside
folder, which the next run in the folder deletes (it was asked to replace those files). A checkpoint or model
folder whose replacement a crash interrupted is put back first (:func:`restore_interrupted_folder`).
"""

from __future__ import annotations

import contextlib
import enum
import json
import logging
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ..atomic import is_temporary, occupied, remove_stale_temporaries, temporary_path
from ..errors import InputError, OutputExistsError
from ..folder_lock import FolderLock
from .config import TrainingConfig

logger = logging.getLogger(__name__)

LOCK_FILE = ".medsegcnn.lock"
RUN_FILES = ("model", "checkpoints", "training_config.json", "splits.json", "training_log.csv", "training_curves.png")
"""The entries a run writes in its folder; anything else there is the user's and is never touched."""


class Holding(enum.Enum):
    """What a run folder holds (see the module docstring)."""

    EMPTY = "nothing"
    OTHER_FILES = "no training run (only other files)"
    STOPPED_EARLY = "a run stopped before its first checkpoint"
    UNFINISHED = "an unfinished run with a checkpoint"
    FINISHED = "a finished run"


def acquire_run_lock(folder: Path) -> FolderLock:
    """Lock the run folder ``folder`` (which must exist) or raise :class:`InputError` naming the live holder."""
    return FolderLock.acquire(
        folder / LOCK_FILE,
        in_use=f"Output folder {folder} is in use by another training run ({{holder}}); wait for it to end or "
        "choose another folder.",
    )


def restore_interrupted_folder(target: Path) -> bool:
    """Put back ``target`` when a crash interrupted its atomic replacement (:func:`~MedSegCNNLib.atomic.
    atomic_folder`) between moving the old folder aside and moving the new one in: the old, complete one is
    renamed back. Returns whether it was."""
    if target.exists() or not target.parent.is_dir():
        return False
    previous = [
        entry
        for entry in target.parent.iterdir()
        if is_temporary(entry) and entry.name.startswith(f".{target.name}.") and entry.name.endswith(".previous")
    ]
    if not previous:
        return False
    newest = max(previous, key=lambda entry: entry.stat().st_mtime)
    newest.rename(target)
    logger.warning("Restored %s, whose replacement was interrupted by a crash.", target)
    return True


class RunFolder:
    """A run's claim on its output folder: build it with :func:`claim_run_folder`."""

    def __init__(self, path: Path, *, lock: FolderLock | None, created: list[Path]) -> None:
        self.path = path
        self.lock = lock
        self.created = created  # folders this run created, deepest first
        self.resume = False  # the run continues the folder's checkpoint
        self.saved_config: dict[str, Any] | None = None  # the configuration of the run being resumed or restarted
        self.aside: Path | None = None  # the previous run's files, until this run's first checkpoint
        self.committed = False  # this run's first checkpoint is complete (or it resumes one)

    # ----- claiming --------------------------------------------------------------------------------------

    @classmethod
    def claim(cls, path: Path, *, resume: bool, overwrite: bool, inputs: Sequence[Path] = ()) -> RunFolder:
        """Lock ``path`` (created if missing) and prepare it for a run (see the module docstring). A new run
        refuses ``inputs`` (its data, the weights it starts from) that lie among the run files it replaces."""
        if resume and overwrite:
            raise InputError("Choose either resume (continue the saved run) or overwrite (start again), not both.")
        if not resume:
            _refuse_inputs_among_run_files(path, inputs)
        if occupied(path) and not path.is_dir():
            raise InputError(f"Output {path} is a file (or a link to a missing one); give a folder for the model.")
        if resume and not path.is_dir():
            raise InputError(f"Nothing to resume in {path}: the folder does not exist; check the path.")
        created = _make_folders(path)
        try:
            lock = acquire_run_lock(path)
        except BaseException:
            _remove_empty(created)
            raise
        folder = cls(path, lock=lock, created=created)
        try:
            folder._prepare(resume=resume, overwrite=overwrite)
        except BaseException:
            folder.release(remove_created=True)
            raise
        return folder

    @classmethod
    def observe(cls, path: Path, *, resume: bool) -> RunFolder:
        """A claim for a rank other than 0: no lock, nothing written; the saved configuration when resuming."""
        folder = cls(path, lock=None, created=[])
        folder.resume = folder.committed = resume and (path / "checkpoints" / "last").is_dir()
        if resume:
            with contextlib.suppress(InputError):
                folder.saved_config = _saved_config(path)
        return folder

    def _prepare(self, *, resume: bool, overwrite: bool) -> None:
        path = self.path
        for target in (path / "checkpoints" / "last", path / "checkpoints" / "best", path / "model"):
            restore_interrupted_folder(target)  # before the stale temporaries (its old copy among them) go
        for folder in (path, path / "checkpoints"):
            remove_stale_temporaries(folder)  # also the files a killed run had moved aside
        holding = self.holding()
        if resume:
            if (path / "checkpoints" / "last").is_dir():
                self.resume = self.committed = True
                self.saved_config = _saved_config(path)
                return
            if holding is not Holding.STOPPED_EARLY:
                raise InputError(f"Nothing to resume in {path}: it holds {holding.value}; {_advice(holding, resume)}.")
            with contextlib.suppress(InputError):
                self.saved_config = _saved_config(path)
            logger.warning(
                "%s holds no checkpoint (its run stopped before the first one): starting that run again from its "
                "first step.",
                path,
            )
        elif not overwrite and holding is Holding.STOPPED_EARLY:
            logger.info("%s holds a run stopped before its first checkpoint: starting again.", path)
        elif not overwrite and holding is not Holding.EMPTY:
            raise OutputExistsError(f"Output folder {path} holds {holding.value}; {_advice(holding, resume)}.")
        self._move_previous_run_aside()

    def holding(self) -> Holding:
        """What the folder holds now (the lock file and temporary files of ours aside)."""
        entries = [entry for entry in self.path.iterdir() if entry.name != LOCK_FILE and not is_temporary(entry)]
        if (self.path / "model").is_dir():
            return Holding.FINISHED
        if (self.path / "checkpoints" / "last").is_dir():
            return Holding.UNFINISHED
        if any(entry.name in RUN_FILES for entry in entries) or (self.lock is not None and self.lock.found_stale):
            return Holding.STOPPED_EARLY
        return Holding.OTHER_FILES if entries else Holding.EMPTY

    def _move_previous_run_aside(self) -> None:
        present = [self.path / name for name in RUN_FILES if (self.path / name).exists()]
        if not present:
            return
        aside = temporary_path(self.path / "replaced-run", kind="previous")
        try:
            aside.mkdir()
            self.aside = aside
            for entry in present:
                entry.rename(aside / entry.name)
        except OSError as error:
            self.roll_back()
            raise InputError(
                f"Cannot write to output folder {self.path}: {error.strerror}; choose another folder."
            ) from None

    # ----- during and after the run ----------------------------------------------------------------------

    def configuration(self, given: TrainingConfig) -> TrainingConfig:
        """The configuration to run: the saved one when resuming or restarting a run, else ``given``."""
        return given if self.saved_config is None else TrainingConfig.from_dict(self.saved_config)

    def commit(self) -> None:
        """This run's first checkpoint is complete: the previous run's files are deleted for good."""
        self.committed = True
        if self.aside is not None:
            shutil.rmtree(self.aside, ignore_errors=True)
            self.aside = None

    def roll_back(self) -> None:
        """Undo a run that failed before its first checkpoint: remove its files, move the previous ones back."""
        if self.committed or self.lock is None:
            return
        for name in RUN_FILES:
            _remove(self.path / name)
        if self.aside is not None:
            for entry in self.aside.iterdir():
                entry.rename(self.path / entry.name)
            self.aside.rmdir()
            self.aside = None

    def release(self, *, remove_created: bool = False) -> None:
        """Release the lock; with ``remove_created``, remove the folders the claim created (when empty)."""
        if self.lock is not None:
            self.lock.release()
            self.lock = None
        if remove_created:
            _remove_empty(self.created)


@contextlib.contextmanager
def claim_run_folder(
    path: Path, *, resume: bool, overwrite: bool, main: bool = True, inputs: Sequence[Path] = ()
) -> Iterator[RunFolder]:
    """Hold ``path`` for one run while the block runs: locked and prepared by the ``main`` process (rank 0),
    observed by the others. If the block raises before the run's first checkpoint, the folder is left as it
    was found. ``inputs``: see :meth:`RunFolder.claim`."""
    if main:
        folder = RunFolder.claim(path, resume=resume, overwrite=overwrite, inputs=inputs)
    else:
        folder = RunFolder.observe(path, resume=resume)
    failed_early = False
    try:
        yield folder
        folder.commit()  # ended well: its files are the folder's now (every run that ends well wrote a checkpoint)
    except BaseException:
        failed_early = not folder.committed
        folder.roll_back()
        raise
    finally:
        folder.release(remove_created=failed_early)


def _refuse_inputs_among_run_files(path: Path, inputs: Sequence[Path]) -> None:
    """Raise :class:`InputError` when one of ``inputs`` is, or lies in, a run file of ``path`` (which a new run
    replaces): ``--overwrite`` never replaces an input."""
    entries = [(path / name).resolve() for name in RUN_FILES]
    for given in inputs:
        resolved = given.resolve()
        entry = next((e for e in entries if resolved == e or e in resolved.parents), None)
        if entry is not None:
            raise InputError(
                f"{given} lies in {entry}, which a new run in {path} replaces; copy it elsewhere first or choose "
                "another output folder (--overwrite never replaces an input)."
            )


def _advice(holding: Holding, resume: bool) -> str:
    """What to do about a folder that holds ``holding`` (not a run stopped early: that one just starts again)."""
    if holding is Holding.FINISHED:
        return "pass --overwrite to replace it, or choose another folder"
    if holding is Holding.UNFINISHED:
        return "pass --resume to continue it or --overwrite to start again"
    if resume:
        kept = " (with --overwrite: its files are kept)" if holding is Holding.OTHER_FILES else ""
        return f"start a new run without --resume{kept}"
    return "choose an empty or new folder, or pass --overwrite to train into it (its files are kept)"


def _saved_config(path: Path) -> dict[str, Any]:
    """The ``config`` entry of the run's ``training_config.json``."""
    file = path / "training_config.json"
    try:
        config = json.loads(file.read_text(encoding="utf-8"))["config"]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as error:
        raise InputError(
            f"The run in {path} cannot be resumed: {file.name} is missing or unreadable ({error}); start a new run "
            "(another folder, or --overwrite)."
        ) from None
    if not isinstance(config, dict):
        raise InputError(f"The run in {path} cannot be resumed: {file.name} is malformed; start a new run.")
    return config


def _make_folders(path: Path) -> list[Path]:
    """Create ``path`` and its missing parents; returns the folders created, deepest first."""
    missing = [folder for folder in (path, *path.parents) if not folder.exists()]
    created: list[Path] = []
    try:
        for folder in reversed(missing):
            with contextlib.suppress(FileExistsError):  # made by someone else meanwhile: not ours
                folder.mkdir()
                created.append(folder)
    except OSError as error:
        _remove_empty(list(reversed(created)))
        raise InputError(f"Cannot write to output folder {path}: {error.strerror}; choose another folder.") from None
    return list(reversed(created))


def _remove_empty(folders: list[Path]) -> None:
    for folder in folders:
        with contextlib.suppress(OSError):
            folder.rmdir()


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
