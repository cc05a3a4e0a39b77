"""The annotation loop's driver: :class:`AnnotationProject` creates or opens a project folder, gives the next case
with the newest model's prediction, stores what the user accepted (and how much they had to correct), and starts
learning in the background.

The project folder::

    PROJECT/
      project.json          cases, their states, accepted revisions, the rounds' effort (:mod:`.project_file`)
      versions.json         the model versions (:mod:`.versions`)
      labels/               accepted segmentations: <case>.r001.nii.gz, <case>.r002.nii.gz, ... (never replaced)
      predictions/          the predictions shown: <case>.v0003.nii.gz (PNG for 2D picture cases)
      models/v0000 ...      model versions (ordinary model folders); models/latest names the newest
      learning/             the learner's state, log and working folder (:mod:`.learner`)
      .project.lock         held by the one driver (a Slicer window, a script, a command) while it runs

One driver at a time: opening a project takes its lock, and a second driver is refused with a message naming the
holder; the background learner is not a driver. Every file is written with the verified atomic writes, and
``project.json`` is replaced last, so an operation killed at any moment leaves the project as it was before or
after it, never between: an accepted segmentation is stored whole or not at all.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import make_folder
from ..data.dataset import MASK_SUFFIXES, CaseSource, case_information, label_grid_problem, read_label
from ..data.msd import find_dataset_json, read_label_names
from ..data.nnunet.plan import NnUNetPlan
from ..errors import InputError
from ..folder_lock import FolderLock
from ..image import Image
from ..image.cases import group_channel_files, list_cases, listing
from ..image.geometry import Grid
from ..image.io import COLOR_CHANNEL_NAMES, is_raster_path, write_image
from ..image.labels import as_label_array, label_dtype
from ..metrics.overlap import confusion_counts, overlap_scores
from ..registry import resolve_model
from . import learner
from .project_file import (
    PROJECT_FILE,
    CaseRecord,
    CaseState,
    Prediction,
    ProjectFile,
    RoundRecord,
    absolute_path,
    read_project_file,
    relative_path,
    write_project_file,
)
from .versions import LATEST, MODELS_FOLDER, new_version, publish_version, read_versions

logger = logging.getLogger(__name__)

PROJECT_LOCK = ".project.lock"
LABELS_FOLDER = "labels"
PREDICTIONS_FOLDER = "predictions"
STRATEGIES = ("random", "entropy")
ENTROPY_CANDIDATES = 4
"""``entropy`` scores this many candidates (the next ones in the project's random order) with the newest model and
picks the most uncertain: uncertainty sampling on a bounded pool, so that the next case stays quick to give."""
UNCERTAIN_NATS = 0.05
"""Voxels at least this uncertain (entropy of the predicted probabilities, nats) count in a case's score."""


@dataclass(frozen=True)
class NextCase:
    """The case to correct next: its images, the newest model's prediction (None before the first model) and the
    version that made it, the seconds that prediction took (0 when it was made before), and the case's
    uncertainty score when the strategy ranked by it."""

    case: str
    images: tuple[Path, ...]
    prediction: Path | None
    model_version: int | None
    seconds: float
    strategy: str
    uncertainty: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "case": self.case,
            "images": [str(path) for path in self.images],
            "prediction": None if self.prediction is None else str(self.prediction),
            "model_version": self.model_version,
            "seconds": round(self.seconds, 3),
            "strategy": self.strategy,
            "uncertainty": self.uncertainty,
        }


@dataclass(frozen=True)
class AcceptResult:
    """What an accept stored (the revision file), how the prediction scored against it, and the learning."""

    case: str
    revision: int
    file: Path
    round: RoundRecord
    empty: bool
    learning: str
    version: int | None = None

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return {
            "case": self.case,
            "revision": self.revision,
            "file": str(self.file),
            "round": asdict(self.round),
            "empty": self.empty,
            "learning": self.learning,
            "version": self.version,
        }


@dataclass(frozen=True)
class ProjectStatus:
    """Cases by state, the versions with their running quality, the rounds, the learning, missing files."""

    folder: Path
    cases: dict[str, list[str]]
    versions: list[dict[str, Any]]
    rounds: list[dict[str, Any]]
    learning: dict[str, Any]
    missing_images: dict[str, list[str]]
    latest_model: Path | None
    failures: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "project": str(self.folder),
            "cases": {state: len(ids) for state, ids in self.cases.items()},
            "case_states": self.cases,
            "versions": self.versions,
            "rounds": self.rounds,
            "learning": self.learning,
            "failures": self.failures,
            "missing_images": self.missing_images,
            "latest_model": None if self.latest_model is None else str(self.latest_model),
        }


class AnnotationProject:
    """One open annotation project (module docstring), holding its driver lock until :meth:`close`.

    Example:
        >>> with AnnotationProject.create("hippo-project", "images/", labels="labels/") as project:  # doctest: +SKIP
        ...     case = project.next_case()
        ...     project.accept(case.case, "corrected.nii.gz")
    """

    def __init__(self, folder: Path, lock: FolderLock, predict_options: Any = None) -> None:
        self.folder = folder
        self._lock: FolderLock | None = lock
        self._predict_options = predict_options
        self._model: tuple[int, Any] | None = None  # (version, loaded SegmentationModel)

    # ----- opening ---------------------------------------------------------------------------------------

    @classmethod
    def open(
        cls, folder: str | os.PathLike[str], *, holder: str = "a Python script", predict_options: Any = None
    ) -> AnnotationProject:
        """Open the project in ``folder`` as its one driver (``holder`` describes this one in the message that
        refuses a second). ``predict_options``: a :class:`~MedSegCNNLib.inference.options.PredictOptions` for the
        predictions (default: torch, fp32: every version has new weights, so a per-weights conversion or accuracy
        gate would cost more than it saves on one case)."""
        path = Path(folder)
        read_project_file(path)  # refuses a folder that is no project, or a corrupt file, before locking anything
        return cls(path, _lock(path, holder), predict_options)

    @classmethod
    def create(
        cls,
        folder: str | os.PathLike[str],
        images: str | os.PathLike[str],
        *,
        labels: str | os.PathLike[str] | None = None,
        model: str | os.PathLike[str] | None = None,
        dims: int | None = None,
        label_names: Mapping[int, str] | None = None,
        learn_budget_s: float = 60.0,
        learning: bool = True,
        seed: int = 0,
        holder: str = "a Python script",
        predict_options: Any = None,
    ) -> AnnotationProject:
        """Create a project in the new (or empty) folder ``folder`` from the image folder ``images`` and open it.

        ``labels``: a folder of label maps for some of the cases, matched by case name (``case.nii.gz``, or the
        case name with one of the mask suffixes such as ``_seg``); they become accepted cases. ``model``: a registry
        name or model folder (an imported nnU-Net model predicts but is not fine-tuned: learning is off) that becomes
        version 0. The label names come from the model, else ``label_names``, else the ``dataset.json`` beside the
        labels, else the values found in them. With enough accepted cases (:data:`.learner.MIN_CASES_TO_LEARN`
        without a model, one with), learning starts at once."""
        target = Path(folder)
        if target.exists() and (not target.is_dir() or any(target.iterdir())):
            raise InputError(f"{target} already exists and is not empty; give a new folder for the project.")
        if not math.isfinite(learn_budget_s) or learn_budget_s <= 0:
            raise InputError(f"The learning budget must be a positive number of seconds, got {learn_budget_s}.")
        cases = _image_cases(Path(images))
        card, model_folder = None, None
        if model is not None:
            from ..checkpoint import read_model_card

            model_folder = resolve_model(model)
            card = read_model_card(model_folder, require_weights=True)
        channels, grid_dims = _channels_and_dims(cases, card)
        project_dims = dims or (card.spatial_dims if card is not None else grid_dims)
        if project_dims not in (2, 3):
            raise InputError(f"dims must be 2 or 3, got {dims}.")
        if card is not None and card.spatial_dims != project_dims:
            raise InputError(f"The model is {card.spatial_dims}D but dims {project_dims} was asked for.")
        given = _label_files(Path(labels), cases) if labels is not None else {}
        names = _label_names(card, label_names, Path(labels) if labels is not None else None, given, cases)
        nnunet = card is not None and isinstance(card.preprocessing, NnUNetPlan)
        if nnunet and learning:
            logger.warning(
                "The model is an imported nnU-Net model: it predicts, but MedSegCNN does not fine-tune "
                "it, so this project stores accepted cases without learning."
            )
        created = not target.exists()
        make_folder(target, for_file=target / PROJECT_FILE)
        try:
            lock = _lock(target, holder)
        except BaseException:
            if created:
                target.rmdir()
            raise
        project = cls(target, lock, predict_options)
        try:
            records = [
                CaseRecord(case, tuple(relative_path(path, target) for path in paths)) for case, paths in cases.items()
            ]
            state = ProjectFile(
                project_dims,
                channels,
                dict(names),
                tuple(records),
                learning=learning and not nnunet,
                learn_budget_s=float(learn_budget_s),
                seed=seed,
            )
            for case, label_file in given.items():
                record = state.case(case)
                stored = project._store_revision(state, record, read_label(CaseSource(case, cases[case], label_file)))
                state = state.with_case(replace(record, state=CaseState.ACCEPTED, revisions=(stored[0],)))
            if model_folder is not None:
                publish_version(target, model_folder, new_version(0, source=f"initial model {model}"))
            write_project_file(target, state, new=True)
        except BaseException:
            project.close()
            _remove_partial_project(target, created)
            raise
        project._learn_if_due()
        return project

    def close(self) -> None:
        """Release the driver lock (the learner, if any, goes on)."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None
        self._model = None

    def __enter__(self) -> AnnotationProject:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ----- the loop ---------------------------------------------------------------------------------------

    @property
    def project_file(self) -> ProjectFile:
        return read_project_file(self.folder)

    @property
    def latest_model(self) -> Path | None:
        """The newest model version's folder (``models/latest`` names it too), or None before the first."""
        newest = read_versions(self.folder).newest
        return None if newest is None else self.folder / newest.folder

    def next_case(self, strategy: str = "random", case: str | None = None) -> NextCase:
        """The next case to correct, segmented with the newest version (the learner waits meanwhile): ``case``, or
        the first of the project's random order among those neither accepted nor skipped (``random``), or the
        most uncertain of the next :data:`ENTROPY_CANDIDATES` in that order (``entropy``)."""
        self._require_open()
        if strategy not in STRATEGIES:
            raise InputError(f"Unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}.")
        state = self.project_file
        newest = read_versions(self.folder).newest
        if case is not None:
            record = state.case(case)
            missing = self._missing(record)
            if missing:
                raise InputError(
                    f"The images of case {case} moved or vanished: {', '.join(missing)}; put them back "
                    "or pick another case."
                )
            candidates = [record]
        else:
            candidates = [record for record in _random_order(state) if not self._missing(record)]
            if not candidates:
                raise InputError(
                    "Every case of this project is accepted or skipped (or its images are missing); "
                    "pick a case with --case to look at one again."
                )
        uncertainty = None
        if newest is None:
            chosen, prediction, seconds = candidates[0], None, 0.0
        elif strategy == "entropy" and case is None and len(candidates) > 1:
            chosen, prediction, seconds, uncertainty = self._most_uncertain(
                state, candidates[:ENTROPY_CANDIDATES], newest.version
            )
        else:
            chosen = candidates[0]
            prediction, seconds = self._prediction(state, chosen, newest.version)
        if prediction is not None:
            shown = Prediction(newest.version, relative_path(prediction, self.folder), round(seconds, 3), time.time())
            new_state = CaseState.PREDICTED if chosen.state is CaseState.UNLABELLED else chosen.state
            write_project_file(self.folder, state.with_case(replace(chosen, state=new_state, prediction=shown)))
        return NextCase(
            case=chosen.id,
            images=tuple(absolute_path(path, self.folder) for path in chosen.images),
            prediction=prediction,
            model_version=None if newest is None else newest.version,
            seconds=seconds,
            strategy=strategy,
            uncertainty=uncertainty,
        )

    def accept(
        self,
        case: str,
        labelmap: str | os.PathLike[str] | Image,
        *,
        learn_budget_s: float | None = None,
        wait: bool = False,
        timeout_s: float | None = None,
    ) -> AcceptResult:
        """Store ``labelmap`` (a file or an :class:`Image` on the case's grid, with the project's labels) as the
        accepted segmentation of ``case`` (a new revision: earlier ones are kept), log how it differs from the
        prediction shown, and start learning (or let the running learner take it in its next round).
        ``learn_budget_s`` sets the seconds of learning per round from now on. ``wait``: return once the version
        that learned this revision exists (at most ``timeout_s``); a failed round raises :class:`InputError`."""
        self._require_open()
        if learn_budget_s is not None and (not math.isfinite(learn_budget_s) or learn_budget_s <= 0):
            raise InputError(f"The learning budget must be a positive number of seconds, got {learn_budget_s}.")
        state = self.project_file
        record = state.case(case)
        source = labelmap if isinstance(labelmap, Image) else Path(labelmap)
        if isinstance(source, Path) and not source.is_file():
            raise InputError(f"The segmentation {source} does not exist; check the path.")
        label = read_label(CaseSource(case, tuple(absolute_path(path, self.folder) for path in record.images), source))
        relative, array = self._store_revision(state, record, label)
        revision = len(record.revisions) + 1
        effort = self._effort(state, record, array)
        round_record = RoundRecord(
            round=len(state.rounds) + 1,
            case=case,
            revision=revision,
            accepted=time.time(),
            voxels_to_paint=int(np.count_nonzero(array)),
            **effort,
        )
        updated = replace(
            state.with_case(replace(record, state=CaseState.ACCEPTED, revisions=(*record.revisions, relative))),
            rounds=(*state.rounds, round_record),
            learn_budget_s=state.learn_budget_s if learn_budget_s is None else float(learn_budget_s),
        )
        try:
            write_project_file(self.folder, updated)
        except BaseException:
            with contextlib.suppress(OSError):
                absolute_path(relative, self.folder).unlink()
            raise
        empty = not array.any()
        if empty:
            logger.warning("Case %s was accepted with an empty segmentation (no label in any voxel).", case)
        learning = self._learn_if_due()
        version = self.wait_for(case, revision, timeout_s) if wait and learning != "off" else None
        return AcceptResult(
            case, revision, absolute_path(relative, self.folder), round_record, empty, learning, version
        )

    def skip(self, case: str) -> None:
        """Mark ``case`` skipped: the strategies pass it over (``next_case(case=...)`` still gives it)."""
        self._require_open()
        state = self.project_file
        record = state.case(case)
        if record.state is CaseState.ACCEPTED:
            raise InputError(f"Case {case} is accepted; its segmentation stays. Nothing was changed.")
        write_project_file(self.folder, state.with_case(replace(record, state=CaseState.SKIPPED)))

    def wait_for(self, case: str, revision: int, timeout_s: float | None = None) -> int:
        """Block until a version has learned ``revision`` of ``case``; returns its number. Raises InputError when
        the learning fails or stops first, or after ``timeout_s`` seconds."""
        started = time.monotonic()
        while True:
            for version in read_versions(self.folder).versions:
                if version.cases.get(case, 0) >= revision:
                    return version.version
            learning = learner.read_learning_state(self.folder)
            if not learner.learner_running(self.folder) and learning.state in ("failed", "stopped"):
                raise InputError(learning.message or "Learning stopped before it learned this case.")
            if not learner.learner_running(self.folder) and not learner.pending_cases(self.project_file, self.folder):
                raise InputError(f"No learning is due for case {case} (learning is off, or too few cases).")
            if timeout_s is not None and time.monotonic() - started > timeout_s:
                raise InputError(f"No version has learned case {case} after {timeout_s:.0f} s; see `status`.")
            time.sleep(0.2)

    def status(self) -> ProjectStatus:
        """Cases by state, the versions with the running Dice of their predictions, the learning, missing images."""
        state = self.project_file
        versions = read_versions(self.folder)
        by_state: dict[str, list[str]] = {item.value: [] for item in CaseState}
        missing = {}
        for record in state.cases:
            by_state[record.state.value].append(record.id)
            lost = self._missing(record)
            if lost:
                missing[record.id] = lost
        quality: dict[int, list[float]] = {}
        for entry in state.rounds:
            if entry.model_version is not None and entry.mean_dice is not None:
                quality.setdefault(entry.model_version, []).append(entry.mean_dice)
        listed = []
        for version in versions.versions:
            scores = quality.get(version.version, [])
            listed.append(
                {
                    "version": version.version,
                    "folder": str(self.folder / version.folder),
                    "cases": len(version.cases),
                    "created": version.created,
                    "learn_seconds": version.learn_seconds,
                    "steps": version.steps,
                    "source": version.source,
                    "predictions_scored": len(scores),
                    "running_dice": None if not scores else round(float(np.mean(scores)), 4),
                }
            )
        learning = learner.read_learning_state(self.folder)
        from dataclasses import asdict

        return ProjectStatus(
            folder=self.folder,
            cases=by_state,
            versions=listed,
            rounds=[asdict(entry) for entry in state.rounds],
            learning={
                **learning.to_dict(),
                "enabled": state.learning,
                "budget_per_round_s": state.learn_budget_s,
                "pending_cases": len(learner.pending_cases(state, self.folder)),
            },
            missing_images=missing,
            latest_model=self.latest_model,
            failures=[asdict(failure) for failure in versions.failures],
        )

    # ----- inside ------------------------------------------------------------------------------------------

    def _require_open(self) -> None:
        if self._lock is None:
            raise InputError(f"The project {self.folder} is closed; open it again.")
        learner.resume_learner(self.folder)

    def _missing(self, record: CaseRecord) -> list[str]:
        return [
            str(absolute_path(path, self.folder))
            for path in record.images
            if not absolute_path(path, self.folder).exists()
        ]

    def _learn_if_due(self) -> str:
        """Start a learner when a round is due: "started", "running" (the running learner takes the new cases in
        its next round), "waiting" (too few accepted cases yet) or "off". The project file already names the new
        case, so a learner that ends its last round just now looks once more and sees it."""
        state = self.project_file
        if not state.learning:
            return "off"
        if not learner.pending_cases(state, self.folder):
            return "running" if learner.learner_running(self.folder) else "waiting"
        return "started" if learner.start_learner(self.folder) else "running"

    def _store_revision(self, state: ProjectFile, record: CaseRecord, label: Image) -> tuple[str, np.ndarray]:
        """Check ``label`` against the case (grid, label values) and write it as the case's next revision; returns
        its project-relative path and its voxels."""
        images = [absolute_path(path, self.folder) for path in record.images]
        missing = [str(path) for path in images if not path.exists()]
        if missing:
            raise InputError(
                f"The images of case {record.id} moved or vanished ({', '.join(missing)}); put them back first."
            )
        _, grid = case_information(CaseSource(record.id, tuple(images)))
        problem = label_grid_problem(grid, Grid.of(label))
        if problem is not None:
            raise InputError(
                f"The segmentation of case {record.id} is on another grid than its image: {problem}. "
                "Segment on the case's own image (resample it onto the image first)."
            )
        array = as_label_array(label, allow_whole_floats=True, what=f"The segmentation of case {record.id}")
        values = sorted(int(value) for value in np.unique(array))
        unknown = [value for value in values if value not in state.labels]
        if unknown:
            known = ", ".join(f"{value} {name}" for value, name in sorted(state.labels.items()))
            raise InputError(
                f"The segmentation of case {record.id} holds label value(s) {unknown[:10]} that this "
                f"project does not have (its labels: {known}); relabel them. Nothing was stored."
            )
        compact = array.astype(label_dtype(max(state.labels)), copy=False)
        stored = Image(compact, grid.spacing, grid.origin, np.asarray(grid.direction).reshape(grid.dims, grid.dims))
        folder = self.folder / LABELS_FOLDER
        number = len(record.revisions) + 1
        target = folder / f"{record.id}.r{number:03d}.nii.gz"
        while target.exists():  # a killed accept's file, never listed: keep it, write the next name
            number += 1
            target = folder / f"{record.id}.r{number:03d}.nii.gz"
        make_folder(folder, for_file=target)
        write_image(stored, target)
        return relative_path(target, self.folder), compact

    def _effort(self, state: ProjectFile, record: CaseRecord, accepted: np.ndarray) -> dict[str, Any]:
        """The shown prediction against the accepted voxels: Dice per label, voxels changed, seconds spent."""
        shown = record.prediction
        if shown is None:
            return {}
        try:
            from ..image.io import read_image

            predicted = as_label_array(read_image(absolute_path(shown.file, self.folder)), allow_whole_floats=True)
        except InputError as error:
            logger.warning(
                "The prediction shown for case %s cannot be read (%s); its effort is not logged.", record.id, error
            )
            return {}
        if predicted.shape != accepted.shape:
            return {}
        foreground = [value for value in sorted(state.labels) if value != 0]
        scores = overlap_scores(confusion_counts(predicted, accepted, foreground)).dice
        dice = {state.labels[value]: round(float(score), 4) for value, score in zip(foreground, scores, strict=True)}
        return {
            "model_version": shown.version,
            "dice": dice,
            "mean_dice": round(float(np.mean(scores)), 4),
            "voxels_changed": int(np.count_nonzero(predicted != accepted)),
            "predict_seconds": shown.seconds,
            "user_seconds": round(time.time() - shown.shown, 2),
        }

    def _loaded_model(self, version: int) -> Any:
        if self._model is None or self._model[0] != version:
            from ..inference.model import load_segmentation_model
            from ..runtime import resolve_device

            folder = self.folder / read_versions(self.folder).get(version).folder
            self._model = (version, load_segmentation_model(folder, resolve_device(self._options().device_choice)))
        return self._model[1]

    def _options(self, *, uncertainty: bool = False) -> Any:
        from ..inference.options import PredictOptions

        options = self._predict_options or PredictOptions(backend="torch", precision="fp32")
        return replace(options, uncertainty=uncertainty)

    def _prediction(self, state: ProjectFile, record: CaseRecord, version: int) -> tuple[Path, float]:
        """The prediction of ``version`` for ``record``: the one shown before, or a new one (learning paused)."""
        shown = record.prediction
        if shown is not None and shown.version == version and absolute_path(shown.file, self.folder).is_file():
            return absolute_path(shown.file, self.folder), 0.0
        labels, _, seconds = self._predict(record, version, uncertainty=False)
        return self._write_prediction(record, version, labels), seconds

    def _predict(self, record: CaseRecord, version: int, *, uncertainty: bool) -> tuple[Image, Image | None, float]:
        from ..inference.segment import segment

        images = [absolute_path(path, self.folder) for path in record.images]
        with learner.paused_learning(self.folder):
            started = time.perf_counter()
            result = segment(images, self._loaded_model(version), self._options(uncertainty=uncertainty))
            seconds = time.perf_counter() - started
        return result.labels, result.uncertainty, seconds

    def _write_prediction(self, record: CaseRecord, version: int, labels: Image) -> Path:
        picture = labels.spatial_dims == 2 and is_raster_path(absolute_path(record.images[0], self.folder))
        target = self.folder / PREDICTIONS_FOLDER / f"{record.id}.v{version:04d}{'.png' if picture else '.nii.gz'}"
        make_folder(target.parent, for_file=target)
        return write_image(labels, target, overwrite=True)  # derived data of the project's own, remade at will

    def _most_uncertain(
        self, state: ProjectFile, candidates: Sequence[CaseRecord], version: int
    ) -> tuple[CaseRecord, Path, float, float]:
        """Score ``candidates`` by uncertainty (the mean entropy, in nats, over the predicted foreground and every
        voxel at least :data:`UNCERTAIN_NATS` uncertain) and return the most uncertain with its prediction."""
        best: tuple[float, CaseRecord, Image] | None = None
        total = 0.0
        for record in candidates:
            labels, entropy, seconds = self._predict(record, version, uncertainty=True)
            total += seconds
            values = np.asarray(entropy.array, dtype=np.float64)
            region = (np.asarray(labels.array) != 0) | (values >= UNCERTAIN_NATS)
            score = float(values[region].mean()) if region.any() else 0.0
            if best is None or score > best[0]:
                best = (score, record, labels)
        if best is None:
            raise InputError("No case to choose from.")
        score, record, labels = best
        return record, self._write_prediction(record, version, labels), total, round(score, 5)


def _lock(folder: Path, holder: str) -> FolderLock:
    return FolderLock.acquire(
        folder / PROJECT_LOCK,
        holder=holder,
        in_use=f"The annotation project {folder} is in use by {{holder}}; close it there (or "
        "wait for that command to end) and try again.",
    )


def _random_order(state: ProjectFile) -> list[CaseRecord]:
    """The cases neither accepted nor skipped, in the project's fixed random order (its seed)."""
    order = np.random.default_rng(state.seed).permutation(len(state.cases))
    return [state.cases[i] for i in order if state.cases[i].state in (CaseState.UNLABELLED, CaseState.PREDICTED)]


def _image_cases(folder: Path) -> dict[str, tuple[Path, ...]]:
    """Case → its image files (nnU-Net channel files ``<case>_0000``, ``_0001``... grouped, else one per file)."""
    files = list_cases(folder)
    grouped = group_channel_files(files)
    if grouped is not None:
        return grouped
    return {case: (path,) for case, path in files.items()}


def _channels_and_dims(cases: Mapping[str, tuple[Path, ...]], card: Any) -> tuple[tuple[str, ...], int]:
    """The channel names (the model's, else the first case's) and the cases' spatial dimensions; every case must
    have the same number of channels."""
    counts = {}
    dims = set()
    for case, paths in cases.items():
        count, grid = case_information(CaseSource(case, paths))
        counts[case] = count
        dims.add(grid.dims)
    if len(set(counts.values())) > 1:
        by_count = {}
        for case, count in counts.items():
            by_count.setdefault(count, case)
        examples = ", ".join(f"{case}: {count}" for count, case in by_count.items())
        raise InputError(f"The cases have different numbers of channels ({examples}); give one kind per project.")
    if len(dims) > 1:
        raise InputError("The image folder mixes 2D and 3D images; give one kind per project.")
    count = next(iter(counts.values()))
    if card is not None:
        if len(card.channels) != count:
            raise InputError(
                f"The model takes {len(card.channels)} channel(s) ({', '.join(card.channels)}) but the "
                f"cases have {count}; give images that fit the model."
            )
        return tuple(card.channels), dims.pop()
    first = next(iter(cases.values()))
    if count == 3 and len(first) == 1 and is_raster_path(first[0]):
        return tuple(COLOR_CHANNEL_NAMES), dims.pop()
    return tuple(f"channel_{i}" for i in range(count)), dims.pop()


def _label_files(folder: Path, cases: Mapping[str, tuple[Path, ...]]) -> dict[str, Path]:
    """The label file of each case that has one in ``folder`` (``case``, or ``case`` + one mask suffix)."""
    files = list_cases(folder)
    matched: dict[str, Path] = {}
    unmatched = []
    for name, path in files.items():
        stems = [name[: -len(suffix)] for suffix in MASK_SUFFIXES if name.endswith(suffix)]
        case = name if name in cases else next((stem for stem in stems if stem in cases), None)
        if case is None:
            unmatched.append(path.name)
        else:
            matched[case] = path
    if unmatched:
        raise InputError(
            f"Label file(s) {listing(unmatched)} in {folder} match no image's case name; rename them "
            "after their images or remove them."
        )
    return matched


def _label_names(
    card: Any,
    given: Mapping[int, str] | None,
    labels: Path | None,
    files: Mapping[str, Path],
    cases: Mapping[str, tuple[Path, ...]],
) -> dict[int, str]:
    if card is not None:
        return {label.value: label.name for label in card.labels}
    if given:
        names = {0: "background", **{int(value): str(name) for value, name in given.items()}}
    elif labels is not None and find_dataset_json(labels) is not None:
        names = read_label_names(find_dataset_json(labels))
    elif files:
        values: set[int] = set()
        for case, path in files.items():
            label = read_label(CaseSource(case, cases[case], path))
            values.update(int(value) for value in np.unique(as_label_array(label, allow_whole_floats=True)))
        names = {0: "background", **{value: f"label_{value}" for value in sorted(values) if value != 0}}
    else:
        raise InputError(
            "Name the labels to segment: give --label-names (e.g. liver,tumour), labelled cases, or a model."
        )
    if sorted(names) != list(range(len(names))) or len(names) < 2:
        raise InputError(
            f"The labels must be 0 (background), 1, 2, ... with at least one foreground label; got {sorted(names)}."
        )
    return names


def _remove_partial_project(folder: Path, created: bool) -> None:
    """Undo a failed create: the folder was new or empty, so everything in it is the create's."""
    for entry in list(folder.iterdir()) if folder.is_dir() else []:
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                entry.unlink()
    if created:
        with contextlib.suppress(OSError):
            folder.rmdir()


def latest_link(folder: Path) -> Path:
    """``PROJECT/models/latest``."""
    return folder / MODELS_FOLDER / LATEST
