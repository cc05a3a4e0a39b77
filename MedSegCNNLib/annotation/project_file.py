"""The project file ``PROJECT/project.json``: what an annotation project holds, in a documented, versioned format.

Format ``medsegcnn-annotation-project``, version :data:`FORMAT_VERSION` (1)::

    {
      "format": "medsegcnn-annotation-project", "format_version": 1, "created": "2026-12-07T15:00:00",
      "dims": 3,                                    # 2 or 3: the cases' (and models') spatial dimensions
      "channels": ["t1"],                           # the input channels, in order (one image file each, or
                                                    # one multi-component file such as an RGB picture)
      "labels": {"0": "background", "1": "anterior", "2": "posterior"},
      "learning": true,                             # false: accepted cases are stored, no model is trained
      "learn_budget_s": 60.0,                       # seconds of learning per round (the newest accept's)
      "seed": 0,                                    # the random order of the cases
      "cases": [
        {"id": "hippocampus_001",
         "images": ["../images/hippocampus_001.nii.gz"],   # relative to the project folder
         "state": "accepted",                       # unlabelled | predicted | accepted | skipped
         "revisions": ["labels/hippocampus_001.r001.nii.gz"],   # accepted segmentations, oldest first
         "prediction": {"version": 3, "file": "predictions/hippocampus_001.v0003.nii.gz",
                        "seconds": 0.8, "shown": 1765119600.0}}   # the newest prediction shown (or null)
      ],
      "rounds": [                                   # one per accept, in order: the user's effort
        {"round": 1, "case": "hippocampus_001", "revision": 1, "accepted": 1765119660.0,
         "model_version": 3,                        # the version whose prediction was corrected (null: none)
         "dice": {"anterior": 0.91, "posterior": 0.88},   # that prediction against the accepted segmentation
         "mean_dice": 0.895, "voxels_changed": 112, "voxels_to_paint": 1543,   # changed vs painted from scratch
         "predict_seconds": 0.8, "user_seconds": 60.0}   # prediction time; shown → accepted
      ]
    }

Paths are relative to the project folder (``/`` separators), so a project folder can be moved (with its images,
when they lie outside it at the same relative place). The driver of the project (:mod:`.project`) is the only
writer of this file; it is replaced atomically (written, read back, flushed, renamed). A file that is not valid
JSON or breaks the format is refused with its path, never reset.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any

from ..atomic import write_text_atomic
from ..errors import InputError

PROJECT_FILE = "project.json"
FORMAT = "medsegcnn-annotation-project"
FORMAT_VERSION = 1


class CaseState(enum.StrEnum):
    """Where a case stands: never shown with a prediction, shown with one, accepted by the user, or skipped."""

    UNLABELLED = "unlabelled"
    PREDICTED = "predicted"
    ACCEPTED = "accepted"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class Prediction:
    """The newest prediction shown for a case: the model ``version`` that made it, its ``file`` (relative to the
    project), the seconds it took and when it was shown (seconds since the epoch)."""

    version: int
    file: str
    seconds: float
    shown: float


@dataclass(frozen=True)
class CaseRecord:
    """One case: its image files (relative paths, one per channel), its state, the accepted segmentations (relative
    paths, oldest first; the last one counts) and the newest prediction shown."""

    id: str
    images: tuple[str, ...]
    state: CaseState = CaseState.UNLABELLED
    revisions: tuple[str, ...] = ()
    prediction: Prediction | None = None


@dataclass(frozen=True)
class RoundRecord:
    """One accept (module docstring): the prediction the user corrected, scored against what was accepted."""

    round: int
    case: str
    revision: int
    accepted: float
    model_version: int | None = None
    dice: dict[str, float] | None = None
    mean_dice: float | None = None
    voxels_changed: int | None = None
    voxels_to_paint: int = 0
    predict_seconds: float | None = None
    user_seconds: float | None = None


@dataclass(frozen=True)
class ProjectFile:
    """The content of ``project.json`` (module docstring)."""

    dims: int
    channels: tuple[str, ...]
    labels: dict[int, str]
    cases: tuple[CaseRecord, ...]
    rounds: tuple[RoundRecord, ...] = ()
    learning: bool = True
    learn_budget_s: float = 60.0
    seed: int = 0
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S"))

    def case(self, case_id: str) -> CaseRecord:
        """The record of ``case_id``; :class:`InputError` listing a few known ids when there is none."""
        for record in self.cases:
            if record.id == case_id:
                return record
        known = ", ".join(record.id for record in self.cases[:5])
        raise InputError(f"This project has no case {case_id!r}; its cases include {known}.")

    def with_case(self, record: CaseRecord) -> ProjectFile:
        """A copy with ``record`` replacing the case of the same id."""
        return replace(self, cases=tuple(record if case.id == record.id else case for case in self.cases))

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "created": self.created,
            "dims": self.dims,
            "channels": list(self.channels),
            "labels": {str(value): name for value, name in sorted(self.labels.items())},
            "learning": self.learning,
            "learn_budget_s": self.learn_budget_s,
            "seed": self.seed,
            "cases": [_case_to_dict(case) for case in self.cases],
            "rounds": [dataclasses.asdict(record) for record in self.rounds],
        }


def read_project_file(folder: Path) -> ProjectFile:
    """Read and check ``folder/project.json``; anything missing, unreadable or malformed is refused with its path."""
    path = folder / PROJECT_FILE
    if not path.is_file():
        raise InputError(
            f"{folder} is not an annotation project ({PROJECT_FILE} is missing); create one with "
            "`medsegcnn project init`."
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(
            f"The project file {path} is corrupt ({error}); restore it from a backup. It was not changed."
        ) from None
    try:
        return _project_from_dict(data)
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        detail = str(error) if isinstance(error, ValueError) else f"{type(error).__name__}: {error}"
        raise InputError(
            f"The project file {path} is corrupt ({detail}); restore it from a backup. It was not changed."
        ) from None


def write_project_file(folder: Path, project: ProjectFile, *, new: bool = False) -> None:
    """Replace ``folder/project.json`` atomically (create it when ``new``; an existing one is then refused)."""
    write_text_atomic(
        folder / PROJECT_FILE, json.dumps(project.to_dict(), indent=1, allow_nan=False) + "\n", overwrite=not new
    )


def relative_path(path: Path, folder: Path) -> str:
    """``path`` relative to ``folder`` with ``/`` separators (``..`` where it lies outside)."""
    return PurePosixPath(Path(os.path.relpath(path.resolve(), folder.resolve())).as_posix()).as_posix()


def absolute_path(relative: str, folder: Path) -> Path:
    """The file a project-relative path names (``..`` folded away, symbolic links kept)."""
    return Path(os.path.normpath(folder / Path(*PurePosixPath(relative).parts)))


def _case_to_dict(case: CaseRecord) -> dict[str, Any]:
    prediction = case.prediction
    return {
        "id": case.id,
        "images": list(case.images),
        "state": case.state.value,
        "revisions": list(case.revisions),
        "prediction": None if prediction is None else dataclasses.asdict(prediction),
    }


def _project_from_dict(data: Any) -> ProjectFile:
    if not isinstance(data, Mapping) or data.get("format") != FORMAT:
        raise ValueError(f"its format is not {FORMAT!r}")
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        raise ValueError(
            f"format version {version!r}; this MedSegCNN reads version {FORMAT_VERSION} (a newer MedSegCNN wrote it?)"
        )
    dims = data["dims"]
    if dims not in (2, 3):
        raise ValueError(f"dims must be 2 or 3, got {dims!r}")
    labels = {int(value): str(name) for value, name in dict(data["labels"]).items()}
    if sorted(labels) != list(range(len(labels))) or len(labels) < 2:
        raise ValueError(f"labels must be 0, 1, ... with a foreground label, got {sorted(labels)}")
    channels = tuple(str(name) for name in data["channels"])
    budget = float(data["learn_budget_s"])
    if not channels or not math.isfinite(budget) or budget <= 0:
        raise ValueError("channels must not be empty and learn_budget_s must be positive")
    cases = tuple(_case_from_dict(entry) for entry in data["cases"])
    ids = [case.id for case in cases]
    if len(set(ids)) != len(ids):
        raise ValueError("a case id appears twice")
    return ProjectFile(
        dims=dims,
        channels=channels,
        labels=labels,
        cases=cases,
        rounds=tuple(_round_from_dict(entry) for entry in data["rounds"]),
        learning=bool(data["learning"]),
        learn_budget_s=budget,
        seed=int(data["seed"]),
        created=str(data["created"]),
    )


def _case_from_dict(entry: Mapping[str, Any]) -> CaseRecord:
    images = tuple(_relative(path) for path in entry["images"])
    if not images or not isinstance(entry["id"], str) or not entry["id"]:
        raise ValueError("a case needs an id and at least one image")
    prediction = entry.get("prediction")
    return CaseRecord(
        id=entry["id"],
        images=images,
        state=CaseState(entry["state"]),
        revisions=tuple(_relative(path, inside=True) for path in entry["revisions"]),
        prediction=None if prediction is None else _prediction_from_dict(prediction),
    )


def _round_from_dict(entry: Mapping[str, Any]) -> RoundRecord:
    known = {field.name for field in dataclasses.fields(RoundRecord)}
    unknown = set(entry) - known
    if unknown:
        raise ValueError(f"unknown round fields {sorted(unknown)}")
    record = RoundRecord(**entry)
    if not isinstance(record.case, str) or not isinstance(record.round, int) or not isinstance(record.revision, int):
        raise ValueError("a round needs a case name, a round number and a revision")
    return record


def _prediction_from_dict(entry: Mapping[str, Any]) -> Prediction:
    return Prediction(
        int(entry["version"]), _relative(entry["file"], inside=True), float(entry["seconds"]), float(entry["shown"])
    )


def _relative(path: Any, *, inside: bool = False) -> str:
    """A stored relative path, checked: relative, and inside the project where the project wrote it."""
    if not isinstance(path, str) or not path:
        raise ValueError(f"a path must be a non-empty string, got {path!r}")
    pure = PurePosixPath(path)
    if pure.is_absolute() or (inside and ".." in pure.parts):
        raise ValueError(f"path {path!r} must be relative{' and inside the project' if inside else ''}")
    return path
