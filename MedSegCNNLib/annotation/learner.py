"""Learning in the background: fine-tune the newest model version on every accepted case, one round at a time.

The learner is a process of its own (``python -m MedSegCNNLib.annotation PROJECT``, started by
:func:`start_learner`), so that the user goes on segmenting and accepting while it runs, and so that closing the
program that started it does not lose a round. It holds ``learning/.learner.lock``: one learner per project. Each
round trains (``MedSegCNNLib.training.train``) on all accepted cases (their newest revisions) in
``learning/run/``, starting from the newest version with its network, for the project's learning budget, planned
and re-planned by the budget planner; then the model is checked (finite weights) and published as the next
version (:mod:`.versions`). Cases accepted while a round runs are learned in the next round, which starts at
once; an idle learner waits :data:`LINGER_S` for the next accept before it ends. A round that diverges (a loss
that is not finite) or fails publishes nothing: the previous version stays, the reason is recorded in
``versions.json`` and ``learning/state.json``, and the learner stops until the next accept. A learner killed at
any moment loses its round only: the next accept starts another.

**Yielding the processor.** Segmenting the next case must not wait for learning (:func:`paused_learning`). On
POSIX the driver stops the learner's process group (SIGSTOP) while it predicts and lets it go on (SIGCONT)
afterwards, wherever the learner is (loading, planning, a step); a driver killed in between leaves it stopped
until the next driver operation resumes it (:func:`resume_learner`). The stopped seconds count against the
round's budget (a prediction takes about a second). On Windows the driver leaves a request file in
``learning/pause/`` instead, and the learner waits between two training steps while a live process has one; that
time is left out of the budget. The learner's OpenMP threads wait passively, so that a stopped or finished
learner leaves the cores free.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..atomic import process_exists, write_text_atomic
from ..errors import InputError, MedSegCNNError
from ..folder_lock import FolderLock, lock_is_held
from .project_file import CaseState, ProjectFile, absolute_path, read_project_file
from .versions import LearningFailure, new_version, publish_version, read_versions, record_failure

logger = logging.getLogger(__name__)

LEARNING_FOLDER = "learning"
LEARNER_LOCK = ".learner.lock"
STATE_FILE = "state.json"
PAUSE_FOLDER = "pause"
RUN_FOLDER = "run"
LOG_FILE = "learner.log"
MIN_CASES_TO_LEARN = 2
"""Accepted cases before the first round of a project without a model (a round from 1 case overfits it)."""
LONGEST_PAUSE_S = 600.0
"""A pause request older than this is ignored (its process hangs): learning never waits for ever."""
LINGER_S, LINGER_POLL_S = 120.0, 0.25
"""How long an idle learner waits for the next accept before it ends, and how often it looks."""
STRETCH_LIMIT = 3.0
"""A round whose budget is too short for the planner's fewest steps learns for the shortest budget that fits them
(logged, and recorded as the version's budget) when that is at most this many times the budget; else it fails and
says what budget to give."""
STARTING_S = 120.0
"""A learner started this long ago that holds no lock has died before it began (its log says why)."""
_STATE_EVERY_S = 1.0


@dataclass(frozen=True)
class LearningState:
    """What ``learning/state.json`` says, and whether its learner still runs: ``state`` is starting (a learner was
    started and has not begun yet), running, idle, failed or stopped (the file says running but no learner holds
    the lock: its process was killed)."""

    state: str
    message: str = ""
    version: int | None = None
    cases: int = 0
    step: int = 0
    total_steps: int = 0
    started: float | None = None
    budget_s: float | None = None
    paused_s: float = 0.0
    pid: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in self.__dataclass_fields__}


def learning_folder(project: Path) -> Path:
    return project / LEARNING_FOLDER


def learner_running(project: Path) -> bool:
    return lock_is_held(learning_folder(project) / LEARNER_LOCK)


def read_learning_state(project: Path) -> LearningState:
    """The learner's state (``idle`` when none was ever started); a killed learner's ``running`` reads ``stopped``."""
    path = learning_folder(project) / STATE_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        state = LearningState(**{key: data[key] for key in LearningState.__dataclass_fields__ if key in data})
    except FileNotFoundError:
        return LearningState("idle")
    except (OSError, ValueError, TypeError):
        return LearningState("idle", message=f"{path} is unreadable; it is rewritten by the next round.")
    starting = state.state == "starting" and time.time() - (state.started or 0.0) < STARTING_S
    if state.state in ("running", "starting") and not starting and not learner_running(project):
        return LearningState(
            "stopped",
            message="The learning process ended before its round did (killed?); the next accept learns again.",
            version=state.version,
            cases=state.cases,
        )
    return state


def pending_cases(project_file: ProjectFile, project: Path) -> dict[str, int]:
    """The accepted cases a new round would learn (case → newest revision), or {} when the newest version has
    learned exactly these already, learning is off, or too few cases are accepted for a first round."""
    accepted = {case.id: len(case.revisions) for case in project_file.cases if case.state is CaseState.ACCEPTED}
    newest = read_versions(project).newest
    if not project_file.learning or not accepted or (newest is not None and newest.cases == accepted):
        return {}
    if newest is None and len(accepted) < MIN_CASES_TO_LEARN:
        return {}
    return accepted


def start_learner(project: Path) -> bool:
    """Start a learner for ``project`` unless one runs (it learns the new cases in its next round); returns
    whether one was started. Call after the project file names the new accepted case."""
    if learner_running(project):
        return False
    folder = learning_folder(project)
    folder.mkdir(exist_ok=True)
    environment = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}  # idle OpenMP threads sleep instead of spinning
    with (folder / LOG_FILE).open("ab") as log:
        detached: dict[str, Any] = (
            {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP | subprocess.DETACHED_PROCESS}  # type: ignore[attr-defined]
            if os.name == "nt"
            else {"start_new_session": True}
        )
        process = subprocess.Popen(
            [sys.executable, "-m", "MedSegCNNLib.annotation", str(project.resolve())],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            env=environment,
            **detached,
        )
    # no learner writes the state now; the new one overwrites it once it holds the lock
    write_learning_state(project, LearningState("starting", started=time.time(), pid=process.pid))
    return True


@contextlib.contextmanager
def paused_learning(project: Path) -> Iterator[None]:
    """While the block runs, the project's learner does not compete for the processor (module docstring)."""
    if os.name == "nt":
        with _pause_request(project):
            yield
        return
    group = _learner_process_group(project)
    if group is not None:
        with contextlib.suppress(OSError):
            os.killpg(group, signal.SIGSTOP)
    try:
        yield
    finally:
        if group is not None:
            with contextlib.suppress(OSError):
                os.killpg(group, signal.SIGCONT)


def resume_learner(project: Path) -> None:
    """Let a learner go on that a driver killed inside :func:`paused_learning` left stopped (POSIX)."""
    group = None if os.name == "nt" else _learner_process_group(project)
    if group is not None:
        with contextlib.suppress(OSError):
            os.killpg(group, signal.SIGCONT)


def _learner_process_group(project: Path) -> int | None:
    """The learner's process group (it leads its own session): the lock holder's, or that of a learner just
    started that has not taken the lock yet; None when there is none."""
    lock = learning_folder(project) / LEARNER_LOCK
    try:
        if lock_is_held(lock):
            pid = int(lock.read_text(encoding="utf-8").splitlines()[0])
        else:
            state = read_learning_state(project)
            if state.state != "starting" or state.pid is None:
                return None
            pid = state.pid
        return pid if os.getpgid(pid) == pid else None
    except (OSError, ValueError, IndexError):
        return None


@contextlib.contextmanager
def _pause_request(project: Path) -> Iterator[None]:
    """A request file in ``learning/pause/`` for the block's duration: the learner waits between steps."""
    folder = learning_folder(project) / PAUSE_FOLDER
    request = folder / f"{os.getpid()}-{time.monotonic_ns()}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        request.write_text(str(os.getpid()), encoding="ascii")
    except OSError:  # a read-only project: nothing to pause, and nothing learns there either
        yield
        return
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            request.unlink()


class _DivergedError(MedSegCNNError):
    """A training step's loss was not finite."""


class _RoundWatch:
    """The ``on_event`` sink of a round: pauses on request, stops a diverging run, writes the learner's state."""

    def __init__(self, project: Path, state: LearningState) -> None:
        self.project = project
        self.state = state
        self.paused = 0.0
        self.last_write = 0.0

    def clock(self) -> float:
        """Seconds on which the budget is counted: the paused time left out."""
        return time.monotonic() - self.paused

    def __call__(self, event: Any) -> None:
        if event.kind == "start":
            self.state = _replace(self.state, total_steps=int(event.data.get("total_steps", 0)))
        if event.kind != "step":
            return
        loss = event.data.get("loss")
        if loss is None or not math.isfinite(float(loss)):
            raise _DivergedError(f"the loss diverged (not finite at step {event.data.get('step')})")
        self.state = _replace(
            self.state,
            step=int(event.data["step"]),
            total_steps=int(event.data["total_steps"]),
            paused_s=round(self.paused, 3),
        )
        self._wait_while_paused()
        if time.monotonic() - self.last_write >= _STATE_EVERY_S:
            write_learning_state(self.project, self.state)
            self.last_write = time.monotonic()

    def _wait_while_paused(self) -> None:
        started = time.monotonic()
        while _live_pause_requests(learning_folder(self.project) / PAUSE_FOLDER):
            if time.monotonic() - started > LONGEST_PAUSE_S:
                logger.warning("Learning paused for over %.0f s; going on.", LONGEST_PAUSE_S)
                break
            time.sleep(0.02)
        self.paused += time.monotonic() - started


def write_learning_state(project: Path, state: LearningState) -> None:
    with contextlib.suppress(MedSegCNNError):  # a full disk must not end a round over its progress report
        write_text_atomic(learning_folder(project) / STATE_FILE, json.dumps(state.to_dict()) + "\n", overwrite=True)


def run_learner(project: Path) -> int:
    """Learn rounds until the newest version has learned every accepted case; returns the exit status (0 also when
    another learner runs: it does the work)."""
    while True:
        try:
            lock = FolderLock.acquire(
                learning_folder(project) / LEARNER_LOCK,
                holder="the MedSegCNN learner",
                in_use="{holder} already learns",
            )
        except InputError:
            return 0
        try:
            ended_well = _learn_until_done(project)
        finally:
            lock.release()
        # an accept that saw the lock held just before its release relies on this look
        if not ended_well or not pending_cases(read_project_file(project), project):
            return 0 if ended_well else 1


def _learn_until_done(project: Path) -> bool:
    """Rounds while cases are pending; idle, the learner lingers :data:`LINGER_S` for the next accept (it then
    starts its round at once, without a new process's start-up), polling the project file."""
    idle_since = None
    while True:
        project_file = read_project_file(project)
        cases = pending_cases(project_file, project)
        if cases:
            if not _learn_round(project, project_file, cases):
                return False
            idle_since = None
            continue
        if idle_since is None:
            idle_since = time.monotonic()
            idle = LearningState("idle", message="Every accepted case is learned.", pid=os.getpid())
            write_learning_state(project, idle)
        if time.monotonic() - idle_since >= LINGER_S:
            return True
        time.sleep(LINGER_POLL_S)


def _learn_round(project: Path, project_file: ProjectFile, cases: dict[str, int]) -> bool:
    """One round: train on ``cases``, publish the next version; False (and the reason recorded) when it fails."""
    from ..data.dataset import CaseSource, Dataset
    from ..training import train
    from ..training.planner import BudgetTooShortError

    versions = read_versions(project)
    newest = versions.newest
    number = 1 if newest is None else newest.version + 1
    budget = project_file.learn_budget_s
    state = LearningState(
        "running", version=number, cases=len(cases), started=time.time(), budget_s=budget, pid=os.getpid()
    )
    write_learning_state(project, state)
    run = learning_folder(project) / RUN_FOLDER
    shutil.rmtree(run, ignore_errors=True)  # what a killed round left
    watch = _RoundWatch(project, state)
    started = time.monotonic()
    try:
        sources = []
        for case_id, revision in cases.items():
            record = project_file.case(case_id)
            images = [absolute_path(path, project) for path in record.images]
            missing = [str(path) for path in images if not path.exists()]
            if missing:
                logger.warning("Case %s is left out of this round: %s moved or vanished.", case_id, ", ".join(missing))
                continue
            label = absolute_path(record.revisions[revision - 1], project)
            sources.append(CaseSource(case_id, tuple(images), label))
        if not sources:
            raise InputError("no accepted case has its image files (moved or deleted?)")
        dataset = Dataset(project.name, project_file.channels, project_file.labels, tuple(sources))
        config = _round_config(project, project_file, newest, budget, number)
        try:
            result = train(dataset, run, config, on_event=watch, clock=watch.clock)
        except BudgetTooShortError as error:  # the planner's minimum: loading, planning and its fewest steps
            if error.needed_seconds > STRETCH_LIMIT * budget:
                raise InputError(
                    f"a round needs at least {math.ceil(error.needed_seconds)} s on this machine (loading, planning "
                    f"and the fewest steps worth taking), far beyond the learning budget of {budget:g} s; give a "
                    "longer learning budget (--learn-budget)"
                ) from None
            budget = float(math.ceil(error.needed_seconds * 1.1))
            logger.warning(
                "A round needs at least %.0f s on this machine: this one learns for %.0f s.",
                error.needed_seconds,
                budget,
            )
            watch.state = _replace(watch.state, budget_s=budget)
            result = train(
                dataset, run, config.replace(time_budget_minutes=budget / 60), on_event=watch, clock=watch.clock
            )
        if result.model is None or result.status not in ("completed", "time_budget"):
            raise InputError(f"the round ended {result.status}")
        _check_finite(result.network)
        record = new_version(
            number,
            cases=dict(cases),
            from_version=None if newest is None else newest.version,
            learn_seconds=round(time.monotonic() - started - watch.paused, 2),
            steps=result.steps_done,
            budget_s=budget,
            source=f"learning round {number}",
        )
        publish_version(project, result.model, record)
    except (MedSegCNNError, RuntimeError, OSError, ValueError) as error:
        reason = str(error).rstrip(".")
        kept = "no version is kept" if newest is None else f"version {newest.version} is kept"
        message = f"Learning round {number} failed: {reason}; {kept}. The next accept learns again."
        logger.error("%s", message)
        with contextlib.suppress(MedSegCNNError):
            record_failure(project, LearningFailure(time.time(), len(cases), reason))
        write_learning_state(project, _replace(watch.state, state="failed", message=message))
        return False
    finally:
        shutil.rmtree(run, ignore_errors=True)
    logger.info("Version %d learned from %d case(s) in %.0f s.", number, len(cases), time.monotonic() - started)
    return True


def _round_config(project: Path, project_file: ProjectFile, newest: Any, budget: float, number: int) -> Any:
    """The training options of a round: all cases, the budget, and the newest version's network to start from."""
    from ..checkpoint import read_model_card
    from ..training import TrainingConfig

    config = TrainingConfig(
        spatial_dims=project_file.dims,
        fold=None,
        seed=number,
        time_budget_minutes=budget / 60,
        checkpoint_minutes=max(5.0, budget / 60),
    )
    if newest is None:
        return config
    folder = project / newest.folder
    card = read_model_card(folder, require_weights=True)
    return config.replace(init_from=str(folder), network=dict(card.network), patch_size=tuple(card.patch_size))


def _check_finite(network: Any) -> None:
    import torch

    for name, tensor in network.state_dict().items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise _DivergedError(f"the trained weights are not finite ({name})")


def _live_pause_requests(folder: Path) -> bool:
    """Whether a live process asks the learner to wait; requests of ended processes are removed."""
    try:
        requests = list(folder.iterdir())
    except OSError:
        return False
    live = False
    for request in requests:
        try:
            pid = int(request.name.split("-", 1)[0])
            age = time.time() - request.stat().st_mtime
        except (ValueError, OSError):
            continue
        if process_exists(pid) and age < LONGEST_PAUSE_S:
            live = True
        else:
            with contextlib.suppress(OSError):
                request.unlink()
    return live


def _replace(learning: LearningState, **changes: Any) -> LearningState:
    return LearningState(**{**learning.to_dict(), **changes})


def main(argv: list[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else argv
    if len(arguments) != 1:
        print("usage: python -m MedSegCNNLib.annotation PROJECT", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run_learner(Path(arguments[0]))
