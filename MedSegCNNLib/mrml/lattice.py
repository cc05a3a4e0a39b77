"""Label voxels onto another voxel grid: pasted exactly when the grids share a lattice, else nearest neighbour.

Two grids share a lattice when they have the same spacing and direction and one's origin lies on a voxel centre
of the other (e.g. a segment layer that Slicer cropped to its bounding box, on its volume's grid): every source
voxel then is a target voxel and is copied as it is. Otherwise each target voxel takes the value of the
nearest source voxel centre (SimpleITK nearest-neighbour resampling), 0 outside the source.
"""

from __future__ import annotations

import numpy as np

from ..image.core import Image
from ..image.geometry import physical_overlap, resample_labels_onto

INDEX_TOLERANCE = 1e-3
"""Largest distance, in voxels, of the source origin from a target voxel centre for the grids to share a lattice."""

Placed = tuple[tuple[slice, ...], np.ndarray]


def place_on_grid(source: Image, grid: Image) -> Placed | None:
    """``source``'s voxels on ``grid``: ``(slices, values)`` with ``values`` the part of ``grid[slices]`` it covers.

    ``None`` when the two do not overlap in space. Both are 3D single-channel images.
    """
    if not physical_overlap(source, grid):
        return None
    offset = _lattice_offset(source, grid)
    if offset is None:
        return (slice(None),) * 3, resample_labels_onto(source, grid).array
    target, taken = [], []
    for start, length, size in zip(offset[::-1], source.shape, grid.shape, strict=True):  # array order (z, y, x)
        low, high = max(start, 0), min(start + length, size)
        target.append(slice(low, high))
        taken.append(slice(low - start, high - start))
    return tuple(target), source.array[tuple(taken)]


def _lattice_offset(source: Image, grid: Image) -> tuple[int, ...] | None:
    """The ITK index ``(x, y, z)`` in ``grid`` of ``source``'s first voxel when they share a lattice, else None."""
    scale = max(max(grid.spacing), 1.0)
    if not (
        np.allclose(source.spacing, grid.spacing, rtol=0, atol=1e-4 * scale)
        and np.allclose(source.direction, grid.direction, rtol=0, atol=1e-4)
    ):
        return None
    index = grid.physical_to_index(np.asarray(source.origin))
    rounded = np.round(index)
    if np.max(np.abs(index - rounded)) > INDEX_TOLERANCE:
        return None
    return tuple(int(i) for i in rounded)
