"""A ``medsegcnn`` command run in a separate process, read without blocking (for a Qt timer in Slicer).

:class:`BackgroundRun` starts ``PYTHON -m MedSegCNNLib ARGS`` (ARGS with ``--progress json``, see
:mod:`.commands`). One reader thread per pipe puts lines into a queue; :meth:`BackgroundRun.poll` takes what
has arrived, never blocking: JSON lines of stdout become :class:`~MedSegCNNLib.progress.Event` objects and
update :attr:`BackgroundRun.progress`; every other line (stderr, non-JSON stdout) goes to the log.

The process runs with ``--stop-on-stdin``: cancelling writes ``stop`` to its standard input, which the CLI turns
into a clean stop on every platform (``predict`` removes its temporary files, ``train`` saves a resumable
checkpoint); should the caller die, the pipe closes and the process stops the same way. When the CLI does not
acknowledge the request within :data:`ACKNOWLEDGE_S` (e.g. a launcher such as PythonSlicer did not pass its
standard input on), SIGTERM goes to the process group on POSIX (reaching the interpreter behind a launcher),
CTRL_BREAK_EVENT (else TerminateProcess) on Windows. A process still running after the timeout is killed (with
its process group on POSIX). Plain Python, no Qt.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..errors import InputError
from ..progress import STOP_ACKNOWLEDGED, STOP_LINE, Event
from .commands import python_executable

logger = logging.getLogger(__name__)

State = Literal["idle", "running", "completed", "failed", "cancelled"]

ERROR_PREFIX = "medsegcnn: error:"
PIPE_GRACE_S = 5.0
"""How long after the process exits its pipes may stay open (held by a grandchild) before the run ends."""
ACKNOWLEDGE_S = 3.0
"""How long :meth:`BackgroundRun.cancel` waits for the CLI to acknowledge a stop request before signalling."""
ERROR_LOG_LINES = 20
"""Lines of the log that :attr:`BackgroundRun.error` shows when the CLI printed no error line."""
_PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # the folder holding MedSegCNNLib


@dataclass(frozen=True)
class Progress:
    """Where a run stands: ``fraction`` done in [0, 1] (``None``: unknown), a ``stage`` to show, and the
    estimated seconds left ``eta_s`` (``None``: unknown)."""

    fraction: float | None
    stage: str
    eta_s: float | None = None

    def describe(self) -> str:
        """The stage and, when known, the time left: ``"segmenting a; about 3 min 20 s left"``."""
        text = self.stage or "working"
        if self.eta_s is not None:
            text += f"; about {format_duration(self.eta_s)} left"
        return text


def format_duration(seconds: float) -> str:
    """``seconds`` rounded to "45 s", "3 min 20 s" or "2 h 05 min"."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds // 60 % 60:02d} min"


def parse_event(line: str) -> Event | None:
    """The :class:`Event` of one stdout line ``{"event": KIND, ...}``; ``None`` for any other line."""
    try:
        data = json.loads(line)
    except ValueError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("event"), str):
        return None
    kind = data.pop("event")
    return Event(kind, data)


def advance(progress: Progress, event: Event, *, total_steps: float | None = None) -> Progress:
    """The progress after ``event``: training (``plan``, ``start``, ``step``: ``total_steps`` from the event, else
    the argument), prediction (``progress``, ``case``, ``metrics``) and ``end`` events; other kinds keep it."""
    data = event.data
    eta = _number(data.get("eta_s"))
    if event.kind == "plan":
        steps, seconds = _number(data.get("total_steps")), _number(data.get("expected_seconds"))
        return Progress(0.0, f"loading the data; planned {steps:.0f} steps" if steps else "planning", seconds)
    if event.kind == "start":
        expected = _number(data.get("budget_s")) or _number(data.get("expected_s"))
        return Progress(0.0, f"training on {data.get('device', '?')}", expected)
    if event.kind == "step":
        step, total_steps = _number(data.get("step")), _number(data.get("total_steps")) or total_steps
        fraction = min(step / total_steps, 1.0) if step is not None and total_steps else progress.fraction
        return Progress(fraction, f"training: epoch {data.get('epoch')}", eta)
    if event.kind == "epoch":
        return Progress(progress.fraction, f"validating and saving epoch {data.get('epoch')}", eta)
    if event.kind == "validation":
        dice = _number(data.get("mean_dice"))
        stage = f"epoch {data.get('epoch')}: validation mean Dice " + ("?" if dice is None else f"{dice:.3f}")
        return Progress(progress.fraction, stage, progress.eta_s)
    if event.kind == "progress":
        return Progress(_number(data.get("fraction")), str(data.get("stage", progress.stage)), eta)
    if event.kind == "case":
        index, total = _number(data.get("index")), _number(data.get("total"))
        return Progress(index / total if index and total else progress.fraction, f"segmented {data.get('case')}")
    if event.kind == "metrics":
        return Progress(progress.fraction, "evaluated")
    if event.kind == "end":
        status = data.get("status")
        return Progress(progress.fraction if status == "cancelled" else 1.0, f"training {status}")
    return progress


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


class BackgroundRun:
    """``[python, "-m", "MedSegCNNLib", "--stop-on-stdin", *args]`` in a separate process; poll it from a timer.

    - ``python``: the interpreter (default :func:`.commands.python_executable`: PythonSlicer inside Slicer).
    - ``cwd``: working folder of the process; ``env``: its base environment (default ``os.environ``; in Slicer
      e.g. ``slicer.util.startupEnvironment()``). The folder holding ``MedSegCNNLib`` is put first on its
      ``PYTHONPATH``, so the process runs the same library as the caller.
    - ``cleanup``: files or folders (e.g. temporary inputs/outputs) removed when the run ends in any state
      other than ``completed`` (the caller removes them after using the results).

    States: ``idle`` → ``running`` → ``completed`` (exit status 0) | ``failed`` | ``cancelled`` (after
    :meth:`cancel`, whatever the exit status). Keep the object while the process runs: when it is garbage
    collected, the process's standard input closes and the process stops (no orphaned runs).
    """

    def __init__(
        self,
        args: Sequence[str],
        *,
        python: str | None = None,
        cwd: str | os.PathLike[str] | None = None,
        cleanup: Sequence[str | os.PathLike[str]] = (),
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.command = [python or python_executable(), "-m", "MedSegCNNLib", "--stop-on-stdin", *map(str, args)]
        self.cwd = None if cwd is None else Path(cwd)
        self.cleanup = tuple(Path(path) for path in cleanup)
        self._env = dict(os.environ if env is None else env)
        self._state: State = "idle"
        self._progress = Progress(None, "not started")
        self._process: subprocess.Popen[str] | None = None
        self._readers: list[threading.Thread] = []
        self._lines: queue.Queue[tuple[str, str]] = queue.Queue()
        self._pending: list[Event] = []
        self._latest: dict[str, Event] = {}
        self._log: list[str] = []
        self._error_message: str | None = None
        self._cancel_requested = False
        self._total_steps: float | None = None
        self._exited_at: float | None = None
        self._lock = threading.RLock()

    # ----- public interface ------------------------------------------------------------------------------

    @property
    def state(self) -> State:
        return self._state

    @property
    def returncode(self) -> int | None:
        """The exit status once the run has ended (negative on POSIX: killed by that signal)."""
        return None if self._process is None else self._process.returncode

    @property
    def progress(self) -> Progress:
        return self._progress

    @property
    def log(self) -> str:
        """Everything the process printed except progress events (stderr and non-JSON stdout), in order."""
        with self._lock:
            return "\n".join(self._log)

    @property
    def error(self) -> str | None:
        """Why the run failed: the CLI's ``medsegcnn: error:`` message, else the last lines of the log."""
        if self._state != "failed":
            return None
        if self._error_message:
            return self._error_message
        with self._lock:
            tail = "\n".join(self._log[-ERROR_LOG_LINES:])
        code = self.returncode
        status = f"was stopped by signal {-code}" if code is not None and code < 0 else f"exited with status {code}"
        return f"The process {status}." + (f"\n{tail}" if tail else "")

    def last_event(self, kind: str) -> Event | None:
        """The latest event of ``kind`` received so far (e.g. ``"end"`` of training, ``"metrics"``)."""
        return self._latest.get(kind)

    def start(self) -> BackgroundRun:
        """Start the process and its reader threads; returns at once. Raises :class:`InputError` if the
        interpreter cannot be started."""
        with self._lock:
            if self._state != "idle":
                raise RuntimeError(f"This run was started already (state {self._state}); create a new one.")
            try:
                self._process = subprocess.Popen(
                    self.command,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                    encoding="utf-8",
                    errors="replace",
                    cwd=self.cwd,
                    env=self._child_environment(),
                    **_platform_options(),
                )
            except OSError as error:
                self._state = "failed"
                self._error_message = f"Could not start {self.command[0]}: {error.strerror or error}."
                self._remove_cleanup_paths()
                raise InputError(
                    f"{self._error_message} Check the Python interpreter given to BackgroundRun (python=...)."
                ) from None
            self._readers = [
                threading.Thread(target=self._read, args=(stream, name), name=f"medsegcnn-{name}", daemon=True)
                for stream, name in ((self._process.stdout, "stdout"), (self._process.stderr, "stderr"))
            ]
            for reader in self._readers:
                reader.start()
            self._state = "running"
            self._progress = Progress(None, "starting")
            logger.debug("Started %s (pid %d).", self.command, self._process.pid)
        return self

    def poll(self) -> list[Event]:
        """Events received since the last call, oldest first; updates state, progress and log. Never blocks."""
        with self._lock:
            self._drain()
            self._finish_if_exited(force=False)
            events, self._pending = self._pending, []
        return events

    def wait(self, timeout: float | None = None) -> State:
        """Block until the run ends or ``timeout`` seconds pass; returns the state. Events stay for :meth:`poll`."""
        if self._process is None or self._state != "running":
            return self._state
        try:
            self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            with self._lock:
                self._drain()
            return self._state
        for reader in self._readers:
            reader.join(PIPE_GRACE_S)
        with self._lock:
            self._drain()
            self._finish_if_exited(force=True)
        return self._state

    def cancel(self, timeout: float = 10.0) -> State:
        """Ask the process to stop, wait up to ``timeout`` s, then kill it; returns the final state.

        State ``cancelled`` unless the run had ended already (then nothing changes); calling it again is
        harmless. The ``cleanup`` paths are removed afterwards.
        """
        with self._lock:
            if self._state == "idle":
                self._state, self._progress = "cancelled", Progress(None, "cancelled")
                self._remove_cleanup_paths()
                return self._state
            if self._process is None or self._state != "running":
                return self._state
            if self._process.poll() is None:
                self._cancel_requested = True
                self._request_stop()
        if self._cancel_requested:
            deadline = time.monotonic() + timeout
            if not self._await_acknowledgement(min(ACKNOWLEDGE_S, timeout)):
                logger.debug("The stop request was not acknowledged; signalling the process.")
                self._signal_stop()
            try:
                self._process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                logger.warning("The process did not stop within %.0f s; killing it.", timeout)
                self._kill()
                self._process.wait()
            for reader in self._readers:  # an interpreter behind a launcher may outlive the launcher a little
                reader.join(max(0.0, deadline - time.monotonic()))
        return self.wait()

    # ----- internals -------------------------------------------------------------------------------------

    def _child_environment(self) -> dict[str, str]:
        env = dict(self._env)
        paths = [str(_PACKAGE_ROOT), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
        env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
        env["PYTHONUNBUFFERED"] = "1"  # log lines arrive as they are written
        env["PYTHONIOENCODING"] = "utf-8"
        return env

    def _read(self, stream, name: str) -> None:
        with stream:
            for line in stream:
                self._lines.put((name, line.rstrip("\r\n")))

    def _drain(self) -> None:
        while True:
            try:
                name, line = self._lines.get_nowait()
            except queue.Empty:
                return
            event = parse_event(line) if name == "stdout" else None
            if event is None:
                self._log.append(line)
                if name == "stderr" and line.startswith(ERROR_PREFIX):
                    self._error_message = line[len(ERROR_PREFIX) :].strip()
                continue
            self._pending.append(event)
            self._latest[event.kind] = event
            if event.kind == "start":
                self._total_steps = _number(event.data.get("total_steps"))
            self._progress = advance(self._progress, event, total_steps=self._total_steps)

    def _finish_if_exited(self, *, force: bool) -> None:
        """End the run once the process has exited and its pipes are read (or ``force``/after a grace time)."""
        if self._process is None or self._state != "running" or self._process.poll() is None:
            return
        if self._exited_at is None:
            self._exited_at = time.monotonic()
        reading = any(reader.is_alive() for reader in self._readers)
        if reading and not force and time.monotonic() - self._exited_at < PIPE_GRACE_S:
            return
        self._drain()
        with contextlib.suppress(OSError):
            self._process.stdin.close()
        code = self._process.returncode
        if self._cancel_requested:
            self._state, self._progress = "cancelled", Progress(self._progress.fraction, "cancelled")
        elif code == 0:
            self._state, self._progress = "completed", Progress(1.0, "completed", 0.0)
        else:
            self._state, self._progress = "failed", Progress(self._progress.fraction, "failed")
        logger.debug("%s ended: %s (exit status %s).", self.command, self._state, code)
        if self._state != "completed":
            self._remove_cleanup_paths()

    def _request_stop(self) -> None:
        """Write the stop line to the process's standard input (and close it)."""
        try:
            self._process.stdin.write(STOP_LINE + "\n")
            self._process.stdin.close()
        except (OSError, ValueError):  # the pipe is closed: the process is exiting, or it closed its stdin
            logger.debug("Could not write to the process's standard input.")

    def _await_acknowledgement(self, seconds: float) -> bool:
        """Whether, within ``seconds``, the CLI logged that it got the stop request (or the process ended)."""
        deadline = time.monotonic() + seconds
        while True:
            with self._lock:
                self._drain()
                if any(line.endswith(STOP_ACKNOWLEDGED) for line in self._log[-ERROR_LOG_LINES:]):
                    return True
            if self._process.poll() is not None:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)

    def _signal_stop(self) -> None:
        """SIGTERM to the process group (POSIX); CTRL_BREAK_EVENT, else TerminateProcess (Windows)."""
        process = self._process
        try:
            if os.name == "nt":
                process.send_signal(signal.CTRL_BREAK_EVENT)
            else:  # the process leads its own group (start_new_session): an interpreter behind a launcher too
                os.killpg(process.pid, signal.SIGTERM)
        except OSError:  # Windows: no console shared with the child; POSIX: it has just exited
            if process.poll() is None:
                process.terminate()

    def _kill(self) -> None:
        process = self._process
        try:
            if os.name == "nt":
                process.kill()
            else:  # the process leads its own group (start_new_session): its children go too
                os.killpg(process.pid, signal.SIGKILL)
        except OSError:
            pass  # exited meanwhile

    def _remove_cleanup_paths(self) -> None:
        for path in self.cleanup:
            try:
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink(missing_ok=True)
            except OSError as error:
                logger.warning("Could not remove %s after the run: %s", path, error)


def _platform_options() -> dict[str, object]:
    """Popen options: a process group of its own (to signal it alone), and no console window on Windows."""
    if os.name != "nt":
        return {"start_new_session": True}
    startup = subprocess.STARTUPINFO()
    startup.dwFlags |= subprocess.STARTF_USESHOWWINDOW
    startup.wShowWindow = 0  # SW_HIDE
    return {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP, "startupinfo": startup}
