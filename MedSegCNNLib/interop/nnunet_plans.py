"""nnU-Net v2 plans' ``architecture`` entry → the configuration of MedSegCNN's native rebuild
(:mod:`MedSegCNNLib.networks.nnunet_unet`, the networks ``"nnunet-plain-unet"`` and ``"nnunet-residual-unet"``).

An entry is ``network_class_name`` (:data:`NNUNET_NETWORK_CLASSES`), ``arch_kwargs`` and ``_kw_requires_import``
as nnunetv2's planners write them. Operation names (``conv_op``, ``norm_op``, ``dropout_op``, ``nonlin``) are
mapped to torch classes through an allow-list; nothing named in a file is imported.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

from torch import nn

from ..errors import InputError
from ..networks.base import check_bool, check_finite, check_int_range
from ..networks.nnunet_unet import MAX_STAGES, PLAIN_UNET, RESIDUAL_UNET, NNUNetUNetConfig

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
    stages = check_int_range(where, "n_stages", arch_kwargs["n_stages"], 2, MAX_STAGES)
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
        check_finite(where, "momentum", momentum)  # used in training only
    eps = check_finite(where, "eps", options.get("eps", 1e-5))
    affine = check_bool(where, "affine", options.get("affine", kind == "batch"))
    return {"norm": kind, "norm_eps": eps, "norm_affine": affine}


def _activation_slope(where: str, nonlin: type | None, kwargs: Any) -> float:
    """The negative slope of the activation class and its keyword arguments."""
    if nonlin is nn.ReLU:
        options = _options(where, "nonlin_kwargs", kwargs, ("inplace",))
        slope = 0.0
    else:
        options = _options(where, "nonlin_kwargs", kwargs, ("negative_slope", "inplace"))
        slope = check_finite(where, "negative_slope", options.get("negative_slope", 0.01))
    check_bool(where, "inplace", options.get("inplace", False))
    return slope


def _check_training_only(where: str, dropout: type | None, arch_kwargs: Mapping[str, Any]) -> None:
    """Check the options that act only in training: dropout and deep supervision."""
    options = _options(where, "dropout_op_kwargs", arch_kwargs.get("dropout_op_kwargs"), ("p", "inplace"))
    if dropout is not None:
        p = check_finite(where, "p", options.get("p", 0.5))
        if not 0 <= p <= 1:
            raise InputError(f"{where} option 'p' (dropout) must be in [0, 1]; got {p}.")
        check_bool(where, "inplace", options.get("inplace", False))
    check_bool(where, "deep_supervision", arch_kwargs.get("deep_supervision", False))
