"""``medsegcnn predict``: segment one image (file or DICOM folder) or a folder of images with a trained model."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from ..atomic import check_writable, full_suffix, refuse_replacing_inputs
from ..errors import InputError, OutputExistsError
from ..image.io import SUPPORTED_EXTENSIONS, case_name, is_image_path
from ..progress import Event, EventSink, JsonLinesProgress

if TYPE_CHECKING:
    from ..inference.model import SegmentationModel

logger = logging.getLogger(__name__)

PROGRESS_INTERVAL_S = 0.2
"""Least time between two per-window ``progress`` events (the last window of each case is always reported)."""


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
    parser.add_argument("--format", default=".nii.gz", choices=SUPPORTED_EXTENSIONS, help="file type in batch mode")
    parser.add_argument("--ref", metavar="FILE|DIR", help="reference label map(s): print Dice, HD95, ... afterwards")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"))
    parser.add_argument("--precision", default="fp32", choices=("auto", "fp32", "bf16", "fp16"))
    parser.add_argument("--tta", action="store_true", help="average over mirrored copies (slower, often better)")
    parser.add_argument("--probabilities", action="store_true", help="also write class probabilities")
    parser.add_argument("--uncertainty", action="store_true", help="also write the entropy of the probabilities")
    parser.add_argument("--overlay", action="store_true", help="also write a PNG montage of the segmentation")
    parser.add_argument("--keep-largest", action="store_true", help="keep the largest component of each label")
    parser.add_argument("--min-size", type=float, default=0.0, metavar="MM3", help="remove smaller components")
    parser.add_argument("--fill-holes", action="store_true", help="fill holes enclosed by a label")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    parser.add_argument(
        "--allow-large-model",
        action="store_true",
        help="load a trusted model beyond the size bound (268M parameters, 16 GiB of feature maps per window)",
    )
    parser.add_argument("--progress", choices=("bar", "json", "none"), default="bar")
    parser.set_defaults(run=run)


def plan_outputs(args: argparse.Namespace) -> tuple[list[tuple[str, Path, Path]], Path | None]:
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
        jobs = [(case, path, target / f"{case}{args.format}") for case, path in list_cases(source).items()]
    else:
        if not is_image_path(target):
            raise InputError(f"--output {target} must be a file ending in one of {', '.join(SUPPORTED_EXTENSIONS)}.")
        jobs = [(case_name(source), source, target)]
    existing = [str(path) for _, _, output in jobs for path in _all_outputs(output, args) if path.exists()]
    if existing and not args.overwrite:
        raise OutputExistsError(
            f"{len(existing)} output file(s) exist already (e.g. {existing[0]}); pass --overwrite to replace them."
        )
    if batch and not target.is_dir():
        return jobs, target
    for _, _, output in jobs:
        check_writable(output, overwrite=True)
    return jobs, None


def _all_outputs(output: Path, args: argparse.Namespace) -> list[Path]:
    stem = output.name[: -len(full_suffix(output))]
    extras = {"probabilities": ".nii.gz", "uncertainty": ".nii.gz", "overlay": ".png"}
    return [output] + [output.with_name(f"{stem}_{name}{ext}") for name, ext in extras.items() if getattr(args, name)]


def run(args: argparse.Namespace) -> int:
    from ..inference.model import load_segmentation_model, resolve_model_folder
    from ..runtime import resolve_device

    jobs, folder = plan_outputs(args)
    references = _references(args, jobs)
    models = [resolve_model_folder(path) for path in args.model]
    refuse_replacing_inputs(
        [path for _, _, output in jobs for path in _all_outputs(output, args)],
        [source for _, source, _ in jobs] + references + models,
    )
    model = load_segmentation_model(models, resolve_device(args.device), allow_large=args.allow_large_model)
    with _created_folder(folder):
        _segment_all(args, jobs, references, model)
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
    args: argparse.Namespace, jobs: list[tuple[str, Path, Path]], references: list[Path], model: SegmentationModel
) -> None:
    """Segment, write and (with references) evaluate every job."""
    from ..image.io import read_image, write_image
    from ..inference.segment import segment
    from ..metrics.evaluate import evaluate
    from ..postprocessing import PostprocessingConfig
    from ..visualization.overlay import save_overlay
    from .evaluate_command import format_report

    postprocessing = PostprocessingConfig(
        keep_largest=args.keep_largest, min_size_mm3=args.min_size, fill_holes=args.fill_holes
    )
    emit = JsonLinesProgress() if args.progress == "json" else None
    windows = WindowProgress(emit, len(jobs)) if emit is not None else None
    bar = _bar(len(jobs)) if args.progress == "bar" and sys.stderr.isatty() else None
    predictions = []
    for index, (case, source, output) in enumerate(jobs):
        image = read_image(source)
        result = segment(
            image, model, tta=args.tta, probabilities=args.probabilities, uncertainty=args.uncertainty,
            postprocessing=postprocessing, precision=args.precision,
            progress=None if windows is None else windows.for_case(index, case), input_name=str(source),
        )  # fmt: skip
        write_image(result.labels, output, overwrite=args.overwrite)
        extras = iter(_all_outputs(output, args)[1:])
        if args.probabilities:
            write_image(result.probabilities, next(extras), overwrite=args.overwrite)
        if args.uncertainty:
            write_image(result.uncertainty, next(extras), overwrite=args.overwrite)
        if args.overlay:
            reference = read_image(references[index]) if references else None
            save_overlay(next(extras), image, result.labels, reference=reference, overwrite=args.overwrite, title=case)
        predictions.append(result.labels)
        if emit is not None:
            emit(Event("case", {"case": case, "index": index + 1, "total": len(jobs), "output": str(output)}))
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    if references:
        result = evaluate(predictions, references, label_names={info.value: info.name for info in model.labels})
        if args.progress == "json":
            emit(Event("metrics", result.to_json_dict()))
        else:
            print(format_report(result, per_case=len(jobs) == 1))


class WindowProgress:
    """``progress`` events while cases are segmented, at most one per ``interval_s`` seconds.

    Fields: stage ("segmenting <case>"), case (1-based index), cases, done and total (windows of this case),
    fraction (of the whole run: cases done plus this case's share of windows, in [0, 1]) and eta_s (seconds
    left, extrapolated from the time since this object was made; ``None`` before the first window).
    """

    def __init__(
        self, emit: EventSink, cases: int, *, interval_s: float = PROGRESS_INTERVAL_S, clock=time.monotonic
    ) -> None:
        self.emit, self.cases, self.interval_s, self.clock = emit, cases, interval_s, clock
        self.started = clock()
        self.last_emitted: float | None = None

    def for_case(self, index: int, case: str) -> Callable[[int, int], None]:
        """The ``progress(done, total)`` callback of case ``index`` (0-based) for :func:`segment`."""

        def report(done: int, total: int) -> None:
            now = self.clock()
            if done < total and self.last_emitted is not None and now - self.last_emitted < self.interval_s:
                return
            self.last_emitted = now
            fraction = min((index + done / max(total, 1)) / self.cases, 1.0)
            elapsed = now - self.started
            eta = elapsed * (1.0 - fraction) / fraction if fraction > 0 else None
            data = {"stage": f"segmenting {case}", "case": index + 1, "cases": self.cases, "done": done}
            self.emit(Event("progress", {**data, "total": total, "fraction": fraction, "eta_s": eta}))

        return report


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


def _bar(total: int):
    from tqdm import tqdm

    return tqdm(total=total, unit="image", file=sys.stderr, desc="segmenting")
