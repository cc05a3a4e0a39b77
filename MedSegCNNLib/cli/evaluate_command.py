"""``medsegcnn evaluate``: metrics of predicted label maps against reference label maps."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from ..atomic import check_writable, refuse_replacing_inputs
from ..data.msd import find_dataset_json, read_label_names
from ..errors import InputError
from ..metrics.evaluate import evaluate
from ..metrics.report import format_report
from ..metrics.result import CaseEvaluation

logger = logging.getLogger(__name__)


def add_parser(commands: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "evaluate",
        parents=parents,
        help="Dice, IoU, HD95, NSD, ... of predictions against references",
        description=(
            "Compare predicted label maps with reference label maps: Dice/F1, IoU, precision, recall, "
            "specificity, accuracy, volumes, HD, HD95, ASSD and normalised surface Dice, per label and per "
            "case, in mm and mL, or in pixels for pictures without pixel spacing (the distance_unit column says "
            "which). Give two files, or two folders whose files are matched by name. 2D pictures (PNG, TIFF, ...) "
            "are label maps by the mask rule: a 0/255 mask is labels 0/1."
        ),
    )
    parser.add_argument("--pred", required=True, metavar="PATH", help="predicted label map, or a folder of them")
    parser.add_argument("--ref", required=True, metavar="PATH", help="reference label map, or a folder of them")
    parser.add_argument(
        "--labels", type=_parse_labels, metavar="L1,L2", help="label values to evaluate (default: all non-zero found)"
    )
    parser.add_argument(
        "--label-names",
        type=_parse_label_names,
        metavar="NAMES",
        help="label names: a dataset.json file, or 1=Anterior,2=Posterior (default: names stored in the "
        "reference, or the dataset.json beside a reference folder in the MSD layout)",
    )
    parser.add_argument("--csv", metavar="FILE", help="write one row per (case, label) to this CSV file")
    parser.add_argument("--overwrite", action="store_true", help="allow replacing an existing --csv file")
    parser.add_argument("--json", action="store_true", help="print only one JSON object with rows and summary")
    parser.add_argument(
        "--nsd-tolerance", type=float, default=1.0, metavar="MM", help="normalised surface Dice tolerance (mm)"
    )
    parser.add_argument("--no-surface", action="store_true", help="skip HD/HD95/ASSD/NSD (faster)")
    parser.add_argument(
        "--roi-mask",
        metavar="FILE|DIR",
        help="count every metric inside this mask only (non-zero: inside; e.g. a fundus field of view): one file for "
        "every case, or a folder of masks matched to the cases by name",
    )
    parser.add_argument(
        "--mask-values",
        type=_parse_mask_values,
        metavar="V0,V1,...",
        help="raw values of the references that are labels 0, 1, 2, ... in order, e.g. 0,255 or 0,128,255",
    )
    parser.add_argument("--per-case", action="store_true", help="print every (case, label) row, not only the summary")
    parser.set_defaults(run=run)


def _parse_labels(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 1,2; got {text!r}") from None
    if not values or any(value < 0 for value in values):
        raise argparse.ArgumentTypeError(f"expected non-negative label values such as 1,2; got {text!r}")
    return values


def _parse_mask_values(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 0,128,255; got {text!r}") from None
    if len(values) < 2 or len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"expected at least two distinct values such as 0,255; got {text!r}")
    return values


def _parse_label_names(text: str) -> dict[int, str] | Path:
    if "=" not in text:
        return Path(text)
    names = {}
    for part in filter(None, (item.strip() for item in text.split(","))):
        value, _, name = part.partition("=")
        if not value.strip().isdigit() or not name.strip():
            raise argparse.ArgumentTypeError(f"expected VALUE=NAME pairs such as 1=Liver,2=Spleen; got {part!r}")
        names[int(value)] = name.strip()
    return names


def _label_names(args: argparse.Namespace) -> dict[int, str] | None:
    """Names given with --label-names, else those of an MSD dataset.json beside a reference folder."""
    if isinstance(args.label_names, Path):
        return read_label_names(args.label_names)
    if args.label_names is not None:
        return args.label_names
    dataset_json = find_dataset_json(args.ref) if Path(args.ref).is_dir() else None
    if dataset_json is None:
        return None
    logger.info("Label names from %s", dataset_json)
    return read_label_names(dataset_json)


def run(args: argparse.Namespace) -> int:
    if args.csv is not None:  # refused before the (possibly long) computation
        check_writable(args.csv, overwrite=args.overwrite)
        refuse_replacing_inputs([args.csv], [args.pred, args.ref, *([args.roi_mask] if args.roi_mask else [])])
    if not args.nsd_tolerance >= 0:
        raise InputError(f"--nsd-tolerance must be >= 0 mm, got {args.nsd_tolerance}.")
    with _case_progress(enabled=not args.json and not args.quiet) as on_case:
        result = evaluate(
            args.pred,
            args.ref,
            labels=args.labels,
            label_names=_label_names(args),
            nsd_tolerance_mm=args.nsd_tolerance,
            surface=not args.no_surface,
            on_case=on_case,
            roi_mask=args.roi_mask,
            mask_values=args.mask_values,
        )
    if args.csv is not None:
        result.to_csv(args.csv, overwrite=args.overwrite)
    if args.json:
        print(result.to_json())
        return 0
    print(format_report(result, per_case=args.per_case or len(result.cases) == 1))
    if args.csv is not None:
        print(f"\nWrote {len(result.to_rows())} rows to {args.csv}")
    return 0


@contextlib.contextmanager
def _case_progress(*, enabled: bool) -> Iterator[Callable[[CaseEvaluation], None] | None]:
    """A tqdm bar over evaluated cases on stderr, only when it is a terminal; yields the per-case callback."""
    if not (enabled and sys.stderr.isatty()):
        yield None
        return
    from tqdm import tqdm

    with tqdm(desc="evaluating", unit="case", file=sys.stderr, leave=False) as bar:
        yield lambda _case: bar.update(1)
