"""A trained model ready for prediction: network(s) on a device plus what the model card says about them."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import load_model
from ..checkpoint.model_card import ModelCard
from ..data.preprocessing import PreprocessingPlan
from ..errors import InputError
from ..image import LabelInfo
from ..registry import resolve_model_folder


@dataclass(frozen=True)
class SegmentationModel:
    """One model, or an ensemble of models sharing labels, channels, preprocessing and patch size.

    ``networks`` are in evaluation mode on ``device``; ``card`` is the (first) model card; ``sources`` the model
    folders they were loaded from, one per network (empty for networks given in memory). ``engines`` holds what
    prediction prepares once per model (:mod:`.engine`: compiled networks; :mod:`.precision_gate`: decisions).
    """

    networks: tuple[torch.nn.Module, ...]
    card: ModelCard
    device: torch.device
    sources: tuple[Path, ...] = ()
    engines: dict[Any, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def plan(self) -> PreprocessingPlan:
        return self.card.preprocessing

    @property
    def patch_size(self) -> tuple[int, ...]:
        return self.card.patch_size

    @property
    def spatial_dims(self) -> int:
        return self.card.spatial_dims

    @property
    def channels(self) -> list[str]:
        return list(self.card.channels)

    @property
    def labels(self) -> list[LabelInfo]:
        """The labels except the background."""
        return list(self.card.foreground_labels)

    @property
    def num_classes(self) -> int:
        return len(self.card.labels)


def load_segmentation_model(
    paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], device: torch.device, *, allow_large: bool = False
) -> SegmentationModel:
    """Load one model or an ensemble (several folders, e.g. the k folds of a cross-validation) onto ``device``.

    The models of an ensemble must agree on labels, channels, preprocessing, dimensionality and patch size.
    ``allow_large`` lifts the size bound of :func:`~MedSegCNNLib.checkpoint.load_model` (genuinely huge models).
    """
    sources = [paths] if isinstance(paths, str | os.PathLike) else list(paths)
    if not sources:
        raise InputError("No model given; pass a model folder (or several for an ensemble).")
    networks, cards, folders = [], [], []
    for source in sources:
        folders.append(resolve_model_folder(source))
        network, card = load_model(folders[-1], device=device, allow_large=allow_large)
        if device.type != "mps":  # channels-last convolutions are markedly faster on CPU (and on CUDA)
            layout = torch.channels_last_3d if card.spatial_dims == 3 else torch.channels_last
            network = network.to(memory_format=layout)
        networks.append(network.eval())
        cards.append(card)
    for key in ("labels", "channels", "preprocessing", "spatial_dims", "patch_size"):
        if any(getattr(card, key) != getattr(cards[0], key) for card in cards[1:]):
            raise InputError(f"The models of the ensemble differ in their {key}; only like models can be combined.")
    return SegmentationModel(networks=tuple(networks), card=cards[0], device=device, sources=tuple(folders))
