"""Geometry between MRML and the library: the one place where RAS and LPS meet.

MRML places voxels with a 4x4 ``IJKToRAS`` matrix (IJK = ITK index ``(x, y, z)``, RAS = Slicer's world space,
mm); the library's :class:`~MedSegCNNLib.image.core.Image` uses LPS. The two differ by the sign of the first
two coordinates: ``ras = RAS_FROM_LPS @ lps`` (the matrix is its own inverse).

A node under parent transforms is placed in the world by ``to_world(node) @ IJKToRAS``; only linear transforms
(nested ones included) can be handled this way, since they keep the voxel grid a grid. The user's nodes and
transforms are only read here, never modified.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import InputError
from ..image.core import Image, LabelInfo
from .runtime import vtk_modules

RAS_FROM_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
"""Homogeneous matrix from LPS to RAS coordinates, and from RAS to LPS (its own inverse)."""


def to_numpy(matrix: Any) -> np.ndarray:
    """A ``vtkMatrix4x4`` as a 4x4 numpy array."""
    return np.array([[matrix.GetElement(row, column) for column in range(4)] for row in range(4)])


def to_vtk(array: np.ndarray) -> Any:
    """A 4x4 numpy array as a ``vtkMatrix4x4``."""
    vtk, _ = vtk_modules()
    matrix = vtk.vtkMatrix4x4()
    for row in range(4):
        for column in range(4):
            matrix.SetElement(row, column, float(array[row, column]))
    return matrix


def to_world(node: Any) -> np.ndarray:
    """The 4x4 matrix taking ``node``'s local RAS coordinates to world RAS (identity without a parent transform).

    Raises :class:`InputError` when a transform above the node is not linear.
    """
    parent = node.GetParentTransformNode()
    if parent is None:
        return np.eye(4)
    if not parent.IsTransformToWorldLinear():
        raise InputError(
            f"'{node.GetName()}' is under a non-linear transform ('{parent.GetName()}'), which MedSegCNN cannot "
            "apply to a voxel grid; harden the transform on it in Slicer's Transforms module first."
        )
    vtk, _ = vtk_modules()
    matrix = vtk.vtkMatrix4x4()
    parent.GetMatrixTransformToWorld(matrix)
    return to_numpy(matrix)


def ijk_to_ras(node: Any) -> np.ndarray:
    """The ``IJKToRAS`` matrix of a volume node (its local frame, before parent transforms)."""
    vtk, _ = vtk_modules()
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return to_numpy(matrix)


def image_from_ras(array: np.ndarray, ijk_to_world_ras: np.ndarray, labels: Sequence[LabelInfo] = ()) -> Image:
    """A 3D :class:`Image` of ``array`` (``(z, y, x)`` or ``(C, z, y, x)``) placed by an IJK-to-RAS matrix."""
    affine = RAS_FROM_LPS @ ijk_to_world_ras  # IJK -> LPS
    columns = affine[:3, :3]
    spacing = np.linalg.norm(columns, axis=0)
    if not np.all(spacing > 0):
        raise InputError(f"The voxel grid is degenerate (IJK to RAS matrix {ijk_to_world_ras.tolist()}).")
    return Image(array, tuple(spacing), tuple(affine[:3, 3]), columns / spacing, tuple(labels))


def ras_from_image(image: Image) -> np.ndarray:
    """The IJK-to-RAS matrix of a 3D :class:`Image`."""
    return RAS_FROM_LPS @ image.affine


def as_3d(image: Image) -> Image:
    """``image`` itself if 3D; if 2D, as a 3D image with one 1 mm slice at z = 0 (channels kept)."""
    if image.spatial_dims == 3:
        return image
    direction = np.eye(3)
    direction[:2, :2] = image.direction
    array = image.array[:, np.newaxis] if image.is_multichannel else image.array[np.newaxis]
    return Image(array, (*image.spacing, 1.0), (*image.origin, 0.0), direction, image.labels)


def single_slice_axis(shape: Sequence[int]) -> int | None:
    """The array axis (``(z, y, x)`` order) along which a 3D grid of spatial ``shape`` has a single voxel, z first;
    None when it has several voxels along every axis."""
    return next((axis for axis in range(3) if shape[axis] == 1), None)


def slice_as_2d(image: Image, axis: int) -> Image:
    """The single slice of a 3D ``image`` (channels kept) along array ``axis`` as a 2D image.

    Pixel ``(row, column)`` is the voxel at index 0 along ``axis``, the other two axes in their order; the
    spacing is theirs. When the slice's axes lie in a plane of constant LPS z (a picture file loaded in Slicer,
    an axial slice), the 2D image keeps their LPS x, y origin and direction, as ``read_image`` places a
    picture file; otherwise it is in the slice's own frame: origin (0, 0), identity direction.
    :func:`slice_to_3d` puts a 2D result back.
    """
    kept = [index for index in range(3) if index != 2 - axis]  # ITK axes (x, y, z) of the slice, in order
    columns = image.direction[:, kept]
    in_plane = np.allclose(columns[2], 0.0, atol=1e-6)
    return Image(
        np.squeeze(image.array, axis=axis + image.is_multichannel),
        tuple(image.spacing[index] for index in kept),
        image.origin[:2] if in_plane else (0.0, 0.0),
        columns[:2] if in_plane else np.eye(2),
        image.labels,
    )


def slice_to_3d(array: np.ndarray, axis: int) -> np.ndarray:
    """A 2D array ``(y, x)`` or ``(C, y, x)`` of :func:`slice_as_2d`'s slice as the 3D slice along array ``axis``."""
    return np.expand_dims(array, array.ndim - 2 + axis)


def shifted(ijk_to_ras_matrix: np.ndarray, index_xyz: Sequence[float]) -> np.ndarray:
    """The IJK-to-RAS matrix of the same grid with its index origin moved to ``index_xyz``."""
    translation = np.eye(4)
    translation[:3, 3] = index_xyz
    return ijk_to_ras_matrix @ translation
