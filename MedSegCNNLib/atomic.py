"""Atomic file output: write to a temporary name beside the target, then rename.

A crash or an exception during writing never leaves a half-written file under the final name, and an
existing file is replaced only when ``overwrite`` is true.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

from .errors import InputError, OutputExistsError


def check_writable(path: str | os.PathLike[str], *, overwrite: bool) -> Path:
    """Return ``path`` as a :class:`Path` after refusing an existing file (unless ``overwrite``)
    and a missing parent folder."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"Output path {path} is a folder; give a file name.")
    if path.exists() and not overwrite:
        raise OutputExistsError(f"Output file {path} already exists; choose another name or pass --overwrite.")
    if not path.parent.is_dir():
        raise InputError(f"Output folder {path.parent} does not exist; create it first.")
    return path


def full_suffix(path: Path) -> str:
    """The extension chain that selects a file format, e.g. ``.nii.gz`` or ``.seg.nrrd``."""
    suffixes = path.suffixes
    if len(suffixes) >= 2 and suffixes[-1].lower() == ".gz":
        return "".join(suffixes[-2:])
    if len(suffixes) >= 2 and suffixes[-2].lower() == ".seg" and suffixes[-1].lower() == ".nrrd":
        return "".join(suffixes[-2:])
    return path.suffix


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path with the same extension as ``path``; on success rename it to ``path``.

    The temporary file lives in the target's folder (so the rename is atomic on one file system) and is
    removed if the body raises.
    """
    target = check_writable(path, overwrite=overwrite)
    suffix = full_suffix(target)
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(8)}.partial{suffix}")
    # Created like any new file (mode 0o666 less the umask); mkstemp's 0o600 would stay on the final file.
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        yield tmp
        if target.exists() and not overwrite:  # created by someone else meanwhile
            raise OutputExistsError(f"Output file {target} appeared while writing; nothing was replaced.")
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | os.PathLike[str], text: str, *, overwrite: bool = False) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically and return the path."""
    with atomic_path(path, overwrite=overwrite) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)
