"""``medsegcnn predict``: segment one image (file or DICOM folder) or a folder of images with a trained model.

The cases and their channels (``--input``, :func:`input_cases`): several files are the channels of one case, in
the model card's channel order, named after the first file without its ``_0000`` channel suffix. A folder holds
one case per file, except that nnU-Net's channel files (``<case>_0000``, ``<case>_0001``, ...) are grouped by case
when the model has several channels and the first file holds one, and ``<case>_0000`` files alone are cases
``<case>`` for a one-channel model. A folder of multi-component files (RGB pictures, 4D or vector volumes) is one
case per file. Outputs are named by case.

A case is *complete* when every output file it asks for exists (:meth:`PredictOptions.output_paths`) and reads
back whole (the integrity checks of every read), and *partial* when only some do. ``--skip-existing`` leaves the
complete cases as they are and redoes the partial ones (replacing their files); a truncated or corrupt output
(say, from a copy that broke off) makes its case partial, with a warning naming the file: ``--skip-existing`` asks
for the folder to be completed, and such a file holds no segmentation worth keeping. Without ``--skip-existing``,
existing outputs are refused unless ``--overwrite``. A symbolic link counts as an existing output, also one to a
missing file; ``--overwrite`` replaces the link itself, never the file it points to.

Before anything is written, every input of the cases to segment is read and checked against the model (readable
and complete, channels, 2D or 3D), so that a bad file among good ones stops the run with nothing written (each
input is read twice; under torchrun each process checks its own share of the cases).

Under ``torchrun`` (``WORLD_SIZE`` > 1, on one machine or several) the processes share out the cases. Rank 0
lists them, skips the complete ones (the default there, so that rerunning the same command continues a run that
stopped; ``--overwrite`` redoes everything instead), creates the output folder and sends this plan to every rank
as JSON; rank ``r`` of ``n`` segments cases ``r, r + n, r + 2n, ...`` of those to do, on its own device (CUDA:
the GPU of ``LOCAL_RANK``). The processes share nothing else, so the output folder must be on a file system that
every machine sees: rank 0 reports the progress of all of them by counting the complete cases there (at most
every :data:`COUNT_INTERVAL_S` seconds). At the end every rank tells the others whether it succeeded, waiting at
most :data:`RANK_TIMEOUT` for them; rank 0 then evaluates against ``--ref`` (reading the label maps back) and
prints the summary.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..atomic import check_writable, occupied, refuse_replacing_inputs, verify_png
from ..errors import InputError, OutputExistsError
from ..image.cases import CHANNEL_SUFFIX
from ..image.dicom import may_hold_dicom
from ..image.io import SUPPORTED_EXTENSIONS, case_name, is_image_path, is_raster_path
from ..image.raster import luminance
from ..inference.options import PredictOptions, check_label_format
from ..inference.progress import PredictionProgress
from ..progress import Event, EventSink, JsonLinesProgress, TqdmProgress

if TYPE_CHECKING:
    import torch.distributed

    from ..distributed import DistributedContext
    from ..image.core import Image
    from ..image.raster import Pages
    from ..inference.model import SegmentationModel

logger = logging.getLogger(__name__)

COUNT_INTERVAL_S = 2.0
"""Least time (seconds) between two counts of the complete cases by rank 0 under torchrun."""
RANK_TIMEOUT = timedelta(minutes=30)
"""How long a process waits for the others at the end of a torchrun run. The cases are dealt out in turn, so the
ranks finish at most about one case apart; a process that crashed is noticed at once."""
WAIT_STEP_S = 0.1
"""How often rank 0 looks whether the others have finished while it waits for them."""


def add_parser(commands: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "predict",
        parents=parents,
        help="segment images with a trained model",
        description=(
            "Segment an image file, a DICOM series folder, or every volume of a folder with a trained model "
            "(or an ensemble of models). The output keeps the input's size, spacing, origin and direction. "
            "Under torchrun the processes share out the cases of a folder (see README)."
        ),
    )
    parser.add_argument("--model", required=True, nargs="+", metavar="MODEL", help="model folder(s); several: ensemble")
    parser.add_argument(
        "--input",
        required=True,
        nargs="+",
        metavar="FILE|DIR",
        help="an image, a DICOM folder or a folder of images; several files: one per input channel, in the model "
        "card's order",
    )
    parser.add_argument(
        "--output", required=True, metavar="FILE|DIR", help="label map file, or folder (outputs named by case)"
    )
    parser.add_argument("--ref", metavar="FILE|DIR", help="reference label map(s): print Dice, HD95, ... afterwards")
    PredictOptions.add_arguments(parser)
    parser.add_argument(
        "--grayscale",
        action="store_true",
        help="give a one-channel model the luminance of colour pictures: 0.299 R + 0.587 G + 0.114 B (ITU-R BT.601)",
    )
    parser.add_argument(
        "--pages",
        choices=("single", "stack"),
        default="single",
        help="multi-page TIFFs (and animated PNGs): refused (single), or their pages read as one 3D image, z = page "
        "(stack; the label maps are then written as .nii.gz unless --format says otherwise)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    parser.add_argument(
        "--skip-existing",
        action="store_true",
        help="keep the cases whose output files all exist and read back whole, redo the others (a truncated output "
        "is redone, with a warning; the default under torchrun)",
    )
    parser.add_argument(
        "--allow-large-model",
        action="store_true",
        help="load a trusted model beyond the size bound (268M parameters, 16 GiB of feature maps per window)",
    )
    parser.add_argument("--progress", choices=("bar", "json", "none"), default="bar")
    parser.set_defaults(run=run)


@dataclass(frozen=True)
class Job:
    """One case: its name, input images (one per channel, or one file with every channel), label map
    (:meth:`PredictOptions.output_paths` names the other outputs) and reference (``--ref``). ``skip``: complete
    already, left as it is; ``replace``: its existing output files are replaced (``--overwrite``, or a partial case
    being redone)."""

    case: str
    sources: tuple[Path, ...]
    output: Path
    reference: Path | None = None
    skip: bool = False
    replace: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The job as JSON values (paths as strings)."""
        paths = {"sources": [str(path) for path in self.sources], "output": str(self.output)}
        reference = None if self.reference is None else str(self.reference)
        return {"case": self.case, **paths, "reference": reference, "skip": self.skip, "replace": self.replace}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Job:
        reference = None if data["reference"] is None else Path(data["reference"])
        sources = tuple(map(Path, data["sources"]))
        return cls(data["case"], sources, Path(data["output"]), reference, data["skip"], data["replace"])


@dataclass(frozen=True)
class Plan:
    """What a prediction does: ``jobs`` (every case, sorted by name), ``models`` (the model folders) and ``folder``
    (the output folder to create: ``None`` when it exists or the output is one file)."""

    jobs: tuple[Job, ...]
    models: tuple[Path, ...]
    folder: Path | None

    @property
    def todo(self) -> tuple[Job, ...]:
        """The jobs to segment: all but the skipped ones."""
        return tuple(job for job in self.jobs if not job.skip)

    def to_json(self) -> str:
        folder = None if self.folder is None else str(self.folder)
        jobs = [job.to_dict() for job in self.jobs]
        return json.dumps({"jobs": jobs, "models": [str(path) for path in self.models], "folder": folder})

    @classmethod
    def from_json(cls, text: str) -> Plan:
        data = json.loads(text)
        folder = None if data["folder"] is None else Path(data["folder"])
        return cls(tuple(map(Job.from_dict, data["jobs"])), tuple(map(Path, data["models"])), folder)


def plan_outputs(args: argparse.Namespace, options: PredictOptions, *, skip: bool) -> Plan:
    """The plan of a prediction. Checks the inputs and every output path before anything is computed or created.

    With ``skip`` the complete cases are skipped and the partial ones redone; otherwise existing outputs are
    refused unless ``--overwrite``. An output is never an input, whatever the flags.
    """
    from ..checkpoint.model_card import read_model_card
    from ..registry import resolve_model_folder

    models = tuple(resolve_model_folder(path) for path in args.model)
    channels = read_model_card(models[0]).channels
    cases, batch = input_cases([Path(path) for path in args.input], channels, pages=args.pages)
    target = Path(args.output)
    to_folder = batch or target.is_dir() or args.output.endswith(("/", os.sep))
    blocker = next((path for path in (target, *target.parents) if occupied(path) and not path.is_dir()), None)
    if to_folder and blocker is not None:  # the folder (or one of its parents, to be created) is a file or link
        why = "The input is a folder of images, so --output must be a folder" if batch else "--output names a folder"
        what = "a link to a missing file" if not blocker.exists() else "a file"
        raise InputError(f"{why}; {blocker} is {what}.")
    stack = args.pages == "stack"
    if to_folder:
        planned = [
            (case, sources, target / f"{case}{options.label_extension(sources[0], stack=stack)}")
            for case, sources in cases
        ]
    else:
        check_label_format(target.name)
        if not is_image_path(target):
            raise InputError(
                f"--output {target} must be a file ending in one of {', '.join(SUPPORTED_EXTENSIONS)}, or a folder."
            )
        planned = [(cases[0][0], cases[0][1], target)]
    references = _references(args, [case for case, _, _ in planned])
    outputs = {output: list(options.output_paths(output).values()) for _, _, output in planned}
    refuse_replacing_inputs(
        [path for paths in outputs.values() for path in paths],
        [path for _, sources, _ in planned for path in sources] + references + list(models),
    )
    present = {output: [path for path in paths if occupied(path)] for output, paths in outputs.items()}
    existing = [f"{path}{'' if path.exists() else ' (a link to a missing file)'}" for paths in present.values()
                for path in paths]  # fmt: skip
    if existing and not (skip or args.overwrite):
        raise OutputExistsError(
            f"{len(existing)} output file(s) exist already (e.g. {existing[0]}); pass --overwrite to replace them, "
            "or --skip-existing to keep the cases whose outputs all exist."
        )
    jobs = []
    for index, (case, sources, output) in enumerate(planned):
        complete = len(present[output]) == len(outputs[output]) and (not skip or _whole(case, options, output))
        reference = references[index] if references else None
        replace = args.overwrite or bool(present[output])
        jobs.append(Job(case, sources, output, reference, skip=skip and complete, replace=replace))
    skipped = sum(job.skip for job in jobs)
    if skipped:
        logger.info("Skipping %d of %d case(s): their output files all exist.", skipped, len(jobs))
    if to_folder and not target.is_dir():
        return Plan(tuple(jobs), models, target)
    for job in jobs:
        check_writable(job.output, overwrite=True)
    return Plan(tuple(jobs), models, None)


def _whole(case: str, options: PredictOptions, output: Path) -> bool:
    """Whether every output file of ``case`` (label map ``output``), all present, reads back whole; warns naming
    the first that does not (the case is then redone)."""
    for kind, path in options.output_paths(output).items():
        try:
            _check_output(kind, path)
        except InputError as error:
            logger.warning("Case %s is not complete and is segmented again, its output files replaced: %s", case, error)
            return False
    return True


def _check_output(kind: str, path: Path) -> None:
    """Refuse (:class:`InputError`) the existing output ``path`` of ``kind`` (a key of
    :meth:`PredictOptions.output_paths`) unless it reads back whole, with the checks of every read."""
    from ..image.io import read_image

    if kind == "overlay":
        try:
            verify_png(path)
        except InputError as error:
            raise InputError(f"{path} is truncated or corrupt: {error}") from None
    else:
        read_image(path)


def input_cases(
    inputs: Sequence[Path], channels: Sequence[str], *, pages: Pages = "single"
) -> tuple[list[tuple[str, tuple[Path, ...]]], bool]:
    """The cases of ``--input`` as ``(name, channel sources)`` (see the module docstring) for a model with
    ``channels``, and whether the input is a folder of images (a batch). ``pages``: how multi-page files are read
    (``--pages``), when one is read to tell the layout."""
    for path in inputs:
        if not path.exists():
            raise InputError(f"Input {path} does not exist.")
    if len(inputs) > 1:
        return [_channel_files_case(inputs, channels)], False
    source = inputs[0]
    if not source.is_dir():
        return [(case_name(source), (source,))], False
    files = [path for path in source.iterdir() if path.is_file() and not path.name.startswith(".")]
    if not any(is_image_path(path) for path in files):
        if not may_hold_dicom(source):
            raise InputError(
                f"Input folder {source} holds no images: no files ending in {', '.join(SUPPORTED_EXTENSIONS)} "
                "(hidden files are ignored) and no DICOM series; give a folder of images, a DICOM folder or a file."
            )
        return [(case_name(source), (source,))], False
    return _folder_cases(source, channels, pages), True


def _channel_files_case(files: Sequence[Path], channels: Sequence[str]) -> tuple[str, tuple[Path, ...]]:
    """The one case that several ``--input`` files make: one file per channel, in the model card's order."""
    folder = next((path for path in files if path.is_dir()), None)
    if folder is not None:
        raise InputError(
            f"Several --input paths are the channel files of one case, but {folder} is a folder; give one image "
            "file per channel, or the folder alone."
        )
    if len(files) != len(channels):
        raise InputError(
            f"{len(files)} --input files given, but the model expects {len(channels)} input channel(s) "
            f"({', '.join(channels)}): give one file per channel, in that order."
        )
    matches = [CHANNEL_SUFFIX.match(case_name(path)) for path in files]
    if all(matches) and len({match["case"] for match in matches}) == 1:
        numbers = [match["channel"] for match in matches]
        if numbers != [f"{index:04d}" for index in range(len(files))]:
            raise InputError(
                f"The --input files are channels _{', _'.join(numbers)} of case {matches[0]['case']}; give them in "
                f"the model's channel order ({', '.join(channels)}): _0000, _0001, ..."
            )
    first = matches[0]
    return (first["case"] if first and first["channel"] == "0000" else case_name(files[0])), tuple(files)


def _folder_cases(folder: Path, channels: Sequence[str], pages: Pages) -> list[tuple[str, tuple[Path, ...]]]:
    """The cases of a folder of images (see the module docstring)."""
    from ..image.cases import channel_numbers, list_cases, listing

    files = list_cases(folder)
    one_per_file = [(case, (path,)) for case, path in files.items()]
    numbered = channel_numbers(files)
    if numbered is None:
        return one_per_file
    if len(channels) == 1:
        if all(list(numbers) == [0] for numbers in numbered.values()):
            return [(case, (numbers[0],)) for case, numbers in numbered.items()]
        return one_per_file
    first = next(iter(files.values()))
    components = _read(first, pages).num_channels
    if components == len(channels):
        logger.info("%s holds %d-channel images (e.g. %s): one case per file.", folder, components, first.name)
        return one_per_file
    wanted = range(len(channels))
    problems = []
    for case, numbers in numbered.items():
        missing = [f"_{number:04d}" for number in wanted if number not in numbers]
        extra = [f"_{number:04d}" for number in sorted(numbers) if number not in wanted]
        text = ", ".join(
            [f"{case} lacks {' '.join(missing)}"] * bool(missing) + [f"{case} has {' '.join(extra)}"] * bool(extra)
        )
        if text:
            problems.append(text)
    if problems:
        raise InputError(
            f"Channel files missing or extra in {folder}: the model expects {len(channels)} channels "
            f"({', '.join(channels)}), one file each named <case>_0000 to <case>_{len(channels) - 1:04d}; "
            f"{listing(problems, limit=3)}."
        )
    return [(case, tuple(numbers[number] for number in wanted)) for case, numbers in numbered.items()]


def run(args: argparse.Namespace) -> int:
    from ..distributed import init_distributed, shutdown_distributed
    from ..inference.model import load_segmentation_model

    if args.skip_existing and args.overwrite:
        raise InputError("--skip-existing keeps existing outputs and --overwrite replaces them; pass only one of them.")
    options = PredictOptions.from_args(args)
    context = init_distributed(options.device_choice)
    try:
        if context.distributed:
            return _run_distributed(args, options, context)
        plan = plan_outputs(args, options, skip=args.skip_existing)
        model = load_segmentation_model(list(plan.models), context.device, allow_large=args.allow_large_model)
        _check_inputs(plan.todo, model, options, grayscale=args.grayscale, pages=args.pages)
        sink = _sink(args.progress)
        with _created_folder(plan.folder):
            progress = None if sink is None else PredictionProgress(sink, len(plan.todo))
            _segment(plan.todo, options, model, progress, grayscale=args.grayscale, pages=args.pages)
            _report(args, plan, model, sink)
        return 0
    finally:
        shutdown_distributed(context)


@contextlib.contextmanager
def _created_folder(folder: Path | None) -> Iterator[None]:
    """Create ``folder`` (with missing parents) for the block; remove what was created if the block fails
    before writing anything there."""
    if folder is None:
        yield
        return
    created = [path for path in (folder, *folder.parents) if not path.exists()]
    folder.mkdir(parents=True)
    try:
        yield
    except BaseException:
        for path in created:  # innermost first
            if path.is_dir() and not any(path.iterdir()):
                path.rmdir()
        raise


def _check_inputs(
    jobs: Sequence[Job], model: SegmentationModel, options: PredictOptions, *, grayscale: bool, pages: Pages
) -> None:
    """Read the inputs of every one of ``jobs`` as :func:`_segment` does and refuse (:class:`InputError`, naming
    the file) the first that cannot be read whole or does not fit ``model``, before anything is written."""
    from ..inference.segment import load_checked_input

    for job in jobs:
        images = _model_inputs(job, [_read(source, pages) for source in job.sources], model.channels,
                               grayscale=grayscale)  # fmt: skip
        names = [str(source) for source in job.sources]
        load_checked_input(images, model, names, allow_partial_channels=options.allow_partial_channels)


def _segment(
    jobs: Sequence[Job],
    options: PredictOptions,
    model: SegmentationModel,
    progress: PredictionProgress | CohortProgress | None,
    *,
    grayscale: bool = False,
    pages: Pages = "single",
) -> None:
    """Segment ``jobs`` and write every output each asks for; ``grayscale``: colour pictures to luminance;
    ``pages``: how multi-page files are read."""
    from ..image.io import write_image
    from ..inference.segment import segment
    from ..metrics.evaluate import read_label_map
    from ..visualization.overlay import save_overlay

    for index, job in enumerate(jobs):
        images = _model_inputs(
            job, [_read(source, pages) for source in job.sources], model.channels, grayscale=grayscale
        )
        result = segment(
            images, model, options, progress=None if progress is None else progress.for_case(index, job.case),
            input_name=[str(source) for source in job.sources],
        )  # fmt: skip
        outputs = options.output_paths(job.output)
        write_image(result.labels, outputs["labels"], overwrite=job.replace)
        if options.probabilities:
            write_image(result.probabilities, outputs["probabilities"], overwrite=job.replace)
        if options.uncertainty:
            write_image(result.uncertainty, outputs["uncertainty"], overwrite=job.replace)
        if options.overlay:
            reference = None if job.reference is None else read_label_map(job.reference)
            save_overlay(
                outputs["overlay"], images[0], result.labels, reference=reference, overwrite=job.replace,
                title=job.case,
            )  # fmt: skip
        if progress is not None:
            progress.case_done(index, job.case, job.output)


def _read(path: Path, pages: Pages) -> Image:
    """The input image ``path``, its pages read as ``pages`` says (``--pages``)."""
    from ..image.io import read_image

    return read_image(path, pages=pages)


def _model_inputs(job: Job, images: list[Image], channels: Sequence[str], *, grayscale: bool) -> list[Image]:
    """The images of ``job`` as the model's input channels: refused unless they have as many channels as the model
    (``channels``); with ``grayscale``, a colour picture for a one-channel model becomes its luminance."""
    what = f"{job.sources[0]}" if len(job.sources) == 1 else f"The {len(job.sources)} files of case {job.case}"
    count = sum(image.num_channels for image in images)
    if grayscale:
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


def _report(args: argparse.Namespace, plan: Plan, model: SegmentationModel, sink: EventSink | None) -> None:
    """With ``--ref``: evaluate the label maps of every case (read back from their files, skipped cases included)
    and print the report (a ``metrics`` event with ``--progress json``). Then print the summary."""
    references = [job.reference for job in plan.jobs if job.reference is not None]
    if references:
        from ..metrics.evaluate import evaluate
        from ..metrics.report import format_report

        labels = {info.value: info.name for info in model.labels}
        result = evaluate([job.output for job in plan.jobs], references, label_names=labels)
        if args.progress == "json" and sink is not None:
            sink(Event("metrics", result.to_json_dict()))
        else:
            print(format_report(result, per_case=len(plan.jobs) == 1))
    if args.progress != "json":
        print(f"Segmented {len(plan.todo)} image(s) into {args.output}")


def _run_distributed(args: argparse.Namespace, options: PredictOptions, context: DistributedContext) -> int:
    """This process's part of a torchrun run (see the module docstring); returns its exit status."""
    import torch.distributed as dist

    from ..distributed import broadcast_text
    from ..inference.model import load_segmentation_model

    group = dist.new_group(backend="gloo", timeout=RANK_TIMEOUT)  # on CPU, with a timeout, whatever the backend
    message, failure = None, None
    if context.is_main:
        try:
            plan = plan_outputs(args, options, skip=not args.overwrite)
            if plan.folder is not None:
                plan.folder.mkdir(parents=True, exist_ok=True)
            message = plan.to_json()
        except Exception as error:
            message, failure = json.dumps(None), error
    message = broadcast_text(message, context)  # also the barrier after which the output folder exists
    if failure is not None:
        raise failure
    if json.loads(message) is None:
        return 1  # rank 0 could not start the run and says why
    plan = Plan.from_json(message)
    share = plan.todo[context.rank :: context.world_size]
    logger.info(
        "Rank %d of %d: %d of the %d case(s) to segment, on %s.",
        context.rank, context.world_size, len(share), len(plan.todo), context.device,
    )  # fmt: skip
    sink = _sink(args.progress) if context.is_main else None
    cohort = CohortProgress(plan.todo, options, sink, context.world_size) if context.is_main else None
    model = None
    try:
        if share or context.is_main:  # rank 0 also needs the labels' names for the report
            model = load_segmentation_model(list(plan.models), context.device, allow_large=args.allow_large_model)
            _check_inputs(share, model, options, grayscale=args.grayscale, pages=args.pages)
            _segment(share, options, model, cohort, grayscale=args.grayscale, pages=args.pages)
    except Exception as error:
        failure = error
    failed = _failed_ranks(failure is not None, group, context.world_size, cohort)
    if failure is not None:
        raise failure
    if cohort is None or model is None:
        return 0
    if failed:
        raise InputError(
            f"Rank {', '.join(map(str, failed))} of {context.world_size} failed (see its error above); rerun the "
            "same command to continue: the complete cases are skipped."
        )
    cohort.poll(force=True)
    _report(args, plan, model, sink)
    return 0


def _failed_ranks(
    failed: bool, group: torch.distributed.ProcessGroup, world_size: int, cohort: CohortProgress | None
) -> list[int]:
    """The ranks that failed, once every rank has said whether it did (meanwhile rank 0, which has ``cohort``,
    counts the complete cases). Raises :class:`InputError` when a process crashed or did not answer within
    :data:`RANK_TIMEOUT`."""
    import torch
    import torch.distributed as dist

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


def _references(args: argparse.Namespace, cases: list[str]) -> list[Path]:
    """The reference label map of each case (``--ref``), or none."""
    if args.ref is None:
        return []
    reference = Path(args.ref)
    if len(cases) == 1 and reference.is_file():
        return [reference]
    if not reference.is_dir():
        raise InputError(f"--ref {reference} must be a label map file (one input) or a folder (a folder of inputs).")
    from ..image.cases import files_for_cases

    return files_for_cases(reference, cases, what="reference")


def _sink(choice: str) -> EventSink | None:
    """Where the events of ``--progress`` go: JSON lines on stdout, a bar over the images (on a terminal), none."""
    if choice == "json":
        return JsonLinesProgress()
    return TqdmProgress() if choice == "bar" and sys.stderr.isatty() else None
