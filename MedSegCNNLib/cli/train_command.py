"""``medsegcnn train``: train a segmentation network on a dataset folder."""

from __future__ import annotations

import argparse

from ..progress import JsonLinesProgress, TqdmProgress
from ..training.arguments import add_config_arguments, add_plan_arguments, build_config

EXIT_CANCELLED = 130


def add_parser(commands: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "train",
        parents=parents,
        help="train a 2D/3D segmentation network on a dataset folder",
        description=(
            "Train a segmentation network on an MSD / nnU-Net dataset folder (dataset.json, imagesTr, labelsTr) "
            "and save it as a model folder (weights in safetensors + a JSON model card). Options not given are "
            "planned for the data, this device and the time budget (see `medsegcnn plan`); --config takes any "
            "TrainingConfig field as JSON."
        ),
    )
    add_plan_arguments(parser)
    parser.add_argument("--output", required=True, metavar="MODEL_DIR", help="output folder of the run")
    add_config_arguments(parser)
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the run saved in MODEL_DIR from its last checkpoint (one stopped before its first starts again)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a previous run's files in MODEL_DIR (kept until the new run's first checkpoint; others stay)",
    )
    parser.add_argument(
        "--progress", choices=("bar", "json", "none"), default="bar", help="progress display (json: one event per line)"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..training.trainer import train  # imports torch: only when training

    config = build_config(args)
    progress = {"bar": TqdmProgress(), "json": JsonLinesProgress(), "none": None}[args.progress]
    result = train(args.data, args.output, config, resume=args.resume, overwrite=args.overwrite, on_event=progress)
    if args.progress != "json":
        print(f"Training {result.status} after {result.steps_done} steps ({result.epochs_done} epochs).")
        if result.best_epoch is not None:
            print(f"Best validation mean Dice {result.best_mean_dice:.4f} at epoch {result.best_epoch}.")
        if result.model is not None:
            print(f"Model: {result.model}")
    return EXIT_CANCELLED if result.status == "cancelled" else 0
