"""nnU-Net v2's U-Nets (dynamic_network_architectures' ``PlainConvUNet`` and ``ResidualEncoderUNet``), rebuilt
with MedSegCNN's blocks for inference, in 2D and 3D: the networks ``"nnunet-plain-unet"`` and
``"nnunet-residual-unet"`` (:class:`NNUNetUNetConfig`, :class:`NNUNetUNet`).

Stages 0..n-1 have ``features[i]`` channels. Entering stage i the input is downsampled by ``strides[i]`` (per
axis, array order; ``strides[0]`` is all ones) and every convolution of stage i has the odd kernel
``kernel_sizes[i]`` with "same" padding. A *conv-norm-act layer* is a convolution (bias: ``conv_bias``),
normalisation (``norm``: instance, batch or none, with ``norm_eps`` and ``norm_affine``) and a leaky ReLU of
slope ``negative_slope`` (0: ReLU).

- Plain encoder: stage i is ``encoder_blocks[i]`` conv-norm-act layers, the first strided.
- Residual encoder: a stem (one conv-norm-act layer with ``kernel_sizes[0]`` to ``stem_channels``, default
  ``features[0]``), then stage i is ``encoder_blocks[i]`` ResNet-D basic blocks ``act(conv2(conv1(x)) +
  skip(x))``: ``conv1`` a conv-norm-act layer (strided in the first block), ``conv2`` the same without activation,
  ``skip`` the identity, or average pooling by the stride and/or a 1x1 convolution without bias + norm where the
  size or the channel count changes.
- Decoder stage j = 0..n-2 (coarse to fine) at level i = n-2-j: a transposed convolution (kernel = stride =
  ``strides[i + 1]``, bias: ``conv_bias``) to ``features[i]`` channels, concatenation ``[upsampled, skip of stage
  i]``, ``decoder_convs[j]`` conv-norm-act layers.
- A 1x1 convolution with bias gives the logits at full resolution (nnU-Net's deep-supervision heads of the coarser
  levels serve training only and are not built; neither is dropout, which acts only in training).

nnU-Net's files are translated in :mod:`MedSegCNNLib.interop`: a plans file's ``architecture`` entry into this
configuration (:mod:`~MedSegCNNLib.interop.nnunet_plans`), a checkpoint's ``network_weights`` into this state dict
(:mod:`~MedSegCNNLib.interop.nnunet_weights`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from ..errors import InputError
from .base import (
    NetworkConfig,
    SegmentationNetwork,
    check_bool,
    check_choice,
    check_finite,
    check_int_range,
    check_ints,
    check_per_level,
)
from .blocks import ConvNormAct, InstanceNorm, ResidualUnit, init_he_, same_padding
from .unet import DecoderStage

PLAIN_UNET = "nnunet-plain-unet"
RESIDUAL_UNET = "nnunet-residual-unet"

MAX_STAGES = 16
MAX_CHANNELS = 65536
MAX_KERNEL = 15
MAX_STRIDE = 16
MAX_CONVS = 64


@dataclass(frozen=True)
class NNUNetUNetConfig(NetworkConfig):
    """Options of ``"nnunet-plain-unet"`` and ``"nnunet-residual-unet"`` (see the module docstring).

    - ``features``: channels per stage, 2 to 16 stages of 1..65536.
    - ``kernel_sizes``, ``strides``: per stage, an integer or a list per axis (array order); kernels odd in
      1..15, strides in 1..16 with ``strides[0]`` all ones.
    - ``encoder_blocks``: per stage, conv-norm-act layers (plain) or basic blocks (residual), 1..64.
    - ``decoder_convs``: per decoder stage, coarse to fine (n-1 entries), conv-norm-act layers, 1..64.
    - ``conv_bias``, ``norm`` (``"instance"`` | ``"batch"`` | ``"none"``), ``norm_eps`` (> 0), ``norm_affine``,
      ``negative_slope``; ``stem_channels`` (residual only; null: ``features[0]``).
    """

    features: Sequence[int]
    kernel_sizes: Any
    strides: Any
    encoder_blocks: Sequence[int]
    decoder_convs: Sequence[int]
    conv_bias: bool = True
    norm: str = "instance"
    norm_eps: float = 1e-5
    norm_affine: bool = True
    negative_slope: float = 0.01
    stem_channels: int | None = None

    NAMES: ClassVar[tuple[str, ...]] = (PLAIN_UNET, RESIDUAL_UNET)

    def __post_init__(self) -> None:
        super().__post_init__()
        name, dims = self.name, self.spatial_dims
        for option in ("in_channels", "out_channels"):
            check_int_range(name, option, getattr(self, option), 1, MAX_CHANNELS)
        features = _bounded_ints(name, "features", self.features, 1, MAX_CHANNELS)
        if not 2 <= len(features) <= MAX_STAGES:
            raise InputError(f"{name} option 'features' needs 2 to {MAX_STAGES} stages; got {len(features)}.")
        stages = len(features)
        kernels = check_per_level(name, "kernel_sizes", self.kernel_sizes, levels=stages, dims=dims, minimum=1)
        if any(k % 2 == 0 or k > MAX_KERNEL for kernel in kernels for k in kernel):
            raise InputError(f"{name} option 'kernel_sizes' must be odd, 1 to {MAX_KERNEL}; got {self.kernel_sizes!r}.")
        strides = check_per_level(name, "strides", self.strides, levels=stages, dims=dims, minimum=1)
        if any(s > MAX_STRIDE for stride in strides for s in stride) or any(s != 1 for s in strides[0]):
            raise InputError(
                f"{name} option 'strides' must be 1 to {MAX_STRIDE}, and all ones for stage 0 (the logits have the "
                f"input's size); got {self.strides!r}."
            )
        encoder = _bounded_ints(name, "encoder_blocks", self.encoder_blocks, 1, MAX_CONVS, length=stages)
        decoder = _bounded_ints(name, "decoder_convs", self.decoder_convs, 1, MAX_CONVS, length=stages - 1)
        check_bool(name, "conv_bias", self.conv_bias)
        check_choice(name, "norm", self.norm, ("instance", "batch", "none"))
        eps = check_finite(name, "norm_eps", self.norm_eps)
        if eps <= 0:
            raise InputError(f"{name} option 'norm_eps' must be positive; got {self.norm_eps!r}.")
        check_bool(name, "norm_affine", self.norm_affine)
        slope = check_finite(name, "negative_slope", self.negative_slope)
        if self.stem_channels is not None:
            if name != RESIDUAL_UNET:
                raise InputError(f"{name} has no stem; 'stem_channels' must be null, got {self.stem_channels!r}.")
            check_int_range(name, "stem_channels", self.stem_channels, 1, MAX_CHANNELS)
        for field, value in (
            ("features", features),
            ("kernel_sizes", kernels),
            ("strides", strides),
            ("encoder_blocks", encoder),
            ("decoder_convs", decoder),
            ("norm_eps", eps),
            ("negative_slope", slope),
        ):
            object.__setattr__(self, field, value)


class NNUNetUNet(SegmentationNetwork):
    """nnU-Net's PlainConvUNet or ResidualEncoderUNet (by ``settings.name``) built from a :class:`NNUNetUNetConfig`;
    returns the full-resolution logits."""

    def __init__(self, settings: NNUNetUNetConfig) -> None:
        features, kernels, strides = settings.features, settings.kernel_sizes, settings.strides
        super().__init__(settings, tuple(math.prod(axis) for axis in zip(*strides, strict=True)))
        layers = _Layers(
            settings.spatial_dims,
            settings.conv_bias,
            settings.norm,
            settings.norm_eps,
            settings.norm_affine,
            settings.negative_slope,
        )
        residual = settings.name == RESIDUAL_UNET
        channels = settings.in_channels
        stem = None
        if residual:
            stem_channels = settings.stem_channels or features[0]
            stem = layers.conv_norm_act(channels, stem_channels, kernels[0])
            channels = stem_channels
        stages = []
        for width, kernel, stride, blocks in zip(features, kernels, strides, settings.encoder_blocks, strict=True):
            stack = layers.residual_stack if residual else layers.conv_stack
            stages.append(stack(channels, width, kernel, blocks, stride))
            channels = width
        self.encoder = NNUNetEncoder(stem, stages)
        levels = reversed(range(len(features) - 1))
        self.decoder = nn.ModuleList(
            DecoderStage(
                layers.transposed_conv(features[i + 1], features[i], strides[i + 1]),
                None,
                layers.conv_stack(2 * features[i], features[i], kernels[i], convs),
            )
            for convs, i in zip(settings.decoder_convs, levels, strict=True)
        )  # coarse to fine
        self.head = layers.conv(features[0], settings.out_channels, (1,) * settings.spatial_dims, bias=True)
        init_he_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        skips = self.encoder(x)
        x = skips.pop()
        for stage in self.decoder:
            x = stage(x, skips.pop())
        return self.head(x)


class NNUNetEncoder(nn.Module):
    """The optional ``stem``, then the ``stages``; returns every stage's output (the skips, finest first)."""

    def __init__(self, stem: nn.Module | None, stages: Sequence[nn.Module]) -> None:
        super().__init__()
        self.stem = stem
        self.stages = nn.ModuleList(stages)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if self.stem is not None:
            x = self.stem(x)
        skips = []
        for stage in self.stages:
            x = stage(x)
            skips.append(x)
        return skips


Stride = int | tuple[int, ...]
"""A stride: one for every axis, or one per axis."""


@dataclass(frozen=True)
class _Layers:
    """Builds the layers of one network: ``dims`` spatial axes, convolution ``bias``, ``norm`` ("instance",
    "batch" or "none") with ``eps`` and ``affine``, leaky ReLU ``slope``."""

    dims: int
    bias: bool
    norm: str
    eps: float
    affine: bool
    slope: float

    def conv(
        self, in_channels: int, out_channels: int, kernel: tuple[int, ...], stride: Stride = 1, *, bias: bool
    ) -> nn.Module:
        conv_class = nn.Conv2d if self.dims == 2 else nn.Conv3d
        return conv_class(in_channels, out_channels, kernel, stride, padding=same_padding(kernel), bias=bias)

    def transposed_conv(self, in_channels: int, out_channels: int, stride: tuple[int, ...]) -> nn.Module:
        conv_class = nn.ConvTranspose2d if self.dims == 2 else nn.ConvTranspose3d
        return conv_class(in_channels, out_channels, stride, stride, bias=self.bias)

    def norm_layer(self, channels: int) -> nn.Module:
        if self.norm == "instance":
            if self.affine:
                return InstanceNorm(channels, self.eps)
            return nn.GroupNorm(channels, channels, self.eps, affine=False)
        if self.norm == "batch":
            return (nn.BatchNorm2d if self.dims == 2 else nn.BatchNorm3d)(channels, self.eps, affine=self.affine)
        return nn.Identity()

    def conv_norm_act(
        self,
        in_channels: int,
        out_channels: int,
        kernel: tuple[int, ...],
        stride: Stride = 1,
        *,
        activation: bool = True,
        bias: bool | None = None,
    ) -> ConvNormAct:
        conv = self.conv(in_channels, out_channels, kernel, stride, bias=self.bias if bias is None else bias)
        return ConvNormAct(conv, self.norm_layer(out_channels), self.slope if activation else None, None)

    def conv_stack(
        self,
        in_channels: int,
        out_channels: int,
        kernel: tuple[int, ...],
        convs: int,
        stride: Stride = 1,
    ) -> nn.Sequential:
        """``convs`` conv-norm-act layers, the first with ``stride``."""
        return nn.Sequential(
            *(
                self.conv_norm_act(out_channels if j else in_channels, out_channels, kernel, 1 if j else stride)
                for j in range(convs)
            )
        )

    def residual_stack(
        self, in_channels: int, out_channels: int, kernel: tuple[int, ...], blocks: int, stride: tuple[int, ...]
    ) -> nn.Sequential:
        """``blocks`` basic blocks, the first with ``stride``."""
        ones = (1,) * self.dims
        return nn.Sequential(
            *(
                self.basic_block(out_channels if b else in_channels, out_channels, kernel, ones if b else stride)
                for b in range(blocks)
            )
        )

    def basic_block(
        self, in_channels: int, out_channels: int, kernel: tuple[int, ...], stride: tuple[int, ...]
    ) -> ResidualUnit:
        """ResNet-D basic block (see the module docstring)."""
        layers = nn.Sequential(
            self.conv_norm_act(in_channels, out_channels, kernel, stride),
            self.conv_norm_act(out_channels, out_channels, kernel, activation=False),
        )
        skip: list[nn.Module] = []
        if any(s != 1 for s in stride):
            skip.append((nn.AvgPool2d if self.dims == 2 else nn.AvgPool3d)(stride, stride))
        if in_channels != out_channels:
            skip.append(self.conv_norm_act(in_channels, out_channels, (1,) * self.dims, activation=False, bias=False))
        return ResidualUnit(layers, nn.Sequential(*skip) if skip else None, self.slope, None)


def _bounded_ints(
    network: str, option: str, value: Any, low: int, high: int, *, length: int | None = None
) -> tuple[int, ...]:
    items = check_ints(network, option, value, minimum=low, length=length)
    for item in items:
        check_int_range(network, option, item, low, high)
    return items
