"""A folder prediction under ``torchrun`` (``WORLD_SIZE`` > 1, on one machine or several): the processes share out
the cases.

Rank 0 lists them, skips the complete ones (the default there, so that rerunning the same command continues a run
that stopped; ``existing="overwrite"`` redoes everything instead), creates the output folder and sends this plan to
every rank as JSON; rank ``r`` of ``n`` segments cases ``r, r + n, r + 2n, ...`` of those to do, on its own device
(CUDA: the GPU of ``LOCAL_RANK``). The processes share nothing else, so the output folder must be on a file system
that every machine sees: rank 0 reports the progress of all of them by counting the complete cases there (at most
every :data:`COUNT_INTERVAL_S` seconds). At the end every rank tells the others whether it succeeded (a case that
failed counts), waiting at most :data:`RANK_TIMEOUT` for them; rank 0 refuses the run when another rank failed.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

from ..distributed import DistributedContext, broadcast_text
from ..errors import InputError
from ..progress import EventSink
from .folder_plan import Job, Plan, plan_outputs
from .folder_run import FolderResult, case_result, check_inputs, model_channels, model_folders, segment_jobs
from .model import SegmentationModel, load_segmentation_model
from .options import FolderOptions, PredictOptions
from .progress import PredictionProgress

logger = logging.getLogger(__name__)

COUNT_INTERVAL_S = 2.0
"""Least time (seconds) between two counts of the complete cases by rank 0 under torchrun."""
RANK_TIMEOUT = timedelta(minutes=30)
"""How long a process waits for the others at the end of a torchrun run. The cases are dealt out in turn, so the
ranks finish at most about one case apart; a process that crashed is noticed at once."""
WAIT_STEP_S = 0.1
"""How often rank 0 looks whether the others have finished while it waits for them."""


def predict_cohort(
    model: Sequence[Path] | SegmentationModel,
    inputs: Sequence[Path],
    output: str,
    options: PredictOptions,
    folder_options: FolderOptions,
    context: DistributedContext,
    *,
    reference: Path | None = None,
    progress: EventSink | None = None,
    allow_large_model: bool = False,
) -> FolderResult:
    """This process's part of a torchrun run (see the module docstring) of
    :func:`~MedSegCNNLib.inference.folder.predict_folder` with ``model`` (model folders, or a model loaded on this
    rank's device). Rank 0 reports to ``progress`` and returns every case; the other ranks return their share."""
    group = dist.new_group(backend="gloo", timeout=RANK_TIMEOUT)  # on CPU, with a timeout, whatever the backend
    message, failure = None, None
    if context.is_main:
        try:
            existing = "overwrite" if folder_options.existing == "overwrite" else "skip"
            planned = dataclasses.replace(folder_options, existing=existing)
            plan = plan_outputs(inputs, output, model_folders(model), model_channels(model), options, planned,
                                reference=reference)  # fmt: skip
            if plan.folder is not None:
                plan.folder.mkdir(parents=True, exist_ok=True)
            message = plan.to_json()
        except Exception as error:
            message, failure = json.dumps(None), error
    message = broadcast_text(message, context)  # also the barrier after which the output folder exists
    if failure is not None:
        raise failure
    if json.loads(message) is None:
        raise InputError("Rank 0 could not plan the run (see its error); nothing was segmented.")
    plan = Plan.from_json(message)
    share = plan.todo[context.rank :: context.world_size]
    logger.info(
        "Rank %d of %d: %d of the %d case(s) to segment, on %s.",
        context.rank, context.world_size, len(share), len(plan.todo), context.device,
    )  # fmt: skip
    cohort = CohortProgress(plan.todo, options, progress, context.world_size) if context.is_main else None
    loaded, done = None, []
    try:
        if share or context.is_main:  # rank 0 also needs the labels' names for the report
            loaded = model if isinstance(model, SegmentationModel) else load_segmentation_model(
                list(plan.models), context.device, allow_large=allow_large_model)  # fmt: skip
            if folder_options.check_inputs:
                check_inputs(share, loaded, options, folder_options)
            done = segment_jobs(share, loaded, options, folder_options, cohort)
    except Exception as error:
        failure = error
    failed = _failed_ranks(failure is not None or any(case.status == "failed" for case in done), group,
                           context.world_size, cohort)  # fmt: skip
    if failure is not None:
        raise failure
    labels = () if loaded is None else loaded.labels
    if cohort is None:
        return FolderResult(tuple(done), labels)
    others = [rank for rank in failed if rank != context.rank]
    if others:
        raise InputError(
            f"Rank {', '.join(map(str, others))} of {context.world_size} failed (see its error above); rerun the "
            "same command to continue: the complete cases are skipped."
        )
    cohort.poll(force=True)
    own = {case.case: case for case in done}
    cases = [
        case_result(job, options, "skipped") if job.skip else own.get(job.case) or case_result(job, options, "written")
        for job in plan.jobs
    ]
    return FolderResult(tuple(cases), labels)


def _failed_ranks(
    failed: bool, group: torch.distributed.ProcessGroup, world_size: int, cohort: CohortProgress | None
) -> list[int]:
    """The ranks that failed, once every rank has said whether it did (meanwhile rank 0, which has ``cohort``,
    counts the complete cases). Raises :class:`InputError` when a process crashed or did not answer within
    :data:`RANK_TIMEOUT`."""
    flags = [torch.zeros(1, dtype=torch.int64) for _ in range(world_size)]
    work = dist.all_gather(flags, torch.tensor([int(failed)], dtype=torch.int64), group=group, async_op=True)
    try:
        while cohort is not None and not work.is_completed():
            cohort.poll()
            time.sleep(WAIT_STEP_S)
        work.wait()
    except RuntimeError as error:  # gloo: a peer closed its connection, or the timeout passed
        cause = re.sub(r"^\[[^\]]*\]\s*", "", str(error)).split(". ")[0]  # without gloo's source location
        ranks = cohort.unfinished_ranks() if cohort is not None else []
        which = f"; rank {', '.join(map(str, ranks))} did not finish its cases" if ranks else ""
        raise InputError(
            f"Lost contact with the other processes ({cause}){which}. Rerun the same command to continue: the "
            "complete cases are skipped."
        ) from error
    return [rank for rank, flag in enumerate(flags) if flag.item()]


class CohortProgress:
    """Rank 0's view of the cases that all processes segment: which of ``jobs`` are complete, counted at most
    every ``interval_s`` seconds from a listing of the output folders, and reported in the order found to
    ``sink`` (the events of :class:`PredictionProgress`) or, without one, to the log.

    It stands in for rank 0's own :class:`PredictionProgress`: each window and case it segments is a chance to
    count. Case ``i`` of ``jobs`` belongs to rank ``i % world_size``.
    """

    def __init__(
        self,
        jobs: Sequence[Job],
        options: PredictOptions,
        sink: EventSink | None,
        world_size: int,
        *,
        interval_s: float = COUNT_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.jobs, self.world_size, self.interval_s, self.clock = list(jobs), world_size, interval_s, clock
        self.pending = {index: list(options.output_paths(job.output).values()) for index, job in enumerate(jobs)}
        self.progress = None if sink is None else PredictionProgress(sink, len(self.jobs))
        self.done = 0
        self.counted: float | None = None

    def poll(self, *, force: bool = False) -> None:
        """Count the complete cases (unless the last count is under ``interval_s`` old) and report the new ones."""
        now = self.clock()
        if not force and self.counted is not None and now - self.counted < self.interval_s:
            return
        self.counted = now
        names = _file_names({path.parent for paths in self.pending.values() for path in paths})
        complete = [i for i, paths in self.pending.items() if all(p.name in names[p.parent] for p in paths)]
        for index in complete:
            del self.pending[index]
            job = self.jobs[index]
            if self.progress is not None:
                self.progress.for_case(self.done, job.case)(1, 1)
                self.progress.case_done(self.done, job.case, job.output)
            self.done += 1
        if complete and self.progress is None:
            logger.info("%d of %d case(s) done (%d processes).", self.done, len(self.jobs), self.world_size)

    def unfinished_ranks(self) -> list[int]:
        """The ranks with cases not complete at the last count."""
        return sorted({index % self.world_size for index in self.pending})

    def for_case(self, index: int, case: str) -> Callable[[int, int], None]:
        """The window callback of rank 0's own case ``index``: a chance to count."""
        return lambda done, total: self.poll()

    def case_done(self, index: int, case: str, output: Path) -> None:
        """Rank 0 finished its own case ``index``: count now."""
        self.poll(force=True)


def _file_names(folders: set[Path]) -> dict[Path, set[str]]:
    """The names of the entries of each folder (none for a folder that cannot be read)."""
    names: dict[Path, set[str]] = {}
    for folder in folders:
        try:
            names[folder] = {entry.name for entry in folder.iterdir()}
        except OSError:
            names[folder] = set()
    return names
