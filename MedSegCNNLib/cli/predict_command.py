"""``medsegcnn predict``: segment one image (file or DICOM folder) or a folder of images with a trained model."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from ..atomic import check_writable, refuse_replacing_inputs
from ..errors import InputError, OutputExistsError
from ..image.io import SUPPORTED_EXTENSIONS, case_name, is_image_path
from ..inference.options import PredictOptions
from ..inference.progress import PredictionProgress
from ..progress import Event, EventSink, JsonLinesProgress, TqdmProgress

if TYPE_CHECKING:
    from ..inference.model import SegmentationModel

logger = logging.getLogger(__name__)


def add_parser(commands: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "predict",
        parents=parents,
        help="segment images with a trained model",
        description=(
            "Segment an image file, a DICOM series folder, or every volume of a folder with a trained model "
            "(or an ensemble of models). The output keeps the input's size, spacing, origin and direction."
        ),
    )
    parser.add_argument("--model", required=True, nargs="+", metavar="MODEL", help="model folder(s); several: ensemble")
    parser.add_argument("--input", required=True, metavar="FILE|DIR", help="image, DICOM folder, or folder of images")
    parser.add_argument("--output", required=True, metavar="FILE|DIR", help="label map file, or folder for a batch")
    parser.add_argument("--ref", metavar="FILE|DIR", help="reference label map(s): print Dice, HD95, ... afterwards")
    PredictOptions.add_arguments(parser)
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    parser.add_argument(
        "--allow-large-model",
        action="store_true",
        help="load a trusted model beyond the size bound (268M parameters, 16 GiB of feature maps per window)",
    )
    parser.add_argument("--progress", choices=("bar", "json", "none"), default="bar")
    parser.set_defaults(run=run)


def plan_outputs(args: argparse.Namespace, options: PredictOptions) -> tuple[list[tuple[str, Path, Path]], Path | None]:
    """``([(case, input, output), ...], folder)``: the jobs, and the output folder to create for a batch (``None``
    when it exists or the input is one image). Checks every output path before anything is computed or created."""
    source, target = Path(args.input), Path(args.output)
    if not source.exists():
        raise InputError(f"Input {source} does not exist.")
    batch = source.is_dir() and any(is_image_path(p) for p in source.iterdir() if p.is_file())
    if batch:
        from ..image.cases import list_cases

        if target.exists() and not target.is_dir():
            raise InputError(f"The input is a folder of images, so --output must be a folder; {target} is a file.")
        jobs = [(case, path, target / f"{case}{options.output_format}") for case, path in list_cases(source).items()]
    else:
        if not is_image_path(target):
            raise InputError(f"--output {target} must be a file ending in one of {', '.join(SUPPORTED_EXTENSIONS)}.")
        jobs = [(case_name(source), source, target)]
    existing = [str(path) for _, _, output in jobs for path in options.output_paths(output).values() if path.exists()]
    if existing and not args.overwrite:
        raise OutputExistsError(
            f"{len(existing)} output file(s) exist already (e.g. {existing[0]}); pass --overwrite to replace them."
        )
    if batch and not target.is_dir():
        return jobs, target
    for _, _, output in jobs:
        check_writable(output, overwrite=True)
    return jobs, None


def run(args: argparse.Namespace) -> int:
    from ..inference.model import load_segmentation_model
    from ..registry import resolve_model_folder
    from ..runtime import resolve_device

    options = PredictOptions.from_args(args)
    jobs, folder = plan_outputs(args, options)
    references = _references(args, jobs)
    models = [resolve_model_folder(path) for path in args.model]
    refuse_replacing_inputs(
        [path for _, _, output in jobs for path in options.output_paths(output).values()],
        [source for _, source, _ in jobs] + references + models,
    )
    model = load_segmentation_model(models, resolve_device(options.device), allow_large=args.allow_large_model)
    with _created_folder(folder):
        _segment_all(args, options, jobs, references, model)
    if args.progress != "json":
        print(f"Segmented {len(jobs)} image(s) into {args.output}")
    return 0


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


def _segment_all(
    args: argparse.Namespace,
    options: PredictOptions,
    jobs: list[tuple[str, Path, Path]],
    references: list[Path],
    model: SegmentationModel,
) -> None:
    """Segment, write and (with references) evaluate every job."""
    from ..image.io import read_image, write_image
    from ..inference.segment import segment
    from ..metrics.evaluate import evaluate
    from ..metrics.report import format_report
    from ..visualization.overlay import save_overlay

    sink = _sink(args.progress)
    progress = PredictionProgress(sink, len(jobs)) if sink is not None else None
    predictions = []
    for index, (case, source, output) in enumerate(jobs):
        image = read_image(source)
        result = segment(
            image, model, options, progress=None if progress is None else progress.for_case(index, case),
            input_name=str(source),
        )  # fmt: skip
        outputs = options.output_paths(output)
        write_image(result.labels, outputs["labels"], overwrite=args.overwrite)
        if options.probabilities:
            write_image(result.probabilities, outputs["probabilities"], overwrite=args.overwrite)
        if options.uncertainty:
            write_image(result.uncertainty, outputs["uncertainty"], overwrite=args.overwrite)
        if options.overlay:
            reference = read_image(references[index]) if references else None
            save_overlay(
                outputs["overlay"], image, result.labels, reference=reference, overwrite=args.overwrite, title=case
            )
        predictions.append(result.labels)
        if progress is not None:
            progress.case_done(index, case, output)
    if references:
        result = evaluate(predictions, references, label_names={info.value: info.name for info in model.labels})
        if args.progress == "json":
            sink(Event("metrics", result.to_json_dict()))
        else:
            print(format_report(result, per_case=len(jobs) == 1))


def _references(args: argparse.Namespace, jobs: list[tuple[str, Path, Path]]) -> list[Path]:
    if args.ref is None:
        return []
    reference = Path(args.ref)
    if len(jobs) == 1 and reference.is_file():
        return [reference]
    if not reference.is_dir():
        raise InputError(f"--ref {reference} must be a label map file (one input) or a folder (a folder of inputs).")
    from ..image.cases import list_cases, listing

    available = list_cases(reference)
    missing = [case for case, _, _ in jobs if case not in available]
    if missing:
        raise InputError(
            f"No reference in {reference} for {listing(missing)}; references are matched to inputs by file name "
            "without extension."
        )
    return [available[case] for case, _, _ in jobs]


def _sink(choice: str) -> EventSink | None:
    """Where the events of ``--progress`` go: JSON lines on stdout, a bar over the images (on a terminal), none."""
    if choice == "json":
        return JsonLinesProgress()
    return TqdmProgress() if choice == "bar" and sys.stderr.isatty() else None
