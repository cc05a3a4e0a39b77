"""FCN-8s-style fully convolutional network (Long, Shelhamer & Darrell 2015), in 2D and 3D.

A VGG-like encoder of five stages (``blocks_per_level`` conv-norm-act layers, then 2x max pooling: output
strides 2, 4, 8, 16, 32) and a bottleneck block at stride 32 (FCN's convolutionalised fc6/fc7). 1x1 score
convolutions read strides 8, 16 and 32; the stride-32 scores are upsampled 2x (learned transposed
convolution, initialised to bilinear interpolation) and added to the stride-16 scores, upsampled 2x and added
to the stride-8 scores, and upsampled 8x to the input resolution.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from .base import NetworkConfig, SegmentationNetwork, check_choice, check_fraction, check_int, check_ints
from .blocks import ACTIVATIONS, NORMS, LayerFactory, init_he_

STAGES = 5
DEFAULT_FEATURES = {2: (32, 64, 128, 256, 512), 3: (16, 32, 64, 128, 256)}


@dataclass(frozen=True)
class FCNConfig(NetworkConfig):
    """Options of ``"fcn"``: ``features`` (channels of the 5 encoder stages; default 2D
    ``[32, 64, 128, 256, 512]``, 3D ``[16, 32, 64, 128, 256]``), ``blocks_per_level`` (conv-norm-act layers per
    stage), ``norm`` (``"instance"`` | ``"batch"`` | ``"group"`` with ``norm_groups``), ``activation``
    (``"relu"`` | ``"leakyrelu"``), ``dropout`` (channel dropout after activations)."""

    features: Sequence[int] | None = None
    blocks_per_level: int = 2
    norm: str = "instance"
    norm_groups: int = 8
    activation: str = "relu"
    dropout: float = 0.0

    NAMES: ClassVar[tuple[str, ...]] = ("fcn",)

    def __post_init__(self) -> None:
        super().__post_init__()
        features = DEFAULT_FEATURES[self.spatial_dims] if self.features is None else self.features
        object.__setattr__(self, "features", check_ints(self.name, "features", features, minimum=1, length=STAGES))
        check_int(self.name, "blocks_per_level", self.blocks_per_level, minimum=1)
        check_choice(self.name, "norm", self.norm, NORMS)
        check_int(self.name, "norm_groups", self.norm_groups, minimum=1)
        check_choice(self.name, "activation", self.activation, ACTIVATIONS)
        object.__setattr__(self, "dropout", check_fraction(self.name, "dropout", self.dropout))


class FCN(SegmentationNetwork):
    """FCN-8s built from an :class:`FCNConfig`; input sizes must be multiples of 32."""

    def __init__(self, settings: FCNConfig) -> None:
        dims = settings.spatial_dims
        super().__init__(settings, (2**STAGES,) * dims)
        layers = LayerFactory(dims, settings.norm, settings.norm_groups, settings.activation, settings.dropout)
        features, convs = settings.features, settings.blocks_per_level
        stages: list[nn.Module] = [
            nn.Sequential(
                layers.conv_block(settings.in_channels if i == 0 else features[i - 1], channels, 3, convs),
                layers.max_pool(2),
            )
            for i, channels in enumerate(features)
        ]
        stages.append(layers.conv_block(features[-1], features[-1], 3, convs))  # fc6/fc7 at stride 32
        self.encoder = nn.ModuleList(stages)
        classes = settings.out_channels
        self.score8 = layers.conv(features[2], classes)
        self.score16 = layers.conv(features[3], classes)
        self.score32 = layers.conv(features[4], classes)
        self.up32 = layers.transposed_conv(classes, classes, 4, 2)
        self.up16 = layers.transposed_conv(classes, classes, 4, 2)
        self.up8 = layers.transposed_conv(classes, classes, 16, 8)
        init_he_(self)
        for up in (self.up32, self.up16, self.up8):
            _init_bilinear(up.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        stride_outputs = []
        for stage in self.encoder:
            x = stage(x)
            stride_outputs.append(x)
        scores = self.up32(self.score32(x)) + self.score16(stride_outputs[3])
        scores = self.up16(scores) + self.score8(stride_outputs[2])
        return self.up8(scores)


@torch.no_grad()
def _init_bilinear(weight: torch.Tensor) -> None:
    """Transposed-convolution weights (C, C, *kernel) that interpolate each channel (multi)linearly."""
    kernel = torch.ones(())
    for size in weight.shape[2:]:
        factor = (size + 1) // 2
        centre = factor - 1 if size % 2 else factor - 0.5
        axis = 1 - (torch.arange(size, dtype=torch.float32) - centre).abs() / factor
        kernel = kernel[..., None] * axis
    weight.zero_()
    for channel in range(min(weight.shape[:2])):
        weight[channel, channel] = kernel
