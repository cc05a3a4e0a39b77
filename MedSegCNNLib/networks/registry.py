"""Networks by name: :func:`build_network` turns plain JSON configuration into a network.

A configuration is a mapping ``{"name": ..., "spatial_dims": 2 | 3, "in_channels": C, "out_channels": K,
...options}``. ``network.config`` returns the complete configuration, defaults included, so that
``build_network(network.config)`` rebuilds the same architecture (parameter names and shapes).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import InputError
from .base import NetworkConfig, SegmentationNetwork
from .deeplab import DeepLab, DeepLabConfig
from .fcn import FCN, FCNConfig
from .fold_mean import MAX_FOLDS, FoldMean
from .nnunet_unet import NNUNetUNet, NNUNetUNetConfig
from .segnet import SegNet, SegNetConfig
from .unet import UNet, UNetConfig

NETWORK_NAMES: tuple[str, ...] = ("unet", "resunet", "fcn", "segnet", "deeplab")

_BUILDERS: dict[str, tuple[type[NetworkConfig], type[SegmentationNetwork]]] = {
    "unet": (UNetConfig, UNet),
    "resunet": (UNetConfig, UNet),
    "fcn": (FCNConfig, FCN),
    "segnet": (SegNetConfig, SegNet),
    "deeplab": (DeepLabConfig, DeepLab),
    **dict.fromkeys(NNUNetUNetConfig.NAMES, (NNUNetUNetConfig, NNUNetUNet)),  # imported nnU-Net models
}
"""Network name -> (its configuration class, its network class)."""


def build_network(config: Mapping[str, Any]) -> SegmentationNetwork | FoldMean:
    """The network described by plain configuration data (see the module docstring and each network's config).

    ``"folds": N`` (N >= 2) builds N such networks averaged as one (:class:`~.fold_mean.FoldMean`). Unknown names
    or options and invalid values raise :class:`InputError` listing what is allowed.
    """
    if not isinstance(config, Mapping):
        raise InputError(f"A network configuration is a mapping with a 'name'; got {type(config).__name__}.")
    if "folds" in config:
        folds = config["folds"]
        if isinstance(folds, bool) or not isinstance(folds, int) or not 2 <= folds <= MAX_FOLDS:
            raise InputError(f"A network's 'folds' must be an integer from 2 to {MAX_FOLDS}; got {folds!r}.")
        member = {key: value for key, value in config.items() if key != "folds"}
        return FoldMean([build_network(member) for _ in range(folds)])
    name = config.get("name")
    if name not in _BUILDERS:
        raise InputError(f"Unknown network name {name!r}; choose one of {list(NETWORK_NAMES)}.")
    config_class, network_class = _BUILDERS[name]
    return network_class(config_class.from_dict(config))
