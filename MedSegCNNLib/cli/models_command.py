"""``medsegcnn models``: the models in the registry (bundled and user folders) with their labels, spacing and
reported accuracy and licence, or one model's card in full.

Interface for ``cli/main.py`` (as the other ``*_command`` modules): ``add_parser(commands, parents)`` adds the
sub-command and sets ``run``; ``run(args)`` prints and returns the exit status (0).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..metrics.report import format_number, render_table
from ..registry import ModelEntry, find_model, format_spacing, list_models

HEADER = ("Name", "Title", "Source", "Dims", "Modality", "Labels", "Spacing", "Val Dice", "Val cases", "Licence")


def add_parser(commands: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "models",
        parents=parents,
        help="list the available models (bundled and in your folders) with labels, spacing and accuracy",
        description=(
            "List the models MedSegCNN knows: the bundled ones and every model folder or .zip directly inside "
            "each --folder. Give a name or path to show that model's card in full."
        ),
    )
    parser.add_argument("model", nargs="?", metavar="NAME_OR_PATH", help="show this model's card (a name or a path)")
    parser.add_argument(
        "--folder",
        action="append",
        type=Path,
        default=[],
        metavar="DIR",
        help="also list the models in this folder (repeatable)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.model is not None:
        entry = find_model(args.model, args.folder)
        print(json.dumps(entry.to_dict(), indent=2) if args.json else entry.summary())
        return 0
    entries = list_models(args.folder)
    if args.json:
        print(json.dumps({"models": [entry.to_dict() for entry in entries]}, indent=2))
        return 0
    if not entries:
        print("No models found. Train one with `medsegcnn train`, or pass --folder DIR with your model folders.")
        return 0
    print(render_table(HEADER, [_row(entry) for entry in entries]))
    print("\nVal Dice: the training run's best validation mean Dice on its held-out cases (Val cases).")
    print("Licence: of the weights, as the card gives it (unknown: check the terms of the model's source).")
    print("One model's card (with the licence text): medsegcnn models NAME")
    return 0


def _row(entry: ModelEntry) -> list[str]:
    return [
        entry.name,
        entry.title,
        entry.source,
        f"{entry.dims}D",
        ", ".join(entry.channels),
        ", ".join(label.name for label in entry.labels),
        format_spacing(entry.spacing),
        "-" if entry.mean_dice is None else format_number(entry.mean_dice),
        str(len(entry.validation_cases)),
        "unknown" if entry.licence is None else entry.licence.spdx or "see card",
    ]
