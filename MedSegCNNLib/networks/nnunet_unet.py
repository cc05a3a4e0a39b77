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

:func:`network_config_from_plans` turns a plans file's ``architecture`` entry into this configuration (operations
through an allow-list; nothing named in a file is imported) and :func:`state_dict_from_nnunet` renames a
checkpoint's ``network_weights``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar

import torch
from torch import nn

from ..errors import InputError
from .base import NetworkConfig, SegmentationNetwork, check_bool, check_choice, check_ints, check_per_level
from .blocks import ConvNormAct, InstanceNorm, ResidualUnit, init_he_, same_padding
from .unet import DecoderStage

PLAIN_UNET = "nnunet-plain-unet"
RESIDUAL_UNET = "nnunet-residual-unet"

NNUNET_NETWORK_CLASSES: Mapping[str, str] = MappingProxyType(
    {
        "dynamic_network_architectures.architectures.unet.PlainConvUNet": PLAIN_UNET,
        "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet": RESIDUAL_UNET,
        # nnunetv2 converts older plans to this module path, which does not exist; it then finds the class by name
        "dynamic_network_architectures.architectures.residual_unet.ResidualEncoderUNet": RESIDUAL_UNET,
        "PlainConvUNet": PLAIN_UNET,  # older plans' UNet_class_name
        "ResidualEncoderUNet": RESIDUAL_UNET,
    }
)
"""nnU-Net network class name (dotted, or bare as in older plans) -> MedSegCNN network name."""

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
            _bounded(name, option, getattr(self, option), 1, MAX_CHANNELS)
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
        eps = _finite(name, "norm_eps", self.norm_eps)
        if eps <= 0:
            raise InputError(f"{name} option 'norm_eps' must be positive; got {self.norm_eps!r}.")
        check_bool(name, "norm_affine", self.norm_affine)
        slope = _finite(name, "negative_slope", self.negative_slope)
        if self.stem_channels is not None:
            if name != RESIDUAL_UNET:
                raise InputError(f"{name} has no stem; 'stem_channels' must be null, got {self.stem_channels!r}.")
            _bounded(name, "stem_channels", self.stem_channels, 1, MAX_CHANNELS)
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


def _bounded(network: str, option: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InputError(f"{network} option {option!r} must be an integer in {low}..{high}; got {value!r}.")
    return value


def _bounded_ints(
    network: str, option: str, value: Any, low: int, high: int, *, length: int | None = None
) -> tuple[int, ...]:
    items = check_ints(network, option, value, minimum=low, length=length)
    for item in items:
        _bounded(network, option, item, low, high)
    return items


def _finite(network: str, option: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InputError(f"{network} option {option!r} must be a finite number; got {value!r}.")
    return float(value)


# nnU-Net's plans: the architecture entry.

_IMPORTED_KEYS = ("conv_op", "norm_op", "dropout_op", "nonlin")
_COMMON_KEYS = frozenset(
    {
        "n_stages",
        "features_per_stage",
        "kernel_sizes",
        "strides",
        "n_conv_per_stage_decoder",
        "conv_bias",
        "norm_op_kwargs",
        "dropout_op_kwargs",
        "nonlin_kwargs",
        "deep_supervision",
        *_IMPORTED_KEYS,
    }
)
_ENCODER_KEY = {PLAIN_UNET: "n_conv_per_stage", RESIDUAL_UNET: "n_blocks_per_stage"}
_ARCH_KEYS = {
    PLAIN_UNET: _COMMON_KEYS | {"n_conv_per_stage", "nonlin_first"},
    RESIDUAL_UNET: _COMMON_KEYS | {"n_blocks_per_stage", "block", "bottleneck_channels", "stem_channels"},
}
_REQUIRED_KEYS = ("n_stages", "features_per_stage", "conv_op", "kernel_sizes", "strides", "n_conv_per_stage_decoder")
_BASIC_BLOCK = "dynamic_network_architectures.building_blocks.residual.BasicBlockD"


def _spellings(*classes: type) -> dict[str, type]:
    """The names plans give ``classes`` by: ``torch.nn.modules.conv.Conv3d`` (module path) and ``torch.nn.Conv3d``."""
    return {
        spelling: cls
        for cls in classes
        for spelling in (f"{cls.__module__}.{cls.__name__}", f"torch.nn.{cls.__name__}")
    }


_CONV_DIMS: dict[type, int] = {nn.Conv2d: 2, nn.Conv3d: 3}
_NORMS: dict[type, tuple[str, int]] = {
    nn.InstanceNorm2d: ("instance", 2),
    nn.InstanceNorm3d: ("instance", 3),
    nn.BatchNorm2d: ("batch", 2),
    nn.BatchNorm3d: ("batch", 3),
}
_OPERATIONS: dict[str, dict[str, type]] = {
    "conv_op": _spellings(*_CONV_DIMS),
    "norm_op": _spellings(*_NORMS),
    "dropout_op": _spellings(nn.Dropout, nn.Dropout2d, nn.Dropout3d),
    "nonlin": _spellings(nn.LeakyReLU, nn.ReLU),
}
"""The allow-list: arch_kwargs key -> accepted operation name -> the torch class it names (nothing is imported)."""


def network_config_from_plans(
    class_name: str,
    arch_kwargs: Mapping[str, Any],
    requires_import: Sequence[str],
    in_channels: int,
    out_channels: int,
) -> dict[str, Any]:
    """The network configuration (for a model card and :func:`~MedSegCNNLib.networks.build_network`) of a plans
    configuration's ``architecture`` entry: ``network_class_name``, ``arch_kwargs`` and ``_kw_requires_import``,
    with ``in_channels`` image channels and ``out_channels`` network outputs.

    Operation names are mapped through an allow-list of torch classes, never imported; unknown classes,
    operations or keys and invalid values raise :class:`InputError` naming them. Dropout and deep supervision,
    which act only in training, are checked and left out.
    """
    name = NNUNET_NETWORK_CLASSES.get(class_name) if isinstance(class_name, str) else None
    if name is None:
        raise InputError(
            f"Unsupported nnU-Net network class {class_name!r}; MedSegCNN imports "
            f"{', '.join(sorted(NNUNET_NETWORK_CLASSES))}."
        )
    where = f"nnU-Net {class_name.rsplit('.', 1)[-1]}"
    if not isinstance(arch_kwargs, Mapping):
        raise InputError(f"{where}: arch_kwargs must be an object; got {type(arch_kwargs).__name__}.")
    allowed = _ARCH_KEYS[name]
    unknown = sorted(str(key) for key in arch_kwargs if key not in allowed)
    if unknown:
        raise InputError(f"{where}: unsupported arch_kwargs {unknown}; supported: {sorted(allowed)}.")
    missing = [key for key in (*_REQUIRED_KEYS, _ENCODER_KEY[name]) if key not in arch_kwargs]
    if missing:
        raise InputError(f"{where}: arch_kwargs lack {missing}.")
    operations = _operations(where, name, arch_kwargs, requires_import)
    dims = _CONV_DIMS[operations["conv_op"]]
    stages = _bounded(where, "n_stages", arch_kwargs["n_stages"], 2, MAX_STAGES)
    config: dict[str, Any] = {
        "name": name,
        "spatial_dims": dims,
        "in_channels": in_channels,
        "out_channels": out_channels,
        "features": _per_stage(where, "features_per_stage", arch_kwargs["features_per_stage"], stages),
        "kernel_sizes": _per_stage(where, "kernel_sizes", arch_kwargs["kernel_sizes"], stages),
        "strides": _per_stage(where, "strides", arch_kwargs["strides"], stages),
        "encoder_blocks": _per_stage(where, _ENCODER_KEY[name], arch_kwargs[_ENCODER_KEY[name]], stages),
        "decoder_convs": _per_stage(
            where, "n_conv_per_stage_decoder", arch_kwargs["n_conv_per_stage_decoder"], stages - 1
        ),
        "conv_bias": check_bool(where, "conv_bias", arch_kwargs.get("conv_bias", False)),
        **_norm_options(where, operations.get("norm_op"), arch_kwargs.get("norm_op_kwargs")),
        "negative_slope": _activation_slope(where, operations["nonlin"], arch_kwargs.get("nonlin_kwargs")),
    }
    _check_training_only(where, operations.get("dropout_op"), arch_kwargs)
    if name == RESIDUAL_UNET:
        if arch_kwargs.get("bottleneck_channels") is not None:
            raise InputError(f"{where}: bottleneck blocks are not supported (bottleneck_channels must be null).")
        config["stem_channels"] = arch_kwargs.get("stem_channels")
    elif arch_kwargs.get("nonlin_first", False) is not False:
        raise InputError(f"{where}: nonlin_first={arch_kwargs['nonlin_first']!r} is not supported (only false).")
    return NNUNetUNetConfig.from_dict(config).to_dict()


def _operations(
    where: str, name: str, arch_kwargs: Mapping[str, Any], requires_import: Sequence[str]
) -> dict[str, type | None]:
    """The torch class (or None) each operation key of ``arch_kwargs`` names, through the allow-list."""
    imported = _IMPORTED_KEYS + (("block",) if name == RESIDUAL_UNET else ())
    if isinstance(requires_import, str | bytes) or not isinstance(requires_import, Sequence):
        raise InputError(f"{where}: _kw_requires_import must be a list of arch_kwargs keys; got {requires_import!r}.")
    foreign = [key for key in requires_import if key not in imported]
    if foreign:
        raise InputError(
            f"{where}: _kw_requires_import names {foreign}; MedSegCNN maps only {list(imported)} through its "
            "allow-list and never imports names from a file."
        )
    unlisted = [key for key in imported if isinstance(arch_kwargs.get(key), str) and key not in requires_import]
    if unlisted:
        raise InputError(f"{where}: arch_kwargs {unlisted} name classes but _kw_requires_import does not list them.")
    block = arch_kwargs.get("block", _BASIC_BLOCK)
    if block != _BASIC_BLOCK:
        raise InputError(f"{where}: unsupported block {block!r}; MedSegCNN supports {_BASIC_BLOCK}.")
    operations: dict[str, type | None] = {}
    for key, table in _OPERATIONS.items():
        value = arch_kwargs.get(key)
        if value is None and key in ("norm_op", "dropout_op"):
            operations[key] = None
        elif isinstance(value, str) and value in table:
            operations[key] = table[value]
        else:
            supported = sorted(f"{cls.__module__}.{cls.__name__}" for cls in set(table.values()))
            raise InputError(f"{where}: unsupported {key} {value!r}; supported: {supported}.")
    norm = operations["norm_op"]
    if norm is not None and _NORMS[norm][1] != _CONV_DIMS[operations["conv_op"]]:
        raise InputError(f"{where}: norm_op {arch_kwargs['norm_op']} does not match conv_op {arch_kwargs['conv_op']}.")
    return operations


def _per_stage(where: str, option: str, value: Any, count: int) -> Any:
    """nnU-Net's per-stage value: one value for every stage, or a list of ``count`` entries."""
    if isinstance(value, str | bytes | bool | Mapping):
        raise InputError(f"{where} option {option!r} must be an integer or a list; got {value!r}.")
    if not isinstance(value, Sequence):
        return [value] * count
    if len(value) != count:
        raise InputError(f"{where} option {option!r} needs {count} entries (one per stage); got {len(value)}.")
    return [list(entry) if isinstance(entry, Sequence) and not isinstance(entry, str) else entry for entry in value]


def _options(where: str, what: str, value: Any, allowed: Sequence[str]) -> Mapping[str, Any]:
    """``value`` (an object with keys among ``allowed``, or null: none) as a mapping."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InputError(f"{where}: {what} must be an object or null; got {value!r}.")
    unknown = sorted(str(key) for key in value if key not in allowed)
    if unknown:
        raise InputError(f"{where}: unsupported {what} {unknown}; supported: {list(allowed)}.")
    return value


def _norm_options(where: str, norm: type | None, kwargs: Any) -> dict[str, Any]:
    """``norm``, ``norm_eps`` and ``norm_affine`` of the norm class and its keyword arguments (torch's defaults:
    instance norm without, batch norm with affine parameters)."""
    if norm is None:
        return {"norm": "none", "norm_eps": 1e-5, "norm_affine": False}
    kind = _NORMS[norm][0]
    options = _options(where, "norm_op_kwargs", kwargs, ("eps", "affine", "momentum", "track_running_stats"))
    tracked = check_bool(where, "track_running_stats", options.get("track_running_stats", kind == "batch"))
    if tracked != (kind == "batch"):
        raise InputError(
            f"{where}: {kind} norm with track_running_stats={tracked} is not supported (instance norm uses each "
            "image's statistics, batch norm its running statistics)."
        )
    momentum = options.get("momentum")
    if momentum is not None:
        _finite(where, "momentum", momentum)  # used in training only
    eps = _finite(where, "eps", options.get("eps", 1e-5))
    affine = check_bool(where, "affine", options.get("affine", kind == "batch"))
    return {"norm": kind, "norm_eps": eps, "norm_affine": affine}


def _activation_slope(where: str, nonlin: type | None, kwargs: Any) -> float:
    """The negative slope of the activation class and its keyword arguments."""
    if nonlin is nn.ReLU:
        options = _options(where, "nonlin_kwargs", kwargs, ("inplace",))
        slope = 0.0
    else:
        options = _options(where, "nonlin_kwargs", kwargs, ("negative_slope", "inplace"))
        slope = _finite(where, "negative_slope", options.get("negative_slope", 0.01))
    check_bool(where, "inplace", options.get("inplace", False))
    return slope


def _check_training_only(where: str, dropout: type | None, arch_kwargs: Mapping[str, Any]) -> None:
    """Check the options that act only in training: dropout and deep supervision."""
    options = _options(where, "dropout_op_kwargs", arch_kwargs.get("dropout_op_kwargs"), ("p", "inplace"))
    if dropout is not None:
        p = _finite(where, "p", options.get("p", 0.5))
        if not 0 <= p <= 1:
            raise InputError(f"{where} option 'p' (dropout) must be in [0, 1]; got {p}.")
        check_bool(where, "inplace", options.get("inplace", False))
    check_bool(where, "deep_supervision", arch_kwargs.get("deep_supervision", False))


# nnU-Net's checkpoints: the state dict.

_WRAPPER_PREFIXES = ("module.", "_orig_mod.")
"""Prefixes of the names of a network wrapped by DistributedDataParallel or torch.compile."""

_ALIASES = (
    (re.compile(r"^decoder\.encoder\."), "encoder."),  # nnU-Net's decoder holds the encoder as a submodule
    (re.compile(r"\.all_modules\.0\."), ".conv."),  # a conv-norm-act layer lists its modules again
    (re.compile(r"\.all_modules\.[1-9]\d*\."), ".norm."),  # its only other module with state (dropout, act: none)
)
"""Second names nnU-Net's modules give the same tensors, and their first names."""

_DECODER_NAMES = (
    ("decoder.transpconvs.{j}.", "decoder.{j}.up."),
    ("decoder.stages.{j}.convs.{k}.", "decoder.{j}.block.{k}."),
)
_ENCODER_NAMES = {
    PLAIN_UNET: (("encoder.stages.{i}.0.convs.{k}.", "encoder.stages.{i}.{k}."),),
    RESIDUAL_UNET: (
        ("encoder.stem.convs.0.", "encoder.stem."),
        ("encoder.stages.{i}.blocks.{b}.conv1.", "encoder.stages.{i}.{b}.layers.0."),
        ("encoder.stages.{i}.blocks.{b}.conv2.", "encoder.stages.{i}.{b}.layers.1."),
        ("encoder.stages.{i}.blocks.{b}.skip.", "encoder.stages.{i}.{b}.shortcut."),
    ),
}
"""nnU-Net name prefix -> MedSegCNN name prefix (``{x}``: a number, kept); the rest of a name is the same."""
_TRAINING_HEAD = re.compile(r"^decoder\.seg_layers\.(\d+)\.")
"""nnU-Net's logits of decoder stage k; all but the last serve deep supervision in training."""
_FIRST_CONVOLUTIONS = ("encoder.stages.0.0.convs.0.conv.weight", "encoder.stem.convs.0.conv.weight")
"""The weights of the first convolution of nnU-Net's PlainConvUNet and ResidualEncoderUNet (its input channels)."""


def state_dict_from_nnunet(
    network_weights: Mapping[str, torch.Tensor], config: Mapping[str, Any]
) -> dict[str, torch.Tensor]:
    """The state dict of the network ``config`` describes (an ``"nnunet-plain-unet"`` or
    ``"nnunet-residual-unet"``) from nnU-Net's ``network_weights`` of that architecture (the same tensors).

    The names are mapped thus: a ``module.`` or ``_orig_mod.`` prefix on every name is removed; second names of
    one tensor (``decoder.encoder.*`` = ``encoder.*``, ``*.all_modules.0.*`` = ``*.conv.*``,
    ``*.all_modules.k.*`` = ``*.norm.*``) must hold equal values and are dropped; the deep-supervision heads
    ``decoder.seg_layers.0..n-3`` are dropped and ``decoder.seg_layers.{n-2}.*`` becomes ``head.*``; the other
    prefixes are renamed by the table in this module (e.g. ``decoder.transpconvs.{j}.`` -> ``decoder.{j}.up.``).
    Missing or unexpected names and shape mismatches raise :class:`InputError` naming them (in nnU-Net's names).
    """
    name = config.get("name") if isinstance(config, Mapping) else None
    if name not in NNUNetUNetConfig.NAMES:
        raise InputError(f"state_dict_from_nnunet converts {list(NNUNetUNetConfig.NAMES)}; the config is {name!r}.")
    settings = NNUNetUNetConfig.from_dict(config)
    with torch.device("meta"):  # names and shapes only, nothing allocated
        expected = {key: tensor.shape for key, tensor in NNUNetUNet(settings).state_dict().items()}
    weights = _unwrapped(network_weights)
    last = len(settings.features) - 2  # the decoder stage of the logits
    renames = [(_template_pattern(old), new) for old, new in (*_ENCODER_NAMES[name], *_DECODER_NAMES)]
    renames.append((_template_pattern(f"decoder.seg_layers.{last}."), "head."))

    converted: dict[str, tuple[str, torch.Tensor]] = {}  # own name -> (nnU-Net name, tensor)
    unexpected = []
    for key, tensor in _deduplicated(weights).items():
        head = _TRAINING_HEAD.match(key)
        if head and int(head[1]) < last:
            continue
        own = _renamed(key, renames)
        if own in expected and own not in converted:
            converted[own] = (key, tensor)
        else:
            unexpected.append(key)
    inverse = [(_template_pattern(new), old) for old, new in (*_ENCODER_NAMES[name], *_DECODER_NAMES)]
    inverse.append((_template_pattern("head."), f"decoder.seg_layers.{last}."))
    missing = [_renamed(own, inverse) or own for own in expected if own not in converted]
    wrong = [
        f"{key} {tuple(tensor.shape)} (expected {tuple(expected[own])})"
        for own, (key, tensor) in converted.items()
        if tensor.shape != expected[own]
    ]
    problems = "; ".join(
        f"{label} ({len(keys)}): {', '.join(keys[:5])}{', ...' if len(keys) > 5 else ''}"
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
        if keys
    )
    if problems:
        raise InputError(f"The nnU-Net weights do not fit the {name} of the plans: {problems}.")
    return {own: converted[own][1] for own in expected}


def nnunet_weights_channels(network_weights: Mapping[str, torch.Tensor]) -> tuple[int | None, int | None]:
    """``(input channels, outputs)`` of the nnU-Net network whose ``network_weights`` these are: the input
    channels of its first convolution (PlainConvUNet's first stage, ResidualEncoderUNet's stem) and the outputs of
    its logit heads (``decoder.seg_layers.k``); None for either that the weights do not show."""
    weights = _unwrapped(network_weights)
    first = next((weights[key] for key in _FIRST_CONVOLUTIONS if key in weights), None)
    heads = [tensor for key, tensor in weights.items() if _TRAINING_HEAD.match(key) and key.endswith(".weight")]
    inputs = int(first.shape[1]) if first is not None and first.ndim > 1 else None
    return inputs, int(heads[0].shape[0]) if heads and heads[0].ndim > 0 else None


def _unwrapped(network_weights: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """``network_weights`` checked (names to tensors) and without DDP / torch.compile prefixes."""
    if not isinstance(network_weights, Mapping) or not network_weights:
        raise InputError("nnU-Net network_weights must be a non-empty mapping of names to tensors.")
    bad = [
        repr(key)
        for key, value in network_weights.items()
        if not isinstance(key, str) or not isinstance(value, torch.Tensor)
    ]
    if bad:
        raise InputError(f"nnU-Net network_weights must map names to tensors; not so for {', '.join(bad[:5])}.")
    weights = dict(network_weights)
    while prefix := next((p for p in _WRAPPER_PREFIXES if all(key.startswith(p) for key in weights)), None):
        weights = {key.removeprefix(prefix): value for key, value in weights.items()}
    return weights


def _deduplicated(weights: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``weights`` under first names only (see :data:`_ALIASES`); every second name must hold the same values."""
    first: dict[str, tuple[str, torch.Tensor]] = {}
    for key in sorted(weights, key=lambda key: _dealiased(key) != key):  # first names first
        tensor = weights[key]
        name = _dealiased(key)
        if name not in first:
            first[name] = (key, tensor)
            continue
        other, value = first[name]
        if not _same(value, tensor):
            raise InputError(
                f"The nnU-Net weights hold different values under {other} and {key}, two names of one tensor; "
                "the checkpoint is damaged."
            )
    return {name: tensor for name, (_, tensor) in first.items()}


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether ``a`` and ``b`` hold the same values (views of the same memory are not compared)."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    return (a.data_ptr() == b.data_ptr() and a.stride() == b.stride()) or torch.equal(a, b)


def _dealiased(key: str) -> str:
    for pattern, replacement in _ALIASES:
        key = pattern.sub(replacement, key, count=1)
    return key


def _template_pattern(template: str) -> re.Pattern[str]:
    """A pattern matching names that start with ``template``, whose ``{x}`` fields are numbers (group ``x``)."""
    parts = re.split(r"\{(\w+)\}", template)
    return re.compile(
        "^" + "".join(re.escape(part) if n % 2 == 0 else rf"(?P<{part}>\d+)" for n, part in enumerate(parts))
    )


def _renamed(key: str, renames: Sequence[tuple[re.Pattern[str], str]]) -> str | None:
    """``key`` with its prefix replaced by the first matching rule (fields kept); None when none matches."""
    for pattern, template in renames:
        match = pattern.match(key)
        if match:
            return template.format(**match.groupdict()) + key[match.end() :]
    return None
