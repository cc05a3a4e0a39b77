"""Conversion between :class:`Image` and ``SimpleITK.Image`` without losing geometry.

A SimpleITK vector image (RGB, multi-component NRRD) and a 4D scalar image (e.g. an MSD multi-modal
NIfTI, whose fourth axis lists modalities) both become a channels-first multi-channel 3D :class:`Image`.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from .core import Image, LabelInfo

# numpy dtypes SimpleITK cannot store, and what they are written as.
_SITK_DTYPE_FALLBACK = {np.dtype(bool): np.uint8, np.dtype(np.float16): np.float32}


def from_sitk(sitk_image: sitk.Image, labels: tuple[LabelInfo, ...] = ()) -> Image:
    """Convert a SimpleITK image (2D, 3D, vector, or 4D read as channels) to an :class:`Image`."""
    dims = sitk_image.GetDimension()
    vector = sitk_image.GetNumberOfComponentsPerPixel() > 1
    if dims == 4 and not vector:
        spatial = 3  # the fourth ITK axis becomes the channel axis, which numpy already puts first
    elif dims in (2, 3):
        spatial = dims
    else:
        raise InputError(
            f"Only 2D and 3D images (optionally with channels) are supported; this one has {dims} dimensions"
            f"{' and vector pixels' if vector else ''}."
        )
    array = sitk.GetArrayFromImage(sitk_image)
    if vector:
        array = np.ascontiguousarray(np.moveaxis(array, -1, 0))
    direction = np.array(sitk_image.GetDirection(), dtype=np.float64).reshape(dims, dims)[:spatial, :spatial]
    return Image(
        array=array,
        spacing=sitk_image.GetSpacing()[:spatial],
        origin=sitk_image.GetOrigin()[:spatial],
        direction=direction,
        labels=labels,
    )


def to_sitk(image: Image) -> sitk.Image:
    """Convert an :class:`Image` to SimpleITK (channels become vector components).

    ``bool`` arrays are stored as ``uint8`` and ``float16`` as ``float32``; label names are not carried
    (SimpleITK images have no place for them; see :mod:`MedSegCNNLib.image.seg_nrrd`).
    """
    array = image.array
    fallback = _SITK_DTYPE_FALLBACK.get(array.dtype)
    if fallback is not None:
        array = array.astype(fallback)
    if image.is_multichannel:
        sitk_image = sitk.GetImageFromArray(np.moveaxis(array, 0, -1), isVector=True)
    else:
        sitk_image = sitk.GetImageFromArray(array, isVector=False)
    sitk_image.SetSpacing(image.spacing)
    sitk_image.SetOrigin(image.origin)
    sitk_image.SetDirection(tuple(image.direction.ravel()))
    return sitk_image
