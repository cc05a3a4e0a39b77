"""Relating two images in physical space: overlap tests and resampling onto another image's grid."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from ..errors import GeometryError
from .core import Image
from .sitk_bridge import from_sitk, to_sitk


def physical_overlap(a: Image, b: Image) -> bool:
    """True when the voxel regions of ``a`` and ``b`` intersect in physical space.

    Each image occupies the box spanned by its voxels' outer faces (centres ± half a voxel); the test
    projects both boxes onto the axes of each image (a separating-axis test on oriented boxes), so it is
    exact for oblique directions too.
    """
    if a.spatial_dims != b.spatial_dims:
        return False
    boxes = [_face_corners(a), _face_corners(b)]
    axes = [a.direction[:, j] for j in range(a.spatial_dims)] + [b.direction[:, j] for j in range(b.spatial_dims)]
    for axis in axes:
        pa, pb = boxes[0] @ axis, boxes[1] @ axis
        if pa.max() <= pb.min() or pb.max() <= pa.min():
            return False
    if a.spatial_dims == 3:  # edge-edge cross products complete the separating-axis test in 3D
        for i in range(3):
            for j in range(3):
                axis = np.cross(a.direction[:, i], b.direction[:, j])
                if np.linalg.norm(axis) < 1e-9:
                    continue
                pa, pb = boxes[0] @ axis, boxes[1] @ axis
                if pa.max() <= pb.min() or pb.max() <= pa.min():
                    return False
    return True


def _face_corners(image: Image) -> np.ndarray:
    extremes = [(-0.5, n - 0.5) for n in image.size]
    grid = np.array(np.meshgrid(*extremes, indexing="ij")).reshape(image.spatial_dims, -1).T
    return image.index_to_physical(grid)


def resample_labels_onto(labels: Image, grid: Image) -> Image:
    """Resample a label map onto ``grid``'s voxel grid with nearest-neighbour interpolation.

    Voxels of ``grid`` outside ``labels`` get 0. Label names/colours and dtype are kept.
    Raises :class:`GeometryError` when the two images do not overlap physically.
    """
    if labels.is_multichannel:
        raise GeometryError("Label maps have one channel; this one has several.")
    if labels.spatial_dims != grid.spatial_dims:
        raise GeometryError(f"Cannot relate a {labels.spatial_dims}D label map to a {grid.spatial_dims}D image.")
    if not physical_overlap(labels, grid):
        raise GeometryError(
            "The two images do not overlap in physical space (check that they belong to the same case and "
            "that origin and direction are right)."
        )
    reference = sitk.Image(list(grid.size), sitk.sitkUInt8)
    reference.SetSpacing(grid.spacing)
    reference.SetOrigin(grid.origin)
    reference.SetDirection(tuple(grid.direction.ravel()))
    resampled = sitk.Resample(to_sitk(labels), reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    result = from_sitk(resampled, labels=labels.labels)
    return result.with_array(result.array.astype(labels.array.dtype, copy=False))
