"""The model card of a trained network: what a training run records about the weights it saves.

The card holds the dataset's name, channels and labels (colours from :func:`~MedSegCNNLib.image.seg_nrrd.
default_label_info`, background black), the network, patch and preprocessing, the licence, and a ``training``
section: which weights (``best`` validation epoch or ``final``), the cases, fold, epochs done, seed, world
size, configuration, validation Dice (:func:`validation_summary`) and the plan as it ran.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..checkpoint import ModelCard
from ..checkpoint.model_card import Licence
from ..data.dataset import Dataset
from ..data.preprocessing import PreprocessingPlan
from ..image.seg_nrrd import default_label_info
from .config import TrainingConfig


def validation_summary(
    which: str,
    *,
    epoch: int,
    best_epoch: int | None,
    best_mean_dice: float,
    best_dice: Mapping[int, float],
    last_dice: Mapping[int, float],
) -> dict[str, Any] | None:
    """The validation Dice of the weights saved as ``which`` ("best" or "final", the weights of epoch
    ``epoch``), with the best epoch's; ``None`` before any validation."""
    if best_epoch is None:
        return None
    dice = best_dice if which == "best" else last_dice
    return {
        "epoch": best_epoch if which == "best" else epoch,
        "mean_dice": float(np.mean(list(dice.values()))),
        "dice": {str(label): value for label, value in dice.items()},
        "best_epoch": best_epoch,
        "best_mean_dice": best_mean_dice,
    }


def training_card(
    which: str,
    *,
    where: str,
    dataset: Dataset,
    network: Mapping[str, Any],
    config: TrainingConfig,
    patch_size: Sequence[int],
    preprocessing: PreprocessingPlan,
    train_cases: Sequence[str],
    val_cases: Sequence[str],
    epochs_done: int,
    world_size: int,
    validation: dict[str, Any] | None,
    plan: dict[str, Any],
) -> ModelCard:
    """The validated card of the weights saved as ``which`` ("best" or "final") of the run ``where`` describes;
    ``network`` is the network's configuration, ``plan`` the training plan as it ran."""
    labels = {
        str(value): {"name": name, "color": list(default_label_info(value).color) if value else [0.0, 0.0, 0.0]}
        for value, name in sorted(dataset.label_names.items())
    }
    licence = Licence.parse(config.licence or "")
    card = {
        "name": dataset.name,
        "network": network,
        "spatial_dims": config.spatial_dims,
        "patch_size": list(patch_size),
        "channels": list(dataset.channel_names),
        "labels": labels,
        "preprocessing": preprocessing.to_dict(),
        "licence": None if licence is None else licence.to_dict(),
        "training": {
            "weights": which,
            "dataset": dataset.name,
            "train_cases": list(train_cases),
            "val_cases": list(val_cases),
            "fold": config.fold,
            "folds": config.folds,
            "epochs_done": epochs_done,
            "seed": config.seed,
            "world_size": world_size,
            "config": config.to_dict(),
            "validation": validation,
            "plan": plan,
        },
    }
    return ModelCard.new(card, where=where)


def with_epochs_done(card: ModelCard, epochs_done: int) -> ModelCard:
    """``card`` (of the best epoch's weights) recording that the run went on to ``epochs_done`` epochs."""
    return card.updated(training=dataclasses.replace(card.training, epochs_done=epochs_done).to_dict())
