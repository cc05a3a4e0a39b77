"""``medsegcnn demo``: the whole pipeline on the bundled sample cases, in one output folder."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..progress import JsonLinesProgress, TqdmProgress
from ..runtime import DEVICES


def add_parser(commands: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "demo",
        parents=parents,
        help="train, segment and evaluate on the bundled sample cases",
        description=(
            "Train a 3D U-Net on the bundled hippocampus MRI cases (a 5-minute budget, planned for this device), "
            "segment the held-out cases, and print their Dice/HD95. Everything is written "
            "into one folder: model, segmentations (.nii.gz, .seg.nrrd), overlay PNGs, curves, a report."
        ),
    )
    parser.add_argument("--output", type=Path, default=Path("medsegcnn-demo"), help="output folder")
    parser.add_argument("--data", type=Path, help="another MSD dataset folder instead of the sample cases")
    parser.add_argument("--quick", action="store_true", help="a seconds-long smoke test (barely trained model)")
    parser.add_argument("--device", default="auto", choices=DEVICES)
    parser.add_argument("--overwrite", action="store_true", help="replace the files of an earlier demo")
    parser.add_argument("--progress", choices=("bar", "json", "none"), default="bar")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..demo import run_demo
    from ..metrics.report import format_report

    progress = {"bar": TqdmProgress(), "json": JsonLinesProgress(), "none": None}[args.progress]
    result = run_demo(
        args.output, data=args.data, quick=args.quick, device=args.device, overwrite=args.overwrite, on_event=progress
    )
    if args.progress != "json":
        print(format_report(result.evaluation, per_case=True))
        print(
            f"\nTrained in {result.training_seconds:.0f} s, segmented {len(result.evaluation.cases)} held-out cases "
            f"in {result.prediction_seconds:.1f} s. Everything is in {result.output}/ (report.md, segmentations/, "
            "overlays/, model_run/)."
        )
    return 0
