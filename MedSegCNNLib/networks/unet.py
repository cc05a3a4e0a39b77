"""U-Net (Ronneberger et al. 2015; nnU-Net's configurable form, Isensee et al. 2021) and its residual
("resunet") and attention-gated variants, in 2D and 3D, with anisotropic kernels and strides.

Levels 0..L-1 have ``features[i]`` channels. The encoder level i > 0 downsamples by ``strides[i - 1]`` (a
strided first convolution, or max pooling), then applies ``blocks_per_level`` conv-norm-act layers with
``kernel_sizes[i]`` (one residual unit holding them when ``residual``). Each decoder level upsamples the
coarser features to ``features[i]`` channels (transposed convolution with kernel = stride, or 1x1 convolution
followed by linear interpolation), optionally gates the skip connection (``attention``), concatenates
``[upsampled, skip]`` and applies ``blocks_per_level`` conv-norm-act layers. A 1x1 convolution gives the
logits; with ``deep_supervision`` every decoder level has one, and in training mode ``forward`` returns the
list of logits of levels 0..L-2 (full resolution first).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

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
    check_per_level,
)
from .blocks import ACTIVATIONS, INTERPOLATION, NORMS, AttentionGate, LayerFactory, init_he_

DEFAULT_FEATURES = {2: (32, 64, 128, 256, 512), 3: (32, 64, 128, 256, 320)}


@dataclass(frozen=True)
class UNetConfig(NetworkConfig):
    """Options of ``"unet"`` and ``"resunet"`` (see the module docstring).

    - ``features``: channels per level, L >= 2 levels (default 2D ``[32, 64, 128, 256, 512]``, 3D
      ``[32, 64, 128, 256, 320]``).
    - ``kernel_sizes``: odd convolution kernel per level: one integer, or L entries each an integer or a list
      per axis in array order (e.g. ``[[1, 3, 3], [3, 3, 3], ...]``).
    - ``strides``: downsampling factor entering levels 1..L-1: one integer, or L-1 entries (integer or list
      per axis, e.g. ``[[1, 2, 2], [2, 2, 2], ...]``). L entries whose first is 1 (nnU-Net / MONAI DynUNet
      layout) are accepted and stored without the first.
    - ``blocks_per_level``: conv-norm-act layers per level (encoder and decoder).
    - ``norm``: ``"instance"`` | ``"batch"`` | ``"group"`` (``norm_groups`` groups); ``activation``:
      ``"leakyrelu"`` (slope 0.01) | ``"relu"``; ``dropout``: channel dropout probability after activations.
    - ``downsample``: ``"conv"`` (strided convolution) | ``"maxpool"``; ``upsample``: ``"transpose"`` |
      ``"interpolate"``.
    - ``deep_supervision``, ``attention``: booleans; ``residual``: residual encoder units (default: true for
      ``"resunet"``, false for ``"unet"``).
    """

    features: Sequence[int] | None = None
    kernel_sizes: Any = 3
    strides: Any = 2
    blocks_per_level: int = 2
    norm: str = "instance"
    norm_groups: int = 8
    activation: str = "leakyrelu"
    dropout: float = 0.0
    downsample: str = "conv"
    upsample: str = "transpose"
    deep_supervision: bool = False
    residual: bool | None = None
    attention: bool = False

    NAMES: ClassVar[tuple[str, ...]] = ("unet", "resunet")

    def __post_init__(self) -> None:
        super().__post_init__()
        name, dims = self.name, self.spatial_dims
        features = DEFAULT_FEATURES[dims] if self.features is None else self.features
        features = check_ints(name, "features", features, minimum=1)
        if len(features) < 2:
            raise InputError(f"{name} option 'features' needs at least 2 levels; got {list(features)}.")
        levels = len(features)
        kernels = check_per_level(name, "kernel_sizes", self.kernel_sizes, levels=levels, dims=dims, minimum=1)
        if any(k % 2 == 0 for kernel in kernels for k in kernel):
            raise InputError(f"{name} option 'kernel_sizes' must be odd (3, 5, 1, ...); got {self.kernel_sizes!r}.")
        strides = self.strides
        if isinstance(strides, Sequence) and not isinstance(strides, str) and len(strides) == levels:
            first = strides[0]
            if first != 1 and not (isinstance(first, Sequence) and list(first) == [1] * dims):
                raise InputError(
                    f"{name} option 'strides' with {levels} entries must start with 1 (the first level keeps the "
                    f"input size); otherwise give the {levels - 1} downsampling strides. Got {strides!r}."
                )
            strides = strides[1:]
        strides = check_per_level(name, "strides", strides, levels=levels - 1, dims=dims, minimum=1)
        check_int(name, "blocks_per_level", self.blocks_per_level, minimum=1)
        check_choice(name, "norm", self.norm, NORMS)
        check_int(name, "norm_groups", self.norm_groups, minimum=1)
        check_choice(name, "activation", self.activation, ACTIVATIONS)
        dropout = check_fraction(name, "dropout", self.dropout)
        check_choice(name, "downsample", self.downsample, ("conv", "maxpool"))
        check_choice(name, "upsample", self.upsample, ("transpose", "interpolate"))
        check_bool(name, "deep_supervision", self.deep_supervision)
        check_bool(name, "attention", self.attention)
        residual = name == "resunet" if self.residual is None else check_bool(name, "residual", self.residual)
        for field, value in (
            ("features", features),
            ("kernel_sizes", kernels),
            ("strides", strides),
            ("dropout", dropout),
            ("residual", residual),
        ):
            object.__setattr__(self, field, value)


class UNet(SegmentationNetwork):
    """U-Net family network built from a :class:`UNetConfig`."""

    def __init__(self, settings: UNetConfig) -> None:
        features, kernels, strides = settings.features, settings.kernel_sizes, settings.strides
        divisor = tuple(math.prod(axis) for axis in zip(*strides, strict=True))
        super().__init__(settings, divisor)
        layers = LayerFactory(
            settings.spatial_dims, settings.norm, settings.norm_groups, settings.activation, settings.dropout
        )
        convs = settings.blocks_per_level
        block = layers.residual_unit if settings.residual else layers.conv_block

        levels = []
        for i, channels in enumerate(features):
            in_channels = settings.in_channels if i == 0 else features[i - 1]
            stride = 1 if i == 0 else strides[i - 1]
            if i > 0 and settings.downsample == "maxpool":
                levels.append(nn.Sequential(layers.max_pool(stride), block(in_channels, channels, kernels[i], convs)))
            else:
                levels.append(block(in_channels, channels, kernels[i], convs, stride))
        self.encoder = nn.ModuleList(levels)

        stages = []
        for i in reversed(range(len(features) - 1)):
            if settings.upsample == "transpose":
                up = layers.transposed_conv(features[i + 1], features[i], strides[i], strides[i])
            else:
                up = InterpolateUp(layers.conv(features[i + 1], features[i], bias=False), strides[i])
            gate = AttentionGate(layers, features[i], features[i]) if settings.attention else None
            stages.append(DecoderStage(up, gate, layers.conv_block(2 * features[i], features[i], kernels[i], convs)))
        self.decoder = nn.ModuleList(stages)  # coarse to fine
        head_levels = len(features) - 1 if settings.deep_supervision else 1
        self.heads = nn.ModuleList(
            layers.conv(features[i], settings.out_channels) for i in range(head_levels)
        )  # heads[i] reads decoder level i
        init_he_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        self.check_input(x)
        skips = []
        for level in self.encoder:
            x = level(x)
            skips.append(x)
        x = skips.pop()
        all_levels = self.settings.deep_supervision and self.training
        decoded = []
        for stage in self.decoder:
            x = stage(x, skips.pop())
            if all_levels:
                decoded.append(x)
        if not all_levels:
            return self.heads[0](x)
        return [head(features) for head, features in zip(self.heads, reversed(decoded), strict=True)]


class DecoderStage(nn.Module):
    """Upsample, gate the skip connection (optional), concatenate ``[upsampled, skip]``, convolve."""

    def __init__(self, up: nn.Module, gate: nn.Module | None, block: nn.Module) -> None:
        super().__init__()
        self.up = up
        self.gate = gate
        self.block = block

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.up(x)
        if self.gate is not None:
            skip = self.gate(skip, x)
        return self.block(torch.cat([x, skip], 1))


class InterpolateUp(nn.Module):
    """1x1 convolution, then linear interpolation by ``stride`` (the same as interpolating first: both are
    linear and interpolation weights sum to 1, but convolving at the coarse resolution is cheaper)."""

    def __init__(self, conv: nn.Module, stride: tuple[int, ...]) -> None:
        super().__init__()
        self.conv = conv
        self.scale = tuple(float(s) for s in stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mode = INTERPOLATION[x.dim() - 2]
        return F.interpolate(self.conv(x), scale_factor=self.scale, mode=mode, align_corners=False)
