"""``medsegcnn predict``: segment one image (file or DICOM folder) or a folder of images with a trained model.

The command line over :func:`~MedSegCNNLib.inference.folder.predict_folder` (cases, outputs, pre-flight check of
every input, ``--skip-existing``, torchrun cohorts: see there and :mod:`~MedSegCNNLib.inference.folder_plan`): it
turns the arguments into options, reports progress (``--progress``), evaluates against ``--ref`` and prints the
summary. A case that fails after the pre-flight check is reported as a warning while the others go on; the run then
ends with one error line listing the failed cases (the error itself for a single case) and a non-zero status.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from ..errors import InputError, MedSegCNNError
from ..image.cases import listing
from ..inference.options import PAGES, FolderOptions, PredictOptions
from ..progress import Event, EventSink, JsonLinesProgress, TqdmProgress

if TYPE_CHECKING:
    from ..inference.folder_run import FolderResult


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
        choices=PAGES,
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


def run(args: argparse.Namespace) -> int:
    from ..distributed import init_distributed, shutdown_distributed
    from ..inference.folder import predict_folder

    if args.skip_existing and args.overwrite:
        raise InputError("--skip-existing keeps existing outputs and --overwrite replaces them; pass only one of them.")
    options = PredictOptions.from_args(args)
    existing = "overwrite" if args.overwrite else "skip" if args.skip_existing else "refuse"
    folder_options = FolderOptions(existing=existing, grayscale=args.grayscale, pages=args.pages)
    context = init_distributed(options.device_choice)
    try:
        sink = _sink(args.progress) if context.is_main else None
        result = predict_folder(args.model, args.input, args.output, options, folder_options, reference=args.ref,
                                progress=sink, context=context, allow_large_model=args.allow_large_model)  # fmt: skip
        if context.is_main:
            _report(args, result, sink)
        _raise_failures(result)
        return 0
    finally:
        shutdown_distributed(context)


def _report(args: argparse.Namespace, result: FolderResult, sink: EventSink | None) -> None:
    """With ``--ref``: evaluate the label maps of every case not failed (read back from their files, skipped cases
    included) and print the report (a ``metrics`` event with ``--progress json``). Then print the summary."""
    cases = [case for case in result.cases if case.status != "failed" and case.reference is not None]
    if cases:
        from ..metrics.evaluate import evaluate
        from ..metrics.report import format_report

        labels = {info.value: info.name for info in result.model_labels}
        evaluation = evaluate([case.label_map for case in cases], [case.reference for case in cases],
                              label_names=labels)  # fmt: skip
        if args.progress == "json" and sink is not None:
            sink(Event("metrics", evaluation.to_json_dict()))
        else:
            print(format_report(evaluation, per_case=len(result.cases) == 1))
    if args.progress != "json":
        print(f"Segmented {len(result.written)} image(s) into {args.output}")


def _raise_failures(result: FolderResult) -> None:
    """Refuse a run with failed cases: the error itself when it was the only case to segment, else the failed
    cases (their errors were logged as they happened)."""
    failed = result.failed
    if not failed:
        return
    if len(failed) == 1 and not result.written:
        raise MedSegCNNError(failed[0].error)
    names = listing([case.case for case in failed])
    raise MedSegCNNError(
        f"{len(failed)} of {len(failed) + len(result.written)} case(s) failed ({names}; see the warnings above), the "
        "others were written. Rerun with --skip-existing to segment only the cases not complete."
    )


def _sink(choice: str) -> EventSink | None:
    """Where the events of ``--progress`` go: JSON lines on stdout, a bar over the images (on a terminal), none."""
    if choice == "json":
        return JsonLinesProgress()
    return TqdmProgress() if choice == "bar" and sys.stderr.isatty() else None
