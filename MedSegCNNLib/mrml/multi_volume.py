"""Several volume nodes as one multi-channel image (e.g. T1, T2 and FLAIR for a model with three channels).

The channels are those of the volumes in order: one per scalar volume, one per component of a vector (colour)
volume (:mod:`.volumes`). Every channel lies on the first volume's voxel grid: a volume whose world grid differs
(size, spacing, origin or direction, after its parent transforms) is resampled onto it with linear
interpolation, and first-grid voxels outside it get 0. Volumes that share the grid keep their voxels exactly.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import InputError
from ..image.core import Image
from ..image.geometry import physical_overlap, resample_onto
from .volumes import image_from_volume_node, volume_channel_names

logger = logging.getLogger(__name__)


def image_from_volume_nodes(volume_nodes: Sequence[Any]) -> Image:
    """A ``(C, z, y, x)`` image of the channels of the volume nodes, on the first volume's grid (see module
    docstring).

    The array type is the common type of the volumes' types (float32 for resampled channels).
    Raises :class:`InputError` for no volumes, or a volume that does not overlap the first one in space.
    """
    nodes = list(volume_nodes)
    if not nodes or any(node is None for node in nodes):
        raise InputError("No input volume was given; select one volume per input channel of the model.")
    grid = image_from_volume_node(nodes[0])
    channels = _channels(grid)
    for node in nodes[1:]:
        image = image_from_volume_node(node)
        if not image.same_grid(grid):
            if not physical_overlap(image, grid):
                raise InputError(
                    f"Volume '{node.GetName()}' does not overlap volume '{nodes[0].GetName()}' in space; the input "
                    "volumes must show the same region (check that they belong to the same case, and their "
                    "transforms)."
                )
            logger.info("Resampling volume '%s' onto the grid of '%s' (linear).", node.GetName(), nodes[0].GetName())
            image = resample_onto(image, grid, "linear", dtype=np.float32)
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
