"""Scalar volume nodes to and from library images.

A volume node becomes a 3D :class:`Image` in LPS with the node's voxel type, placed in the world as Slicer
shows it: under a linear parent transform (nested ones included) the image is the volume as if the transform
were hardened, computed from copies (the node and its transforms are not modified). A volume with a single
slice stays a 3D image with size 1 along that axis; a model's own checks decide whether it can use it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import InputError
from ..image.core import Image
from .geometry import as_3d, ijk_to_ras, image_from_ras, ras_from_image, shifted, to_vtk, to_world
from .image_data import array_from_image_data, fill_image_data
from .runtime import slicer_module, vtk_modules
from .scene_cleanup import remove_added_node
from .subject_hierarchy import place_beside


def image_from_volume_node(volume_node: Any) -> Image:
    """The voxels of a scalar (or label map) volume node as a 3D :class:`Image` in world LPS coordinates.

    Raises :class:`InputError` for a node that is not a scalar volume, a volume without voxels, a vector/RGB/
    tensor volume (several components per voxel) and a volume under a non-linear transform.
    """
    check_scalar_volume(volume_node)
    return image_from_ras(array_from_image_data(volume_node.GetImageData()), _ijk_to_world(volume_node))


def volume_grid(volume_node: Any) -> Image:
    """The voxel grid of a scalar volume node in world LPS coordinates, without its voxels.

    The image's array is a read-only broadcast of zeros of the volume's shape (it takes no memory).
    """
    check_scalar_volume(volume_node)
    x_size, y_size, z_size = volume_node.GetImageData().GetDimensions()
    zeros = np.broadcast_to(np.uint8(0), (z_size, y_size, x_size))
    return image_from_ras(zeros, _ijk_to_world(volume_node))


def _ijk_to_world(volume_node: Any) -> np.ndarray:
    """World RAS of the volume's first voxel and axes (its image data's extent may not start at index 0)."""
    x0, _, y0, _, z0, _ = volume_node.GetImageData().GetExtent()
    return to_world(volume_node) @ shifted(ijk_to_ras(volume_node), (x0, y0, z0))


def check_scalar_volume(volume_node: Any) -> None:
    """Raise :class:`InputError` unless ``volume_node`` is a scalar volume node with voxels."""
    if volume_node is None:
        raise InputError("No volume was given; select an input volume.")
    if not volume_node.IsA("vtkMRMLScalarVolumeNode"):
        raise InputError(f"'{volume_node.GetName()}' is a {volume_node.GetClassName()}, not a scalar volume.")
    image_data = volume_node.GetImageData()
    if image_data is None or image_data.GetNumberOfPoints() == 0 or image_data.GetPointData().GetScalars() is None:
        raise InputError(f"Volume '{volume_node.GetName()}' has no voxels; load or create its image data first.")
    components = image_data.GetNumberOfScalarComponents()
    if components != 1 or volume_node.IsA("vtkMRMLTensorVolumeNode"):
        raise InputError(
            f"Volume '{volume_node.GetName()}' has {components} values per voxel (a vector, RGB or tensor volume); "
            "MedSegCNN needs scalar volumes: convert it with Slicer's 'Vector to Scalar Volume' module, or load "
            "each channel as a volume of its own."
        )


def volume_node_from_image(scene: Any, image: Image, name: str, *, reference_volume_node: Any = None) -> Any:
    """A new ``vtkMRMLScalarVolumeNode`` in ``scene`` holding a single-channel image (e.g. a probability map).

    ``image`` is in world LPS coordinates (as :func:`image_from_volume_node` gives them); a 2D image becomes a
    one-slice volume. With ``reference_volume_node``, the new node goes under the reference's parent transform
    (its voxels still land where ``image`` puts them in the world) and beside the reference in the subject
    hierarchy (same patient/study/folder). On error the scene is left unchanged.
    """
    if image.is_multichannel:
        raise InputError(
            f"A volume node holds one channel; this image has {image.num_channels} "
            "(pass one channel, e.g. image.with_array(image.array[k]))."
        )
    image = as_3d(image)
    slicer = slicer_module()
    vtk, _ = vtk_modules()
    world_from_local = np.eye(4) if reference_volume_node is None else to_world(reference_volume_node)
    node = slicer.vtkMRMLScalarVolumeNode()
    node.SetName(name)
    node.SetIJKToRASMatrix(to_vtk(np.linalg.inv(world_from_local) @ ras_from_image(image)))
    node.SetAndObserveImageData(fill_image_data(vtk.vtkImageData(), image.array))
    scene.AddNode(node)
    try:
        node.CreateDefaultDisplayNodes()
        if reference_volume_node is not None:
            node.SetAndObserveTransformNodeID(reference_volume_node.GetTransformNodeID())
            place_beside(scene, node, reference_volume_node)
    except Exception:
        remove_added_node(scene, node)
        raise
    return node
