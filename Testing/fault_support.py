"""Shared checks of the fault-injection suite: nothing pre-existing changed, nothing temporary left behind.

Every fault test records the files it cares about before the fault (:func:`snapshot`), injects the fault, and
then asserts the exit code, the exact one-line message (:func:`error_line`), that the snapshot is unchanged
(:func:`assert_unchanged`) and that no temporary or partial file of ours remains (:func:`leftovers`).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

TEMPORARY_NAME = re.compile(r"(^\..*\.partial(\..*)?$)|(\.partial$)|(^\.medsegcnn-)|(\.tmp$)")
"""Names our temporary files and folders have (hidden, with ``.partial``), plus generic ``.tmp`` files."""


def snapshot(*roots: str | os.PathLike[str]) -> dict[Path, str]:
    """SHA-256 of every file under ``roots`` (files or folders), keyed by path."""
    digests: dict[Path, str] = {}
    for root in map(Path, roots):
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for file in files:
            digests[file] = hashlib.sha256(file.read_bytes()).hexdigest()
    return digests


def assert_unchanged(before: dict[Path, str]) -> None:
    """Every file of ``before`` still exists with the same content."""
    changed = [str(path) for path, digest in before.items() if not path.is_file() or snapshot(path)[path] != digest]
    assert not changed, f"pre-existing files changed or removed: {changed}"


def leftovers(*roots: str | os.PathLike[str]) -> list[Path]:
    """Temporary or partial files and folders (by name) under ``roots``."""
    found: list[Path] = []
    for root in map(Path, roots):
        if root.is_dir():
            found += [p for p in root.rglob("*") if TEMPORARY_NAME.search(p.name)]
    return sorted(found)


def error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The single ``medsegcnn: error: ...`` line of a failed command (asserts there is exactly one, and no
    traceback or other library chatter on stderr: every line there is one of ours, ``medsegcnn: ...``)."""
    assert "Traceback" not in result.stderr, result.stderr
    foreign = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith("medsegcnn: ")]
    assert not foreign, f"stderr holds lines that are not ours: {foreign}"
    errors = [line for line in result.stderr.splitlines() if line.startswith("medsegcnn: error: ")]
    assert len(errors) == 1, result.stderr
    return errors[0].removeprefix("medsegcnn: error: ")


@contextlib.contextmanager
def mounted_tmpfs(folder: Path, *options: str) -> Iterator[Path]:
    """A tmpfs mounted on ``folder`` for the block (skips the test where mounting is not allowed)."""
    if os.name != "posix" or os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root on POSIX (the monkeypatched writer covers other users)")
    folder.mkdir()
    mount = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", ",".join(options), "tmpfs", str(folder)], capture_output=True, text=True
    )
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mount.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def fill(folder: Path) -> None:
    """Fill the file system of ``folder`` to the last byte."""
    for name, chunk in (("filler", 4096), ("filler-tail", 1)):
        with (folder / name).open("wb", buffering=0) as file, contextlib.suppress(OSError):
            while True:
                file.write(b"\0" * chunk)
