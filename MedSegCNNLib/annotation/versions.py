"""The model versions of an annotation project: ``PROJECT/models/vNNNN/`` folders and ``PROJECT/versions.json``.

Each version is an ordinary model folder (``model.json`` + ``model.safetensors``) that ``medsegcnn predict --model``
takes. Version 0 is the model the project started from, if any; each learning round that ends well adds the next
one. ``PROJECT/models/latest`` names the newest: a symbolic link to its folder (replaced atomically), or on
systems without symbolic links a copy of it.

``versions.json`` (format ``medsegcnn-annotation-versions``, version 1) lists them::

    {"format": "medsegcnn-annotation-versions", "format_version": 1,
     "versions": [{"version": 1, "folder": "models/v0001", "created": 1765119600.0,
                   "cases": {"hippocampus_001": 1, ...},   # the accepted cases it learned from: case → revision
                   "from_version": 0, "learn_seconds": 61.2, "steps": 212, "budget_s": 60.0,
                   "source": "learning round 1"}],
     "failures": [{"at": 1765119700.0, "cases": 7, "reason": "the loss diverged (NaN at step 35)"}]}

The learner (:mod:`.learner`) is its only writer once the project exists; a version's folder is complete before
the file lists it.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..atomic import atomic_folder, make_folder, temporary_path, write_text_atomic
from ..errors import InputError

VERSIONS_FILE = "versions.json"
MODELS_FOLDER = "models"
LATEST = "latest"
FORMAT = "medsegcnn-annotation-versions"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class ModelVersion:
    """One model version (module docstring); ``cases`` maps each accepted case it learned from to its revision."""

    version: int
    folder: str
    created: float
    cases: dict[str, int] = field(default_factory=dict)
    from_version: int | None = None
    learn_seconds: float | None = None
    steps: int | None = None
    budget_s: float | None = None
    source: str = ""


@dataclass(frozen=True)
class LearningFailure:
    """A learning round that produced no version, and why."""

    at: float
    cases: int
    reason: str


@dataclass(frozen=True)
class Versions:
    """The content of ``versions.json``."""

    versions: tuple[ModelVersion, ...] = ()
    failures: tuple[LearningFailure, ...] = ()

    @property
    def newest(self) -> ModelVersion | None:
        return self.versions[-1] if self.versions else None

    def get(self, number: int) -> ModelVersion:
        for version in self.versions:
            if version.version == number:
                return version
        raise InputError(f"This project has no model version {number}.")


def version_folder_name(number: int) -> str:
    return f"v{number:04d}"


def read_versions(project: Path) -> Versions:
    """Read ``project/versions.json`` (none yet: no versions); a corrupt file is refused with its path."""
    path = project / VERSIONS_FILE
    if not path.is_file():
        return Versions()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("format") != FORMAT or data.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"not format {FORMAT!r} version {FORMAT_VERSION}")
        versions = tuple(_version_from_dict(entry) for entry in data["versions"])
        failures = tuple(LearningFailure(float(f["at"]), int(f["cases"]), str(f["reason"])) for f in data["failures"])
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as e:
        raise InputError(
            f"The project's version list {path} is corrupt ({e}); restore it from a backup. It was not changed."
        ) from None
    return Versions(versions, failures)


def write_versions(project: Path, versions: Versions) -> None:
    data = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "versions": [asdict(version) for version in versions.versions],
        "failures": [asdict(failure) for failure in versions.failures],
    }
    write_text_atomic(project / VERSIONS_FILE, json.dumps(data, indent=1, allow_nan=False) + "\n", overwrite=True)


def publish_version(project: Path, model_folder: Path, version: ModelVersion) -> Versions:
    """Copy the model folder ``model_folder`` to ``version.folder``, list it in ``versions.json`` and point
    ``models/latest`` at it; returns the new list. The folder is complete before the list names it."""
    target = project / version.folder
    make_folder(target.parent, for_file=target)
    with atomic_folder(target, overwrite=True) as partial:  # a folder left by a killed round is replaced
        for entry in model_folder.iterdir():
            if entry.is_file() and not entry.name.startswith("."):
                shutil.copy2(entry, partial / entry.name)
    current = read_versions(project)
    updated = Versions((*current.versions, version), current.failures)
    write_versions(project, updated)
    point_latest(project, version.folder)
    return updated


def record_failure(project: Path, failure: LearningFailure) -> None:
    current = read_versions(project)
    write_versions(project, Versions(current.versions, (*current.failures, failure)))


def point_latest(project: Path, folder: str) -> None:
    """Make ``models/latest`` name ``folder`` (a symbolic link replaced atomically, else a copy)."""
    latest = project / MODELS_FOLDER / LATEST
    link = temporary_path(latest)
    try:
        link.symlink_to(Path(folder).name, target_is_directory=True)
    except (OSError, NotImplementedError):
        if latest.is_symlink():
            latest.unlink()
        with atomic_folder(latest, overwrite=True) as partial:
            for entry in (project / folder).iterdir():
                shutil.copy2(entry, partial / entry.name)
        return
    try:
        link.replace(latest)
    except OSError:
        with contextlib.suppress(OSError):
            link.unlink()
        raise


def new_version(number: int, **fields: Any) -> ModelVersion:
    """A version record numbered ``number`` in its standard folder, created now."""
    return ModelVersion(
        version=number, folder=f"{MODELS_FOLDER}/{version_folder_name(number)}", created=time.time(), **fields
    )


def _version_from_dict(entry: Mapping[str, Any]) -> ModelVersion:
    folder = str(entry["folder"])
    if not folder.startswith(f"{MODELS_FOLDER}/") or ".." in folder:
        raise ValueError(f"version folder {folder!r} is not in {MODELS_FOLDER}/")
    return ModelVersion(
        version=int(entry["version"]),
        folder=folder,
        created=float(entry["created"]),
        cases={str(case): int(revision) for case, revision in dict(entry.get("cases", {})).items()},
        from_version=None if entry.get("from_version") is None else int(entry["from_version"]),
        learn_seconds=None if entry.get("learn_seconds") is None else float(entry["learn_seconds"]),
        steps=None if entry.get("steps") is None else int(entry["steps"]),
        budget_s=None if entry.get("budget_s") is None else float(entry["budget_s"]),
        source=str(entry.get("source", "")),
    )
