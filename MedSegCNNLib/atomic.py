"""Verified, atomic file output: write to a temporary name beside the target, check it, flush it, rename it.

A file appears under its final name complete and checked, or not at all:

- the writer writes a temporary file (or folder) in the target's folder, so the final rename is atomic;
- the temporary file must exist, be non-empty and pass the caller's check (``verify``: e.g. an image read back
  and compared with what was meant to be written, a PNG's chunk checksums, a text file's exact bytes);
- it is flushed to the disk (``fsync``), so a full disk or a quota that only shows up then is still caught;
- only then does it replace the target; an existing target is replaced only when ``overwrite`` is true and
  stays untouched when anything fails.

A symbolic link at the target counts as an existing target (:func:`occupied`), even one whose file is missing:
it is refused without ``overwrite``, and with it the rename replaces the link itself, never the file it points to.

Any failure (no space, read-only file system, permission denied, a check that fails) raises
:class:`~MedSegCNNLib.errors.WriteError`: one line that names the user's path (never the temporary one), the
cause and what to do. The temporary file is removed.

Temporary names: ``.<target name>.<host>-<pid>-<random>.partial<extension>`` for files and the same without the
extension for folders (``.previous`` for a folder set aside while it is replaced). A process that is killed
while writing leaves one behind; the next write into that folder removes those of processes that no longer
run on this host, and those of other hosts once they are :data:`STALE_AFTER_S` old.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import secrets
import shutil
import socket
import time
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from .errors import InputError, MedSegCNNError, OutputExistsError, WriteError

logger = logging.getLogger(__name__)

STALE_AFTER_S = 24 * 3600.0
"""Age (seconds since the last change) after which a temporary file of another host counts as abandoned."""

_HOST = f"{zlib.crc32(socket.gethostname().encode()):08x}"
_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.(?P<host>[0-9a-f]{8})-(?P<pid>\d+)-[0-9a-f]{8}\.(partial|previous)")
_cleaned_folders: set[Path] = set()

Verifier = Callable[[Path], None]
"""A check of a freshly written temporary file; raises :class:`InputError` (the reason) when it is not right."""


def occupied(path: Path) -> bool:
    """Whether something is at ``path``: a file, a folder or a symbolic link, also one whose target is missing
    (:meth:`Path.exists` follows links, so it misses those)."""
    return os.path.lexists(path)


def check_writable(path: str | os.PathLike[str], *, overwrite: bool) -> Path:
    """Return ``path`` as a :class:`Path` after refusing an existing file or link (unless ``overwrite``)
    and a missing parent folder."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"Output path {path} is a folder; give a file name.")
    if occupied(path) and not overwrite:
        raise OutputExistsError(f"Output file {path} already exists; choose another name or pass --overwrite.")
    if not path.parent.is_dir():
        raise InputError(f"Output folder {path.parent} does not exist; create it first.")
    return path


def refuse_replacing_inputs(
    outputs: Iterable[str | os.PathLike[str]], inputs: Iterable[str | os.PathLike[str]]
) -> None:
    """Raise :class:`InputError` when an output path names a file the command reads: ``--overwrite`` never
    replaces an input.

    ``inputs`` are files or folders (a DICOM series, a model folder, a folder of images: every file directly in
    them counts). Paths are compared after resolving links, and existing files also by identity (hard links).
    """
    read: dict[Path, Path] = {}
    identities: dict[tuple[int, int], Path] = {}
    for given in map(Path, inputs):
        files = [p for p in given.iterdir() if p.is_file()] if given.is_dir() else [given]
        for file in files:
            read[file.resolve()] = file
            with contextlib.suppress(OSError):
                status = file.stat()
                identities[status.st_dev, status.st_ino] = file
    for output in map(Path, outputs):
        source = read.get(output.resolve())
        if source is None and output.exists():
            with contextlib.suppress(OSError):
                status = output.stat()
                source = identities.get((status.st_dev, status.st_ino))
        if source is not None:
            raise InputError(
                f"Output {output} is the input {source} this command reads; choose another output name or folder "
                "(--overwrite never replaces an input)."
            )


def full_suffix(path: Path) -> str:
    """The extension chain that selects a file format, e.g. ``.nii.gz`` or ``.seg.nrrd``."""
    suffixes = path.suffixes
    if len(suffixes) >= 2 and suffixes[-1].lower() == ".gz":
        return "".join(suffixes[-2:])
    if len(suffixes) >= 2 and suffixes[-2].lower() == ".seg" and suffixes[-1].lower() == ".nrrd":
        return "".join(suffixes[-2:])
    return path.suffix


def temporary_path(target: Path, *, suffix: str = "", kind: str = "partial") -> Path:
    """A fresh temporary name for ``target`` in its folder (see the module docstring); ``suffix`` is appended
    (e.g. the format extension, so that writers that choose the format by extension still do)."""
    token = secrets.token_hex(4)
    return target.with_name(f".{target.name}.{_HOST}-{os.getpid()}-{token}.{kind}{suffix}")


def is_temporary(path: Path) -> bool:
    """Whether ``path`` is named like one of our temporary files or folders."""
    return _TEMPORARY.match(path.name) is not None


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Remove the temporary files and folders in ``folder`` that their writers abandoned (see the module
    docstring); done once per folder and process. Returns what was removed."""
    folder = folder.resolve()
    if folder in _cleaned_folders:
        return []
    _cleaned_folders.add(folder)
    removed = []
    with contextlib.suppress(OSError):
        for entry in folder.iterdir():
            match = _TEMPORARY.match(entry.name)
            if match is None or not _abandoned(entry, match.group("host"), int(match.group("pid"))):
                continue
            with contextlib.suppress(OSError):
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
                removed.append(entry)
    if removed:
        logger.info("Removed %d temporary file(s) left in %s by an interrupted run.", len(removed), folder)
    return removed


def _abandoned(entry: Path, host: str, pid: int) -> bool:
    if host == _HOST:
        return not process_exists(pid)
    try:
        return time.time() - entry.lstat().st_mtime > STALE_AFTER_S
    except OSError:
        return False


def process_exists(pid: int) -> bool:
    """Whether a process ``pid`` runs on this host (errs on the side of "yes")."""
    if pid == os.getpid():
        return True
    if os.name == "nt":  # os.kill(pid, 0) would terminate the process on Windows
        import ctypes

        kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
        handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return ctypes.get_last_error() != 87  # ERROR_INVALID_PARAMETER: no such process
        try:
            code = ctypes.c_ulong()
            return not kernel32.GetExitCodeProcess(handle, ctypes.byref(code)) or code.value == 259  # STILL_ACTIVE
        finally:
            kernel32.CloseHandle(handle)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def write_failure(target: Path, error: OSError, *, replaced: bool) -> WriteError:
    """The :class:`WriteError` for an operating-system ``error`` while writing ``target``."""
    kept = f"; {target} was left as it was" if replaced else ""
    code = error.errno
    if code == errno.ENOSPC or _nearly_full(target.parent):
        cause, advice = "no space left on the device", "free some space or write elsewhere"
    elif code == getattr(errno, "EDQUOT", None):
        cause, advice = "the disk quota is used up", "free some space or write elsewhere"
    elif code == errno.EROFS:
        cause, advice = "the file system is read-only", "write to another folder"
    elif code in (errno.EACCES, errno.EPERM):
        cause, advice = "permission denied", "write to a folder you may write to, or change its permissions"
    elif code == errno.ENAMETOOLONG:
        cause, advice = "the file name is too long", "choose a shorter name"
    else:
        cause, advice = (error.strerror or str(error)).rstrip("."), "check the disk and the folder's permissions"
    return WriteError(f"Could not write {target}: {cause}{kept}; {advice}.")


def make_folder(folder: Path, *, for_file: Path) -> Path:
    """Create ``folder`` (and its parents) if missing, to write ``for_file`` into; a failure is the
    :class:`WriteError` of that file (its one line names the user's file, the cause and what to do)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise write_failure(for_file, error, replaced=False) from None
    return folder


def incomplete_write(target: Path, reason: str, *, replaced: bool) -> WriteError:
    """The :class:`WriteError` for a write that failed or left a file that failed its check (``reason``). A
    nearly full disk is named as the cause, since some writers (SimpleITK) do not report it."""
    kept = f"; {target} was left as it was" if replaced else ""
    if _nearly_full(target.parent):
        return WriteError(
            f"Could not write {target}: no space left on the device{kept}; free some space or write elsewhere."
        )
    return WriteError(f"Could not write {target}: {reason}{kept}; check the disk and the folder's permissions.")


def _nearly_full(folder: Path) -> bool:
    try:
        return shutil.disk_usage(folder).free < 2**20
    except OSError:
        return False


@contextlib.contextmanager
def atomic_path(
    path: str | os.PathLike[str], *, overwrite: bool = False, verify: Verifier | None = None
) -> Iterator[Path]:
    """Yield a temporary path with the same extension as ``path``; when the body succeeds, check, flush and
    rename it to ``path`` (see the module docstring). ``verify`` checks the written file's content."""
    target = check_writable(path, overwrite=overwrite)
    replaced = occupied(target)
    remove_stale_temporaries(target.parent)
    tmp = temporary_path(target, suffix=full_suffix(target))
    try:
        # Created like any new file (mode 0o666 less the umask); mkstemp's 0o600 would stay on the final file.
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        yield tmp
        if not tmp.is_file() or tmp.stat().st_size == 0:
            raise incomplete_write(target, "the file written is empty", replaced=replaced)
        if verify is not None:
            try:
                verify(tmp)
            except InputError as error:
                reason = f"the file written failed its check: {_without(str(error), tmp, target)}"
                raise incomplete_write(target, reason, replaced=replaced) from None
        flush_to_disk(tmp)
        if occupied(target) and not overwrite:  # created by someone else meanwhile
            raise OutputExistsError(f"Output file {target} appeared while writing; nothing was replaced.")
        tmp.replace(target)
    except MedSegCNNError:
        raise
    except OSError as error:
        raise write_failure(target, error, replaced=replaced) from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike[str], *, overwrite: bool, keep_other_entries: bool = False) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``path``; when the body succeeds it becomes ``path``.

    An existing non-empty folder is refused (:class:`OutputExistsError`) unless ``overwrite``; when
    overwriting, the old folder stays in place, complete, until the new one is: it is renamed aside
    (``.previous``), the new folder renamed in, and only then deleted. With ``keep_other_entries`` the entries of
    the old folder that the new one does not have (e.g. a ``checkpoints`` subfolder) are carried over, as hard
    links where possible. If the body raises, the temporary folder is removed and ``path`` is untouched. The
    body checks and flushes what it writes (e.g. with :func:`atomic_path` inside the folder).
    """
    target = Path(path)
    if occupied(target) and not target.is_dir():
        raise InputError(f"{target} exists and is not a folder; give a folder name.")
    if not overwrite and _non_empty(target):
        raise OutputExistsError(f"Folder {target} already exists and is not empty; choose another or overwrite it.")
    if not target.parent.is_dir():
        raise InputError(f"Output folder {target.parent} does not exist; create it first.")
    remove_stale_temporaries(target.parent)
    partial = temporary_path(target)
    try:
        partial.mkdir()
        yield partial
        if not overwrite and _non_empty(target):
            raise OutputExistsError(f"Folder {target} appeared while writing; nothing was replaced.")
        if keep_other_entries and target.is_dir():
            for entry in target.iterdir():
                if not (partial / entry.name).exists():
                    _link_or_copy(entry, partial / entry.name)
        if target.is_dir():
            previous = temporary_path(target, kind="previous")
            target.rename(previous)
            try:
                partial.rename(target)
            except OSError:
                previous.rename(target)
                raise
            shutil.rmtree(previous, ignore_errors=True)
        else:
            partial.rename(target)
    except MedSegCNNError:
        raise
    except OSError as error:
        raise write_failure(target, error, replaced=_non_empty(target)) from None
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def _non_empty(folder: Path) -> bool:
    return folder.is_dir() and any(folder.iterdir())


def _link_or_copy(source: Path, destination: Path) -> None:
    def link(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    if source.is_dir() and not source.is_symlink():
        shutil.copytree(source, destination, copy_function=link, symlinks=True)
    elif source.is_symlink():
        destination.symlink_to(source.readlink())
    else:
        link(str(source), str(destination))


def write_text_atomic(path: str | os.PathLike[str], text: str, *, overwrite: bool = False) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically, checked by reading it back; returns the path."""
    data = text.encode("utf-8")

    def same_bytes(tmp: Path) -> None:
        if tmp.read_bytes() != data:
            raise InputError(f"{len(data)} bytes were written but the file reads back differently")

    with atomic_path(path, overwrite=overwrite, verify=same_bytes) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def verify_png(path: Path) -> None:
    """Check a PNG file completely (signature, every chunk's CRC, the closing IEND chunk); raises InputError."""
    from PIL import Image as PillowImage  # matplotlib's dependency; imported only when a PNG is written

    try:
        with PillowImage.open(path) as image:
            image.verify()
        with PillowImage.open(path) as image:
            image.load()
    except (OSError, SyntaxError, ValueError) as error:
        raise InputError(f"not a complete PNG: {error}") from None


def verify_zip(path: Path) -> None:
    """Check a ``.zip`` file completely (central directory and every member's CRC); raises InputError."""
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise InputError(f"not a complete zip file: {error}") from None
    if damaged is not None:
        raise InputError(f"its member {damaged} does not match its checksum")


def flush_to_disk(path: Path) -> None:
    """Flush the file's data to the disk (``fsync``)."""
    with path.open("rb+") as file:
        os.fsync(file.fileno())


def _without(text: str, tmp: Path, target: Path) -> str:
    """``text`` with the temporary path replaced by the target's (messages must name the user's path)."""
    return text.replace(str(tmp), str(target)).replace(tmp.name, target.name)
