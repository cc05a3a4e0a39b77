"""Scalar and vector volume nodes to and from library images.

A volume node becomes a 3D :class:`Image` in LPS with the node's voxel type, placed in the world as Slicer
shows it: under a linear parent transform (nested ones included) the image is the volume as if the transform
were hardened, computed from copies (the node and its transforms are not modified). A volume with a single
slice stays a 3D image with size 1 along that axis (a PNG, JPEG, TIFF or BMP picture loaded in Slicer is such
a volume); :func:`~.geometry.slice_as_2d` makes it the 2D image a 2D model takes.

Channels: a scalar volume is one channel; a vector volume (``vtkMRMLVectorVolumeNode``, e.g. a colour picture)
gives one channel per voxel component, channels first ``(C, z, y, x)``. A colour volume (voxel vector type RGB
or RGBA, or three components of an undefined type) has the channels red, green and blue, as a colour picture
file read by the library (:data:`~MedSegCNNLib.image.raster.COLOR_CHANNEL_NAMES`); the alpha component of an
RGBA volume is dropped, with a note in the log. Tensor and diffusion-weighted volumes are refused.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from ..errors import InputError
from ..image.core import Image
from ..image.raster import COLOR_CHANNEL_NAMES
from .geometry import as_3d, ijk_to_ras, image_from_ras, ras_from_image, shifted, to_vtk, to_world
from .image_data import array_from_image_data, fill_image_data
from .runtime import slicer_module, vtk_modules
from .scene_cleanup import remove_added_node
from .subject_hierarchy import place_beside

logger = logging.getLogger(__name__)


def image_from_volume_node(volume_node: Any) -> Image:
    """The voxels of a scalar, label map or vector volume node as a 3D :class:`Image` in world LPS coordinates.

    A vector volume gives a ``(C, z, y, x)`` image, one channel per component (an RGBA volume's alpha dropped).
    Raises :class:`InputError` for a node that is not such a volume, a volume without voxels, a tensor or
    diffusion-weighted volume and a volume under a non-linear transform.
    """
    channels = volume_channel_names(volume_node)
    array = array_from_image_data(volume_node.GetImageData())
    if array.ndim == 4:  # (z, y, x, components) -> (C, z, y, x), alpha dropped
        if array.shape[-1] > len(channels):
            logger.info("Volume '%s' is RGBA; its alpha component was dropped.", volume_node.GetName())
        array = np.ascontiguousarray(np.moveaxis(array[..., : len(channels)], -1, 0))
    return image_from_ras(array, _ijk_to_world(volume_node))


def volume_grid(volume_node: Any) -> Image:
    """The voxel grid of a scalar or vector volume node in world LPS coordinates, without its voxels.

    The image's array is a read-only broadcast of zeros of the volume's spatial shape (it takes no memory).
    """
    check_volume(volume_node)
    x_size, y_size, z_size = volume_node.GetImageData().GetDimensions()
    zeros = np.broadcast_to(np.uint8(0), (z_size, y_size, x_size))
    return image_from_ras(zeros, _ijk_to_world(volume_node))


def _ijk_to_world(volume_node: Any) -> np.ndarray:
    """World RAS of the volume's first voxel and axes (its image data's extent may not start at index 0)."""
    x0, _, y0, _, z0, _ = volume_node.GetImageData().GetExtent()
    return to_world(volume_node) @ shifted(ijk_to_ras(volume_node), (x0, y0, z0))


def check_volume(volume_node: Any) -> None:
    """Raise :class:`InputError` unless ``volume_node`` is a scalar, label map or vector volume with voxels."""
    if volume_node is None:
        raise InputError("No volume was given; select an input volume.")
    name, kind = volume_node.GetName(), volume_node.GetClassName()
    if not volume_node.IsA("vtkMRMLScalarVolumeNode"):
        raise InputError(f"'{name}' is a {kind}, not a scalar or vector volume.")
    vector = volume_node.IsA("vtkMRMLVectorVolumeNode")
    if not vector and (
        volume_node.IsA("vtkMRMLTensorVolumeNode") or volume_node.IsA("vtkMRMLDiffusionWeightedVolumeNode")
    ):
        raise InputError(
            f"'{name}' is a {kind} (tensor or diffusion data), which MedSegCNN does not take; make a scalar map of "
            "it first (Slicer's 'Diffusion Tensor Scalar Maps' module)."
        )
    image_data = volume_node.GetImageData()
    if image_data is None or image_data.GetNumberOfPoints() == 0 or image_data.GetPointData().GetScalars() is None:
        raise InputError(f"Volume '{name}' has no voxels; load or create its image data first.")
    components = image_data.GetNumberOfScalarComponents()
    if components != 1 and not vector:
        raise InputError(
            f"Volume '{name}' is a {kind} with {components} values per voxel; make it a vector volume, or one "
            "scalar volume per channel (Slicer's 'Vector to Scalar Volume' module)."
        )


def volume_channel_names(volume_node: Any) -> tuple[str, ...]:
    """The names of the channels ``volume_node`` gives a model (see module docstring).

    ``("image",)`` for a scalar volume, ``("red", "green", "blue")`` for a colour volume, ``("component0", ...)`` for
    another vector volume. Raises :class:`InputError` as :func:`check_volume` does.
    """
    check_volume(volume_node)
    if not volume_node.IsA("vtkMRMLVectorVolumeNode"):
        return ("image",)
    components = volume_node.GetImageData().GetNumberOfScalarComponents()
    kind = volume_node.GetVoxelVectorType()
    rgb = components == 3 and kind in (volume_node.VoxelVectorTypeColorRGB, volume_node.VoxelVectorTypeUndefined)
    if rgb or (components == 4 and kind == volume_node.VoxelVectorTypeColorRGBA):
        return COLOR_CHANNEL_NAMES
    return tuple(f"component{index}" for index in range(components))


def volume_node_from_image(scene: Any, image: Image, name: str, *, reference_volume_node: Any = None) -> Any:
    """A new volume node in ``scene`` holding ``image``: a ``vtkMRMLScalarVolumeNode`` for a single-channel image
    (e.g. a probability map), a ``vtkMRMLVectorVolumeNode`` with one component per channel for several.

    ``image`` is in world LPS coordinates (as :func:`image_from_volume_node` gives them); a 2D image becomes a
    one-slice volume. A 3-channel ``uint8`` image is marked as an RGB colour volume. With
    ``reference_volume_node``, the new node goes under the reference's parent transform (its voxels still land
    where ``image`` puts them in the world) and beside the reference in the subject hierarchy (same
    patient/study/folder). On error the scene is left unchanged.
    """
    image = as_3d(image)
    if image.num_channels == 1 and image.is_multichannel:
        image = image.with_array(image.array[0])
    slicer = slicer_module()
    vtk, _ = vtk_modules()
    world_from_local = np.eye(4) if reference_volume_node is None else to_world(reference_volume_node)
    node = slicer.vtkMRMLVectorVolumeNode() if image.is_multichannel else slicer.vtkMRMLScalarVolumeNode()
    node.SetName(name)
    node.SetIJKToRASMatrix(to_vtk(np.linalg.inv(world_from_local) @ ras_from_image(image)))
    voxels = np.moveaxis(image.array, 0, -1) if image.is_multichannel else image.array  # (z, y, x[, components])
    node.SetAndObserveImageData(fill_image_data(vtk.vtkImageData(), voxels))
    if image.num_channels == 3 and image.array.dtype == np.uint8:
        node.SetVoxelVectorType(node.VoxelVectorTypeColorRGB)
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
