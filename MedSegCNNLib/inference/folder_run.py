"""The cases of a folder prediction segmented one after the other, and what became of each.

:func:`check_inputs` reads every input as :func:`segment_jobs` will and refuses the first bad one before anything is
written (the pre-flight check of :class:`~MedSegCNNLib.inference.options.FolderOptions`). :func:`segment_jobs`
segments the cases and writes their outputs through the verified writes; a case that fails with a
:class:`~MedSegCNNLib.errors.MedSegCNNError` (an unreadable input, a failed write) is recorded in its
:class:`CaseResult` and the others go on. Any other exception (a bug, an interruption) ends the run.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from ..checkpoint.model_card import read_model_card
from ..errors import InputError, MedSegCNNError
from ..image.core import Image, LabelInfo
from ..image.io import is_raster_path, read_image
from ..image.raster import luminance
from ..registry import resolve_model_folder
from .folder_plan import Job
from .model import SegmentationModel
from .options import FolderOptions, PredictOptions
from .segment import load_checked_input, segment

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]
CaseStatus = Literal["written", "skipped", "failed"]
"""What became of a case: its outputs ``written``, ``skipped`` (complete already) or ``failed`` (see its error)."""


@dataclass(frozen=True)
class CaseResult:
    """One case of a folder prediction: its name, input files (one per channel, or one with every channel), the
    output files it asks for (the label map first, then the extras of :meth:`PredictOptions.output_paths`), its
    reference label map, what became of it and, when it failed, the error message (the outputs of a failed case
    may be missing or partial)."""

    case: str
    sources: tuple[Path, ...]
    outputs: tuple[Path, ...]
    status: CaseStatus
    reference: Path | None = None
    error: str | None = None

    @property
    def label_map(self) -> Path:
        """The label map file of the case."""
        return self.outputs[0]


@dataclass(frozen=True)
class FolderResult:
    """What a folder prediction did: one :class:`CaseResult` per case, sorted by case name, and the model's labels
    (``model_labels``: value and name of each but the background, for reports). Under torchrun a rank other than 0
    holds only its own share of the cases."""

    cases: tuple[CaseResult, ...]
    model_labels: tuple[LabelInfo, ...] = ()

    @property
    def written(self) -> tuple[CaseResult, ...]:
        return tuple(case for case in self.cases if case.status == "written")

    @property
    def skipped(self) -> tuple[CaseResult, ...]:
        return tuple(case for case in self.cases if case.status == "skipped")

    @property
    def failed(self) -> tuple[CaseResult, ...]:
        return tuple(case for case in self.cases if case.status == "failed")


class CaseProgress(Protocol):
    """Where :func:`segment_jobs` reports: the window callback of each case, and each case written."""

    def for_case(self, index: int, case: str) -> Callable[[int, int], None]: ...

    def case_done(self, index: int, case: str, output: Path) -> None: ...


def case_result(job: Job, options: PredictOptions, status: CaseStatus, error: str | None = None) -> CaseResult:
    """The result of ``job`` with ``status`` (and ``error``)."""
    outputs = tuple(options.output_paths(job.output).values())
    return CaseResult(job.case, job.sources, outputs, status, job.reference, error)


def model_folders(model: PathLike | Sequence[PathLike] | SegmentationModel) -> tuple[Path, ...]:
    """The model folders of ``model``: folders or registry names (several: an ensemble) resolved, or those a loaded
    model was read from."""
    if isinstance(model, SegmentationModel):
        return model.sources
    return tuple(resolve_model_folder(path) for path in ([model] if isinstance(model, str | os.PathLike) else model))


def model_channels(model: Sequence[Path] | SegmentationModel) -> tuple[str, ...]:
    """The input channels the model expects, from its card when it is not loaded."""
    return tuple(model.channels) if isinstance(model, SegmentationModel) else read_model_card(model[0]).channels


def check_inputs(
    jobs: Sequence[Job], model: SegmentationModel, options: PredictOptions, folder_options: FolderOptions
) -> None:
    """Read the inputs of every one of ``jobs`` as :func:`segment_jobs` does and refuse (:class:`InputError`,
    naming the file) the first that cannot be read whole or does not fit ``model``, before anything is written."""
    for job in jobs:
        images = model_inputs(job, model.channels, folder_options)
        names = [str(source) for source in job.sources]
        load_checked_input(images, model, names, allow_partial_channels=options.allow_partial_channels)


def segment_jobs(
    jobs: Sequence[Job],
    model: SegmentationModel,
    options: PredictOptions,
    folder_options: FolderOptions,
    progress: CaseProgress | None = None,
) -> list[CaseResult]:
    """Segment ``jobs`` in order and write every output each asks for; returns the result of each. A case that
    fails with a :class:`MedSegCNNError` is recorded as failed and the next one goes on (with more than one case,
    the failure is also logged as a warning when it happens)."""
    results = []
    for index, job in enumerate(jobs):
        try:
            _segment_job(
                job, model, options, folder_options, None if progress is None else progress.for_case(index, job.case)
            )
        except MedSegCNNError as error:
            if len(jobs) > 1:
                logger.warning("Case %s failed, the others go on: %s", job.case, error)
            results.append(case_result(job, options, "failed", str(error)))
            continue
        results.append(case_result(job, options, "written"))
        if progress is not None:
            progress.case_done(index, job.case, job.output)
    return results


def _segment_job(
    job: Job,
    model: SegmentationModel,
    options: PredictOptions,
    folder_options: FolderOptions,
    report: Callable[[int, int], None] | None,
) -> None:
    """Segment ``job`` and write its outputs (``report``: the window callback)."""
    from ..image.io import write_image
    from ..metrics.evaluate import read_label_map
    from ..visualization.overlay import save_overlay

    images = model_inputs(job, model.channels, folder_options)
    result = segment(images, model, options, progress=report, input_name=[str(source) for source in job.sources])
    outputs = options.output_paths(job.output)
    write_image(result.labels, outputs["labels"], overwrite=job.replace)
    if options.probabilities:
        write_image(result.probabilities, outputs["probabilities"], overwrite=job.replace)
    if options.uncertainty:
        write_image(result.uncertainty, outputs["uncertainty"], overwrite=job.replace)
    if options.overlay:
        reference = None if job.reference is None else read_label_map(job.reference)
        save_overlay(
            outputs["overlay"], images[0], result.labels, reference=reference, overwrite=job.replace, title=job.case
        )


def model_inputs(job: Job, channels: Sequence[str], folder_options: FolderOptions) -> list[Image]:
    """The images of ``job`` read (pages as ``folder_options.pages`` says) as the model's input channels: refused
    unless they have as many channels as the model (``channels``); with ``folder_options.grayscale``, a colour
    picture for a one-channel model becomes its luminance."""
    images = [read_image(source, pages=folder_options.pages) for source in job.sources]
    what = f"{job.sources[0]}" if len(job.sources) == 1 else f"The {len(job.sources)} files of case {job.case}"
    count = sum(image.num_channels for image in images)
    if folder_options.grayscale:
        if len(channels) != 1:
            raise InputError(
                f"--grayscale makes one channel of a colour picture, but the model expects {len(channels)} channels "
                f"({', '.join(channels)}); leave out --grayscale."
            )
        images = [luminance(image) if image.num_channels == 3 else image for image in images]
        count = sum(image.num_channels for image in images)
    if len(channels) == 1 and len(images) == 1 and count == 3 and is_raster_path(job.sources[0]):
        raise InputError(
            f"{what} is a colour (RGB) picture, but the model expects 1 input channel ({channels[0]}); pass "
            "--grayscale to give it the luminance 0.299 R + 0.587 G + 0.114 B, or use a model trained on colour."
        )
    if count != len(channels):
        raise InputError(
            f"The model expects {len(channels)} input channel(s) ({', '.join(channels)}); {what} has {count}. Give "
            "one image per channel in that order: several --input files, or a folder of <case>_0000, <case>_0001, "
            "... files."
        )
    return images
