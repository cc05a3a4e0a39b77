"""An exclusive, advisory lock on a folder, held by one process at a time and named in the message of the next.

The lock is ``fcntl.flock`` on POSIX and ``msvcrt.locking`` on Windows, taken on a lock file in the folder. The
operating system drops it when the process ends, however it ends, so a lock file left behind by a killed process
is stale and never blocks: only a live holder does. The file holds the holder's process id and a short
description (what holds it, on which host, since when) for the message that refuses the next one; it is removed
when the lock is released.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from pathlib import Path

from .errors import InputError

_WINDOWS_LOCK_OFFSET = 2**20
"""Byte locked on Windows: beyond the holder's description, which other processes must still be able to read."""


class FolderLock:
    """A held lock; :meth:`acquire` one, then :meth:`release` it."""

    def __init__(self, path: Path, descriptor: int, *, found_stale: bool) -> None:
        self.path = path
        self.descriptor = descriptor
        self.found_stale = found_stale  # a killed holder's lock file was there

    @classmethod
    def acquire(cls, path: Path, *, in_use: str, holder: str | None = None) -> FolderLock:
        """Lock the lock file ``path`` (its folder must exist), or raise :class:`InputError` with ``in_use``
        formatted with ``{holder}``: the live holder as "process PID", followed by its ``holder`` description
        (what it is, e.g. "medsegcnn project next", on which host, since when) when it gave one."""
        while True:
            try:
                opened = _open_lock_file(path)
            except OSError as error:
                raise InputError(
                    f"Cannot write to folder {path.parent}: {error.strerror}; choose another folder."
                ) from None
            if opened is None:
                continue  # its holder removed it between our two tries
            descriptor, found_stale = opened
            if not _try_lock(descriptor):
                text = _read_holder(descriptor)
                os.close(descriptor)
                raise InputError(in_use.format(holder=text or "another process"))
            if _still_named(path, descriptor):
                break
            os.close(descriptor)  # its holder removed the file while releasing it: lock the next one
        since = time.strftime("%H:%M:%S")
        description = "" if holder is None else f"{holder} on {socket.gethostname()} since {since}\n"
        with contextlib.suppress(OSError):  # a full disk: the lock holds all the same, the message is vaguer
            os.ftruncate(descriptor, 0)
            os.lseek(descriptor, 0, os.SEEK_SET)
            os.write(descriptor, f"{os.getpid()}\n{description}".encode())
        return cls(path, descriptor, found_stale=found_stale)

    def release(self) -> None:
        """Unlock and remove the lock file (removed while still locked on POSIX, so no one locks a dead file)."""
        if os.name == "nt":
            import msvcrt

            with contextlib.suppress(OSError):
                os.lseek(self.descriptor, _WINDOWS_LOCK_OFFSET, os.SEEK_SET)
                msvcrt.locking(self.descriptor, msvcrt.LK_UNLCK, 1)
            os.close(self.descriptor)
            with contextlib.suppress(OSError):  # another process may have it open; its presence never blocks
                self.path.unlink()
            return
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        os.close(self.descriptor)


def lock_is_held(path: Path) -> bool:
    """Whether a live process holds the lock file ``path`` (tried without waiting; nothing is written)."""
    try:
        descriptor = os.open(path, os.O_RDWR)
    except OSError:
        return False
    try:
        if not _try_lock(descriptor):
            return True
        _unlock(descriptor)
        return False
    finally:
        os.close(descriptor)


def _open_lock_file(path: Path) -> tuple[int, bool] | None:
    """Open the lock file, creating it if missing: its descriptor and whether it was there already (None when
    it vanished between the two tries)."""
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666), False
    except FileExistsError:
        pass
    try:
        return os.open(path, os.O_RDWR), True
    except FileNotFoundError:
        return None


def _try_lock(descriptor: int) -> bool:
    """Take the exclusive lock without waiting; False when another process holds it."""
    if os.name == "nt":
        import msvcrt

        os.lseek(descriptor, _WINDOWS_LOCK_OFFSET, os.SEEK_SET)
        try:
            msvcrt.locking(descriptor, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    import fcntl

    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _unlock(descriptor: int) -> None:
    if os.name == "nt":
        import msvcrt

        with contextlib.suppress(OSError):
            os.lseek(descriptor, _WINDOWS_LOCK_OFFSET, os.SEEK_SET)
            msvcrt.locking(descriptor, msvcrt.LK_UNLCK, 1)
        return
    import fcntl

    fcntl.flock(descriptor, fcntl.LOCK_UN)


def _still_named(path: Path, descriptor: int) -> bool:
    """Whether ``path`` still names the open file (a releasing holder removes it; Windows cannot, while open)."""
    if os.name == "nt":
        return True
    try:
        return os.path.samestat(os.fstat(descriptor), path.stat())
    except FileNotFoundError:
        return False


def _read_holder(descriptor: int) -> str | None:
    """The holder as "process PID (description)", from the lock file's two lines."""
    with contextlib.suppress(OSError, ValueError, UnicodeDecodeError):
        os.lseek(descriptor, 0, os.SEEK_SET)
        lines = os.read(descriptor, 1024).decode("utf-8").splitlines()
        pid = int(lines[0].strip())
        return f"process {pid} ({lines[1].strip()})" if len(lines) > 1 and lines[1].strip() else f"process {pid}"
    return None
