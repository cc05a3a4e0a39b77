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
    """A single-channel ``image`` itself if 3D; if 2D, as a 3D image with one 1 mm slice at z = 0."""
    if image.spatial_dims == 3:
        return image
    direction = np.eye(3)
    direction[:2, :2] = image.direction
    return Image(image.array[np.newaxis], (*image.spacing, 1.0), (*image.origin, 0.0), direction, image.labels)


def shifted(ijk_to_ras_matrix: np.ndarray, index_xyz: Sequence[float]) -> np.ndarray:
    """The IJK-to-RAS matrix of the same grid with its index origin moved to ``index_xyz``."""
    translation = np.eye(4)
    translation[:3, 3] = index_xyz
    return ijk_to_ras_matrix @ translation
