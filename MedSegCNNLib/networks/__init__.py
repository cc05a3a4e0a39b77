"""Segmentation networks (2D and 3D): U-Net family, FCN, SegNet, DeepLabV3, built from plain configuration.

``build_network({"name": "unet", "spatial_dims": 3, "in_channels": 1, "out_channels": 3, ...})`` returns a
:class:`SegmentationNetwork`; ``network.config`` is the complete configuration (defaults included) that
rebuilds it. Names: :data:`NETWORK_NAMES`; options: :class:`UNetConfig`, :class:`FCNConfig`,
:class:`SegNetConfig`, :class:`DeepLabConfig`.
"""

from .base import SegmentationNetwork
from .deeplab import DeepLab, DeepLabConfig
from .fcn import FCN, FCNConfig
from .registry import NETWORK_NAMES, build_network
from .segnet import SegNet, SegNetConfig
from .unet import UNet, UNetConfig

__all__ = [
    "FCN",
    "NETWORK_NAMES",
    "DeepLab",
    "DeepLabConfig",
    "FCNConfig",
    "SegNet",
    "SegNetConfig",
    "SegmentationNetwork",
    "UNet",
    "UNetConfig",
    "build_network",
]
