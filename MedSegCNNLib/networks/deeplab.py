"""DeepLabV3 (Chen et al. 2017) and, with ``decoder``, DeepLabV3+ (Chen et al. 2018), in 2D and 3D.

Encoder: residual stages with ``features[i]`` channels (one residual unit of ``blocks_per_level`` convolutions
each). Stage 0 keeps the input resolution; the next log2(``output_stride``) stages halve it (strided
convolution); later stages keep it and dilate their convolutions by 2, 4, ... instead. ASPP on the encoder
output: a 1x1 convolution, three 3x3 convolutions dilated by ``aspp_rates`` (default (6, 12, 18) for output
stride 16, doubled for 8) and image-level average pooling, concatenated and projected by a 1x1 convolution to
``aspp_channels``. A 1x1 convolution gives the logits, linearly interpolated to the input size. With
``decoder``, the ASPP output is first interpolated to stride 4, concatenated with the stride-4 encoder
features reduced to ``low_level_channels`` and refined by two 3x3 convolutions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError
from .base import (
    NetworkConfig,
    SegmentationNetwork,
    check_bool,
    check_choice,
    check_fraction,
    check_int,
    check_ints,
)
from .blocks import ACTIVATIONS, INTERPOLATION, NORMS, LayerFactory, init_he_

DEFAULT_FEATURES = {2: (32, 64, 128, 256, 512), 3: (16, 32, 64, 128, 256)}
DEFAULT_ASPP_CHANNELS = {2: 256, 3: 128}
DEFAULT_RATES = {16: (6, 12, 18), 8: (12, 24, 36)}
LOW_LEVEL_STRIDE = 4


@dataclass(frozen=True)
class DeepLabConfig(NetworkConfig):
    """Options of ``"deeplab"`` (see the module docstring).

    ``features``: channels of the encoder stages (default 2D ``[32, 64, 128, 256, 512]``, 3D
    ``[16, 32, 64, 128, 256]``; at least log2(output_stride) + 1 stages); ``blocks_per_level``: convolutions
    per residual unit; ``output_stride``: 8 or 16; ``aspp_channels`` (default 256 in 2D, 128 in 3D);
    ``aspp_rates``: three dilation rates; ``decoder``: DeepLabV3+ decoder; ``low_level_channels``; ``norm``,
    ``norm_groups``, ``activation``, ``dropout`` as for the U-Net.
    """

    features: Sequence[int] | None = None
    blocks_per_level: int = 2
    output_stride: int = 16
    aspp_channels: int | None = None
    aspp_rates: Sequence[int] | None = None
    decoder: bool = False
    low_level_channels: int = 48
    norm: str = "instance"
    norm_groups: int = 8
    activation: str = "relu"
    dropout: float = 0.0

    NAMES: ClassVar[tuple[str, ...]] = ("deeplab",)

    def __post_init__(self) -> None:
        super().__post_init__()
        name, dims = self.name, self.spatial_dims
        check_choice(name, "output_stride", self.output_stride, (8, 16))
        features = DEFAULT_FEATURES[dims] if self.features is None else self.features
        features = check_ints(name, "features", features, minimum=1)
        downsamplings = int(math.log2(self.output_stride))
        if len(features) < downsamplings + 1:
            raise InputError(
                f"{name} with output_stride {self.output_stride} needs at least {downsamplings + 1} stages in "
                f"'features'; got {list(features)}."
            )
        aspp_channels = DEFAULT_ASPP_CHANNELS[dims] if self.aspp_channels is None else self.aspp_channels
        check_int(name, "aspp_channels", aspp_channels, minimum=1)
        rates = DEFAULT_RATES[self.output_stride] if self.aspp_rates is None else self.aspp_rates
        rates = check_ints(name, "aspp_rates", rates, minimum=1, length=3)
        check_int(name, "blocks_per_level", self.blocks_per_level, minimum=1)
        check_bool(name, "decoder", self.decoder)
        check_int(name, "low_level_channels", self.low_level_channels, minimum=1)
        check_choice(name, "norm", self.norm, NORMS)
        check_int(name, "norm_groups", self.norm_groups, minimum=1)
        check_choice(name, "activation", self.activation, ACTIVATIONS)
        dropout = check_fraction(name, "dropout", self.dropout)
        for field, value in (
            ("features", features),
            ("aspp_channels", aspp_channels),
            ("aspp_rates", rates),
            ("dropout", dropout),
        ):
            object.__setattr__(self, field, value)


class DeepLab(SegmentationNetwork):
    """DeepLabV3(+) built from a :class:`DeepLabConfig`; input sizes must be multiples of ``output_stride``."""

    def __init__(self, settings: DeepLabConfig) -> None:
        dims = settings.spatial_dims
        super().__init__(settings, (settings.output_stride,) * dims)
        layers = LayerFactory(dims, settings.norm, settings.norm_groups, settings.activation, settings.dropout)
        features, convs = settings.features, settings.blocks_per_level
        downsamplings = int(math.log2(settings.output_stride))
        stages = []
        for i, channels in enumerate(features):
            strided = 0 < i <= downsamplings
            dilation = 2 ** max(i - downsamplings, 0)
            in_channels = settings.in_channels if i == 0 else features[i - 1]
            stages.append(layers.residual_unit(in_channels, channels, 3, convs, 2 if strided else 1, dilation=dilation))
        self.encoder = nn.ModuleList(stages)
        self._low_level_stage = int(math.log2(LOW_LEVEL_STRIDE))
        width = settings.aspp_channels
        self.aspp = ASPP(layers, features[-1], width, settings.aspp_rates)
        if settings.decoder:
            self.low_level = layers.conv_norm_act(features[self._low_level_stage], settings.low_level_channels, 1)
            self.refine = layers.conv_block(width + settings.low_level_channels, width, 3, 2)
        self.head = layers.conv(width, settings.out_channels)
        init_he_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        size, mode = x.shape[2:], INTERPOLATION[x.dim() - 2]
        low_level = None
        for i, stage in enumerate(self.encoder):
            x = stage(x)
            if i == self._low_level_stage:
                low_level = x
        x = self.aspp(x)
        if self.settings.decoder:
            low_level = self.low_level(low_level)
            x = F.interpolate(x, size=low_level.shape[2:], mode=mode, align_corners=False)
            x = self.refine(torch.cat([x, low_level], 1))
        return F.interpolate(self.head(x), size=size, mode=mode, align_corners=False)


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: 1x1 conv, three dilated 3x3 convs, image pooling; concatenated and
    projected to ``channels`` by a 1x1 conv-norm-act."""

    def __init__(self, layers: LayerFactory, in_channels: int, channels: int, rates: Sequence[int]) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            [
                layers.conv_norm_act(in_channels, channels, 1),
                *(layers.conv_norm_act(in_channels, channels, 3, dilation=rate) for rate in rates),
            ]
        )
        self.pooling = layers.conv(in_channels, channels)  # on a single voxel: bias, no normalization
        self.slope = layers.slope
        self.project = layers.conv_norm_act(channels * (len(rates) + 2), channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = x.mean(tuple(range(2, x.dim())), keepdim=True)
        pooled = F.leaky_relu(self.pooling(pooled), self.slope).expand(-1, -1, *x.shape[2:])
        return self.project(torch.cat([*(branch(x) for branch in self.branches), pooled], 1))
