"""Several volume nodes as one multi-channel image (e.g. T1, T2 and FLAIR for a model with three channels).

The channels are those of the volumes in order: one per scalar volume, one per component of a vector (colour)
volume (:mod:`.volumes`). Every channel lies on the first volume's voxel grid: a volume whose world grid differs
(size, spacing, origin or direction, after its parent transforms) is resampled onto it with linear
interpolation, and first-grid voxels outside it get 0: warned about, and refused when more than 1 % of the first
volume's voxels unless ``allow_partial_channels`` (:func:`~MedSegCNNLib.image.geometry.channel_onto`). Volumes
that share the grid keep their voxels exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import InputError
from ..image.core import Image
from ..image.geometry import channel_onto
from .volumes import image_from_volume_node, volume_channel_names


def image_from_volume_nodes(volume_nodes: Sequence[Any], *, allow_partial_channels: bool = False) -> Image:
    """A ``(C, z, y, x)`` image of the channels of the volume nodes, on the first volume's grid (see module
    docstring).

    The array type is the common type of the volumes' types (float32 for resampled channels).
    Raises :class:`InputError` for no volumes, or a volume that does not overlap the first one in space or leaves
    too much of it uncovered (module docstring).
    """
    nodes = list(volume_nodes)
    if not nodes or any(node is None for node in nodes):
        raise InputError("No input volume was given; select one volume per input channel of the model.")
    grid = image_from_volume_node(nodes[0])
    channels = _channels(grid)
    for node in nodes[1:]:
        image = image_from_volume_node(node)
        image = channel_onto(
            image,
            grid,
            what=f"Volume '{node.GetName()}'",
            reference_what=f"volume '{nodes[0].GetName()}'",
            allow_partial=allow_partial_channels,
        )
        channels += _channels(image)
    dtype = np.result_type(*(channel.dtype for channel in channels))
    return grid.with_array(np.stack([channel.astype(dtype, copy=False) for channel in channels]))


def volume_nodes_channel_names(volume_nodes: Sequence[Any]) -> tuple[str, ...]:
    """The names of the channels :func:`image_from_volume_nodes` gives, in order: each volume's
    (:func:`~.volumes.volume_channel_names`), a name that occurs more than once numbered by its position
    (two scalar volumes: ``image0``, ``image1``)."""
    names = [name for node in volume_nodes for name in volume_channel_names(node)]
    return tuple(f"{name}{index}" if names.count(name) > 1 else name for index, name in enumerate(names))


def _channels(image: Image) -> list[np.ndarray]:
    return list(image.array) if image.is_multichannel else [image.array]
