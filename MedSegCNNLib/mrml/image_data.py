"""Voxels between ``vtkImageData`` and numpy: ``vtkImageData`` runs x fastest, which is numpy's ``(z, y, x)``."""

from __future__ import annotations

from typing import Any

import numpy as np

from .runtime import vtk_modules

# numpy types VTK arrays cannot hold, and what they are stored as.
_VTK_DTYPE_FALLBACK = {np.dtype(np.bool_): np.uint8, np.dtype(np.float16): np.float32}


def array_from_image_data(image_data: Any) -> np.ndarray:
    """A copy of the voxels as ``(z, y, x)``, or ``(z, y, x, components)`` when there are several components.

    An image without voxels (empty extent or no scalars) gives an array of shape ``(0, 0, 0)``.
    """
    _, numpy_support = vtk_modules()
    x0, x1, y0, y1, z0, z1 = image_data.GetExtent()
    shape = (z1 - z0 + 1, y1 - y0 + 1, x1 - x0 + 1)
    scalars = image_data.GetPointData().GetScalars()
    if min(shape) <= 0 or scalars is None:
        return np.zeros((0, 0, 0), np.uint8)
    components = scalars.GetNumberOfComponents()
    array = np.array(numpy_support.vtk_to_numpy(scalars))  # copy: the VTK array may change or go away
    return array.reshape(shape if components == 1 else (*shape, components))


def fill_image_data(image_data: Any, array: np.ndarray) -> Any:
    """Set ``image_data``'s extent to ``array``'s shape ``(z, y, x)`` (from index 0) and its scalars to a copy;
    an array ``(z, y, x, components)`` gives that many components per voxel."""
    _, numpy_support = vtk_modules()
    dtype = _VTK_DTYPE_FALLBACK.get(array.dtype, array.dtype.newbyteorder("="))  # VTK reads native byte order
    array = np.ascontiguousarray(array, dtype=dtype)
    depth, height, width = array.shape[:3]
    image_data.SetExtent(0, width - 1, 0, height - 1, 0, depth - 1)
    tuples = array.reshape(depth * height * width, -1) if array.ndim == 4 else array.ravel()
    image_data.GetPointData().SetScalars(numpy_support.numpy_to_vtk(tuples, deep=True))
    return image_data
