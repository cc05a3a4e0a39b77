"""Image <-> SimpleITK conversion keeps values, axis order and geometry."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from MedSegCNNLib.errors import InputError
from MedSegCNNLib.image.core import LabelInfo
from MedSegCNNLib.image.sitk_bridge import from_sitk, to_sitk


def assert_same_geometry(a, b):
    np.testing.assert_allclose(a.spacing, b.spacing, rtol=0, atol=1e-12)
    np.testing.assert_allclose(a.origin, b.origin, rtol=0, atol=1e-12)
    np.testing.assert_allclose(a.direction, b.direction, rtol=0, atol=1e-12)


@pytest.mark.parametrize("shape", [(5, 6), (4, 5, 6)])
@pytest.mark.parametrize("direction", ["oblique", "flipped"])
def test_round_trip_keeps_values_and_geometry(make_image, shape, direction):
    image = make_image(shape, direction=direction, dtype=np.int16)
    sitk_image = to_sitk(image)
    assert sitk_image.GetSize() == image.size  # ITK order (x, y, z)
    assert sitk_image.GetSpacing() == image.spacing
    assert sitk_image.GetOrigin() == image.origin
    np.testing.assert_array_equal(np.reshape(sitk_image.GetDirection(), image.direction.shape), image.direction)
    x, y = 3, 1
    index = (x, y) if len(shape) == 2 else (x, y, 2)
    assert sitk_image[index] == image.array[index[::-1]]
    back = from_sitk(sitk_image)
    assert back.array.dtype == np.int16
    np.testing.assert_array_equal(back.array, image.array)
    assert_same_geometry(back, image)


def test_physical_points_agree_with_itk(make_image):
    image = make_image((4, 5, 6), direction="flipped")
    sitk_image = to_sitk(image)
    for index in [(0, 0, 0), (5, 4, 3), (2, 1, 3)]:
        np.testing.assert_allclose(image.index_to_physical(index), sitk_image.TransformIndexToPhysicalPoint(index))


@pytest.mark.parametrize("shape", [(5, 6), (4, 5, 6)])
def test_channels_become_vector_components_and_back(make_image, shape):
    image = make_image(shape, channels=3, dtype=np.float32)
    sitk_image = to_sitk(image)
    assert sitk_image.GetNumberOfComponentsPerPixel() == 3
    assert sitk_image.GetDimension() == len(shape)
    index = (4, 1) if len(shape) == 2 else (4, 1, 2)
    np.testing.assert_array_equal(sitk_image[index], image.array[(slice(None), *index[::-1])])
    back = from_sitk(sitk_image)
    np.testing.assert_array_equal(back.array, image.array)
    assert_same_geometry(back, image)


def test_4d_scalar_image_becomes_channels_of_a_3d_image():
    array = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)  # (modality, z, y, x)
    sitk_image = sitk.GetImageFromArray(array, isVector=False)
    assert sitk_image.GetDimension() == 4
    sitk_image.SetSpacing((0.5, 0.6, 0.7, 1.0))
    sitk_image.SetOrigin((1.0, 2.0, 3.0, 0.0))
    image = from_sitk(sitk_image)
    assert image.spatial_dims == 3 and image.num_channels == 2 and image.size == (5, 4, 3)
    np.testing.assert_array_equal(image.array, array)
    assert image.spacing == (0.5, 0.6, 0.7) and image.origin == (1.0, 2.0, 3.0)


def test_unsupported_dimensions_are_refused():
    vector_4d = sitk.Image([2, 2, 2, 2], sitk.sitkVectorFloat32, 2)
    with pytest.raises(InputError, match="2D and 3D"):
        from_sitk(vector_4d)


@pytest.mark.parametrize(("dtype", "stored"), [(np.bool_, np.uint8), (np.float16, np.float32)])
def test_dtypes_simpleitk_lacks_are_widened(make_image, dtype, stored):
    image = make_image((3, 4, 5), dtype=dtype)
    back = from_sitk(to_sitk(image))
    assert back.array.dtype == stored
    np.testing.assert_array_equal(back.array, image.array.astype(stored))


def test_labels_are_attached_on_request(make_image):
    labels = (LabelInfo(1, "liver"),)
    assert from_sitk(to_sitk(make_image()), labels=labels).labels == labels
