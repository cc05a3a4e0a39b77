"""The command-line form of a :class:`~.config.TrainingConfig`: the options of ``medsegcnn train`` and ``plan``
that set its fields, and the config they build.

The command line (:mod:`MedSegCNNLib.cli`) declares them with :func:`add_plan_arguments` and
:func:`add_config_arguments`; :func:`MedSegCNNLib.jobs.commands.train_args` writes argument lists
against :func:`config_options`. Nothing here imports torch.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from ..data.dataset import checked_mask_values
from ..errors import InputError
from ..runtime import DEVICES, PRECISIONS
from .config import OPTIMIZERS, SCHEDULES, TrainingConfig

#: The trainable networks and the losses: the names of :data:`MedSegCNNLib.networks.NETWORK_NAMES` and
#: :data:`MedSegCNNLib.losses.LOSS_NAMES`, written out because those modules import torch (a test keeps them equal).
NETWORK_CHOICES = ("unet", "resunet", "fcn", "segnet", "deeplab")
LOSS_CHOICES = ("dice_ce", "dice", "ce", "focal")
#: ``TrainingConfig`` field -> the ``argparse`` destination of the option that sets it directly.
FIELD_OPTIONS = {
    "spatial_dims": "dims",
    "epochs": "epochs",
    "steps_per_epoch": "steps_per_epoch",
    "batch_size": "batch_size",
    "patch_size": "patch_size",
    "folds": "folds",
    "optimizer": "optimizer",
    "learning_rate": "lr",
    "lr_schedule": "lr_schedule",
    "loss": "loss",
    "device": "device",
    "precision": "precision",
    "time_budget_minutes": "time_budget",
    "seed": "seed",
    "init_from": "init_from",
    "mask_values": "mask_values",
    "licence": "licence",
}


def add_plan_arguments(parser: argparse.ArgumentParser) -> None:
    """The options that ``train`` and ``plan`` share: the data, device, precision, budget, patch and batch."""
    parser.add_argument(
        "--data",
        required=True,
        metavar="DIR",
        help="dataset folder: MSD/nnU-Net (dataset.json, imagesTr, labelsTr) or images/ with masks/ (labels/, gt/...)",
    )
    parser.add_argument(
        "--dims",
        type=int,
        choices=(2, 3),
        help="2D (volumes slice by slice) or 3D network (default: 2 for 2D images and single-slice volumes, else 3)",
    )
    parser.add_argument(
        "--mask-values",
        type=_parse_mask_values,
        metavar="V0,V1,...",
        help="raw mask values of labels 0, 1, ... in order, e.g. 0,255 or 0,128,255 (default: the mask rule)",
    )
    parser.add_argument(
        "--allow-partial-channels",
        action="store_true",
        help="go on when a further channel of a case leaves over 1 percent of its first uncovered (0 there)",
    )
    parser.add_argument("--network", choices=NETWORK_CHOICES, help="architecture (default unet)")
    parser.add_argument("--fold", type=_parse_fold, metavar="K|all", help="validation fold, or 'all' for no validation")
    parser.add_argument("--folds", type=int, metavar="N", help="number of cross-validation folds (default 5)")
    parser.add_argument("--device", choices=DEVICES)
    parser.add_argument(
        "--precision", choices=PRECISIONS, help="auto: bf16/fp16 on CUDA; on a CPU bf16 where measured faster"
    )
    parser.add_argument(
        "--time-budget",
        type=float,
        metavar="MIN",
        help="minutes for the whole run: the steps, network and schedule are planned to fill it (wins over --epochs)",
    )
    parser.add_argument("--patch-size", type=_parse_sizes, metavar="Z,Y,X", help="patch size in voxels (Y,X in 2D)")
    parser.add_argument("--batch-size", type=int, metavar="N")
    parser.add_argument("--config", type=Path, metavar="JSON", help="a JSON file of TrainingConfig fields")
    parser.add_argument(
        "--config-json", metavar="TEXT", help="TrainingConfig fields as a JSON object (over --config, under options)"
    )


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """The further options of ``train`` that set :class:`TrainingConfig` fields."""
    parser.add_argument("--epochs", type=int, metavar="N", help="length without a time budget (default 100)")
    parser.add_argument("--steps-per-epoch", type=int, metavar="N")
    parser.add_argument("--optimizer", choices=OPTIMIZERS)
    parser.add_argument("--lr", type=float, metavar="LR", help="initial learning rate")
    parser.add_argument("--lr-schedule", choices=SCHEDULES, help="decay after the warm-up")
    parser.add_argument("--loss", choices=LOSS_CHOICES)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--init-from", metavar="MODEL", help="fine-tune from a model folder (or a .pt state dict)")
    parser.add_argument("--freeze-encoder", action="store_true", help="with --init-from: train the decoder only")
    parser.add_argument("--compile", action="store_true", help="torch.compile the network (slow start, faster steps)")
    parser.add_argument(
        "--licence",
        metavar="SPDX_OR_TEXT",
        help="licence of the weights, stored in the model card: an SPDX identifier (e.g. CC-BY-4.0) or free text "
        "(default: none, shown as unknown)",
    )


def config_options() -> dict[str, argparse.Action]:
    """The options of :func:`add_plan_arguments` and :func:`add_config_arguments` by destination name."""
    parser = argparse.ArgumentParser(add_help=False)
    add_plan_arguments(parser)
    add_config_arguments(parser)
    return {action.dest: action for action in parser._actions if action.option_strings}


def _parse_sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected sizes such as 40,56,40; got {text!r}") from None
    if any(size < 1 for size in sizes):
        raise argparse.ArgumentTypeError(f"sizes must be positive; got {text!r}")
    return sizes


def _parse_mask_values(text: str) -> tuple[int, ...]:
    try:
        return checked_mask_values([int(part) for part in text.split(",")])
    except (ValueError, InputError):
        raise argparse.ArgumentTypeError(
            f"expected at least two distinct raw mask values >= 0 such as 0,255 or 0,128,255; got {text!r}"
        ) from None


def _parse_fold(text: str) -> int | str:
    if text == "all":
        return text
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a fold number or 'all'; got {text!r}")
    return int(text)


def build_config(args: argparse.Namespace) -> TrainingConfig:
    """The TrainingConfig of ``--config`` (if any), updated by ``--config-json``, with the explicit options
    applied on top."""
    values: dict = {}
    if args.config is not None:
        try:
            values = json.loads(args.config.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            raise InputError(f"Could not read --config {args.config}: {error}") from None
        if not isinstance(values, dict):
            raise InputError(f"--config {args.config} must hold a JSON object of training options.")
    given = vars(args)
    if given.get("config_json") is not None:
        try:
            inline = json.loads(given["config_json"])
        except json.JSONDecodeError as error:
            raise InputError(f"--config-json is not valid JSON: {error}") from None
        if not isinstance(inline, dict):
            raise InputError("--config-json must be a JSON object of training options.")
        values.update(inline)
    options = {field: given.get(option) for field, option in FIELD_OPTIONS.items()}
    values.update({key: value for key, value in options.items() if value is not None})
    if args.fold is not None:
        values["fold"] = None if args.fold == "all" else args.fold
    if args.network is not None:
        values["network"] = {**values.get("network", {}), "name": args.network}
    for name in ("compile", "allow_partial_channels"):
        if given.get(name):
            values[name] = True
    if given.get("freeze_encoder"):
        if not values.get("init_from"):
            raise InputError("--freeze-encoder needs --init-from MODEL (a pretrained encoder to keep).")
        values["freeze_encoder"] = True
    return TrainingConfig.from_dict(values)


def config_arguments(config: TrainingConfig) -> list[str]:
    """The ``train`` options that give ``config`` (the inverse of :func:`build_config`): an option for each field
    that differs from :class:`TrainingConfig`'s default and has one, the other changed fields in ``--config-json``."""
    default = TrainingConfig()
    changed = {
        item.name
        for item in dataclasses.fields(TrainingConfig)
        if getattr(config, item.name) != getattr(default, item.name)
    }
    options = config_options()
    args: list[str] = []
    for name, destination in FIELD_OPTIONS.items():
        if name in changed:
            value = getattr(config, name)
            text = (
                ",".join(map(str, value))
                if isinstance(value, tuple)
                else repr(value)
                if isinstance(value, float)
                else str(value)
            )
            args += [options[destination].option_strings[0], text]
            changed.discard(name)
    if "fold" in changed:
        args += ["--fold", "all" if config.fold is None else str(config.fold)]
        changed.discard("fold")
    if "network" in changed and set(config.network) == {"name"}:
        args += ["--network", config.network["name"]]
        changed.discard("network")
    flags = (
        ("compile", "--compile"),
        ("freeze_encoder", "--freeze-encoder"),
        ("allow_partial_channels", "--allow-partial-channels"),
    )
    for name, flag in flags:
        if name in changed and getattr(config, name):
            args.append(flag)
            changed.discard(name)
    if changed:
        data = config.to_dict()
        args += ["--config-json", json.dumps({name: data[name] for name in sorted(changed)})]
    return args
