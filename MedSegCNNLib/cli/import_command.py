"""``medsegcnn import nnunet``: a model trained elsewhere, made a MedSegCNN model folder."""

from __future__ import annotations

import argparse


def add_parser(commands: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "import",
        parents=parents,
        help="import a model trained with another tool (nnU-Net v2)",
        description="Import a model trained with another tool into a MedSegCNN model folder.",
    )
    sources = parser.add_subparsers(dest="source", metavar="SOURCE", required=True)
    nnunet = sources.add_parser(
        "nnunet",
        parents=parents,
        help="an nnU-Net v2 results folder (<Trainer>__<Plans>__<configuration>)",
        description=(
            "Import an nnU-Net v2 results folder (DatasetXXX_Name/<Trainer>__<Plans>__<configuration>, with "
            "dataset.json, plans.json and fold_K/checkpoint_final.pth) into a MedSegCNN model folder: the folds "
            "become one ensemble, the plans nnU-Net's exact preprocessing. Checkpoints are read without running "
            "code (torch.load weights_only with an allow-list); nnunetv2 is not needed."
        ),
    )
    nnunet.add_argument("results_folder", metavar="RESULTS_DIR", help="the nnU-Net results folder")
    nnunet.add_argument("--output", "-o", required=True, metavar="MODEL_DIR", help="the model folder to write")
    nnunet.add_argument(
        "--folds",
        metavar="FOLDS",
        help="comma-separated folds, e.g. 0,1,2,3,4, or 'all' for fold_all (default: every numbered fold trained)",
    )
    nnunet.add_argument(
        "--checkpoint", choices=("final", "best"), default="final", help="which checkpoint (default final)"
    )
    nnunet.add_argument("--overwrite", action="store_true", help="replace an existing model folder")
    nnunet.add_argument(
        "--reorient-to-ras",
        action="store_true",
        help="the network expects images reoriented to the closest canonical RAS order (TotalSegmentator's models)",
    )
    nnunet.set_defaults(run=run_nnunet)


def run_nnunet(args: argparse.Namespace) -> int:
    from ..checkpoint.model_card import read_model_card
    from ..interop.nnunet_import import import_nnunet

    folds = [fold.strip() for fold in args.folds.split(",") if fold.strip()] if args.folds else None
    folder = import_nnunet(
        args.results_folder, args.output, folds=folds, checkpoint=args.checkpoint, overwrite=args.overwrite,
        reorient_to_ras=args.reorient_to_ras,
    )  # fmt: skip
    card = read_model_card(folder)
    labels = ", ".join(label.name for label in card.foreground_labels)
    print(f"Imported {card.title} into {folder}: {len(card.foreground_labels)} labels ({labels}).")
    print(f"Segment with: medsegcnn predict --model {folder} --input IMAGE --output OUTPUT")
    return 0
