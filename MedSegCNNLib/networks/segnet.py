"""SegNet (Badrinarayanan, Kendall & Cipolla 2017), in 2D and 3D.

Encoder level i: ``blocks_per_level`` conv-norm-ReLU layers to ``features[i]`` channels, then 2x max pooling
that keeps the indices of the maxima. Decoder level i (coarse to fine): max-unpooling with those indices (each
value goes back to the position of its maximum, zeros elsewhere), then ``blocks_per_level`` conv-norm-ReLU
layers to ``features[i - 1]`` channels (``features[0]`` at level 0), and a 1x1 convolution to the logits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .base import NetworkConfig, SegmentationNetwork, check_choice, check_fraction, check_int, check_ints
from .blocks import ACTIVATIONS, NORMS, LayerFactory, init_he_

DEFAULT_FEATURES = (32, 64, 128, 256)


@dataclass(frozen=True)
class SegNetConfig(NetworkConfig):
    """Options of ``"segnet"``: ``features`` (channels per level, one 2x pooling per level; default
    ``[32, 64, 128, 256]``), ``blocks_per_level``, ``norm`` (``"instance"`` | ``"batch"`` | ``"group"`` with
    ``norm_groups``), ``activation`` (``"relu"`` | ``"leakyrelu"``), ``dropout``."""

    features: Sequence[int] = DEFAULT_FEATURES
    blocks_per_level: int = 2
    norm: str = "instance"
    norm_groups: int = 8
    activation: str = "relu"
    dropout: float = 0.0

    NAMES: ClassVar[tuple[str, ...]] = ("segnet",)

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "features", check_ints(self.name, "features", self.features, minimum=1))
        check_int(self.name, "blocks_per_level", self.blocks_per_level, minimum=1)
        check_choice(self.name, "norm", self.norm, NORMS)
        check_int(self.name, "norm_groups", self.norm_groups, minimum=1)
        check_choice(self.name, "activation", self.activation, ACTIVATIONS)
        object.__setattr__(self, "dropout", check_fraction(self.name, "dropout", self.dropout))


class SegNet(SegmentationNetwork):
    """SegNet built from a :class:`SegNetConfig`; input sizes must be multiples of ``2 ** len(features)``."""

    def __init__(self, settings: SegNetConfig) -> None:
        dims = settings.spatial_dims
        features, convs = settings.features, settings.blocks_per_level
        super().__init__(settings, (2 ** len(features),) * dims)
        layers = LayerFactory(dims, settings.norm, settings.norm_groups, settings.activation, settings.dropout)
        self.encoder = nn.ModuleList(
            layers.conv_block(settings.in_channels if i == 0 else features[i - 1], channels, 3, convs)
            for i, channels in enumerate(features)
        )
        self.decoder = nn.ModuleList(
            layers.conv_block(features[i], features[max(i - 1, 0)], 3, convs) for i in reversed(range(len(features)))
        )  # coarse to fine
        self.head = layers.conv(features[0], settings.out_channels)
        init_he_(self)
        self._pool = F.max_pool2d if dims == 2 else F.max_pool3d
        self._unpool = F.max_unpool2d if dims == 2 else F.max_unpool3d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        pooled = []
        for block in self.encoder:
            x = block(x)
            size = x.shape[2:]
            x, indices = self._pool(x, 2, return_indices=True)
            pooled.append((indices, size))
        for block in self.decoder:
            indices, size = pooled.pop()
            x = block(self._unpool(x, indices, 2, output_size=size))
        return self.head(x)
