"""Several volume nodes as one multi-channel image (e.g. T1, T2 and FLAIR for a model with three channels).

Channel k is volume k. Every channel lies on the first volume's voxel grid: a volume whose world grid differs
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
from .volumes import image_from_volume_node

logger = logging.getLogger(__name__)


def image_from_volume_nodes(volume_nodes: Sequence[Any]) -> Image:
    """A ``(C, z, y, x)`` image from C scalar volume nodes, on the first volume's grid (see module docstring).

    The array type is the common type of the volumes' types (float32 for resampled channels).
    Raises :class:`InputError` for no volumes, or a volume that does not overlap the first one in space.
    """
    nodes = list(volume_nodes)
    if not nodes or any(node is None for node in nodes):
        raise InputError("No input volume was given; select one volume per input channel of the model.")
    grid = image_from_volume_node(nodes[0])
    channels = [grid.array]
    for node in nodes[1:]:
        image = image_from_volume_node(node)
        if image.same_grid(grid):
            channels.append(image.array)
            continue
        if not physical_overlap(image, grid):
            raise InputError(
                f"Volume '{node.GetName()}' does not overlap volume '{nodes[0].GetName()}' in space; the input "
                "volumes must show the same region (check that they belong to the same case, and their transforms)."
            )
        logger.info("Resampling volume '%s' onto the grid of '%s' (linear).", node.GetName(), nodes[0].GetName())
        channels.append(resample_onto(image, grid, "linear", dtype=np.float32).array)
    dtype = np.result_type(*(channel.dtype for channel in channels))
    return grid.with_array(np.stack([channel.astype(dtype, copy=False) for channel in channels]))
