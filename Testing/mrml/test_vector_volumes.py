"""Vector (colour) and single-slice volumes: what a PNG, JPEG, TIFF or BMP picture is once loaded in Slicer.

slicer-core's ITK has no PNG/JPEG/TIFF/BMP reader (only NIfTI, NRRD, MetaImage and DICOM), so Slicer's own volume
reader is given the picture's pixels as a 2D colour NIfTI: the same reader class (``vtkITKArchetypeImageSeries
VectorReaderFile``) and the same geometry rules as the Slicer application applies to a picture file.
"""

from __future__ import annotations

import logging

import numpy as np
import PIL.Image
import pytest
import SimpleITK as sitk

slicer = pytest.importorskip("slicer")

from MedSegCNNLib.errors import InputError  # noqa: E402
from MedSegCNNLib.image.core import Image  # noqa: E402
from MedSegCNNLib.image.io import read_image  # noqa: E402
from MedSegCNNLib.mrml import image_from_volume_node, image_from_volume_nodes, volume_node_from_image  # noqa: E402
from MedSegCNNLib.mrml.geometry import single_slice_axis, slice_as_2d, slice_to_3d  # noqa: E402
from MedSegCNNLib.mrml.multi_volume import volume_nodes_channel_names  # noqa: E402
from MedSegCNNLib.mrml.volumes import volume_channel_names  # noqa: E402


def picture(height: int = 5, width: int = 7, seed: int = 0) -> np.ndarray:
    """Random RGB pixels ``(rows, columns, 3)``, as Pillow gives a picture."""
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_slicer_loads_a_2d_colour_image_as_a_single_slice_vector_volume(build, tmp_path):
    pixels = picture()
    file = sitk.GetImageFromArray(pixels, isVector=True)
    file.SetSpacing((0.5, 0.25))  # mm per column, per row
    path = tmp_path / "fundus.nii.gz"
    sitk.WriteImage(file, str(path))
    node = build.scene.logics[0].GetModuleLogic("Volumes").AddArchetypeVolume(str(path), "fundus", 0)

    assert node.IsA("vtkMRMLVectorVolumeNode") and node.GetImageData().GetDimensions() == (7, 5, 1)
    # Written out: LPS identity, origin 0, as ITK reads a picture file; RAS flips the first two axes.
    np.testing.assert_allclose(build.ijk_to_ras(node), np.diag([-0.5, -0.25, 1.0, 1.0]))
    assert volume_channel_names(node) == ("red", "green", "blue")
    image = image_from_volume_node(node)
    assert image.shape == (1, 5, 7) and image.num_channels == 3 and image.array.dtype == np.uint8
    np.testing.assert_array_equal(image.array[:, 0], np.moveaxis(pixels, -1, 0))  # channel k, row r, column c

    # The volume's slice is the 2D image the library reads from the same pixels in a file, as NIfTI and as PNG
    # (pHYs: 2000 and 4000 pixels per metre, i.e. 0.5 and 0.25 mm).
    flat = slice_as_2d(image, single_slice_axis(image.shape))
    png = tmp_path / "fundus.png"
    PIL.Image.fromarray(pixels).save(png, dpi=(0.0254 / 0.0005, 0.0254 / 0.00025))
    for read in (read_image(path), read_image(png)):
        assert flat.spatial_dims == 2 and flat.same_grid(read, tolerance=1e-9), read
        np.testing.assert_array_equal(flat.array, read.array)


@pytest.mark.parametrize(
    ("channels", "dtype", "vector_type"), [(3, np.uint8, "ColorRGB"), (4, np.float32, "Undefined")]
)
def test_a_multi_channel_image_makes_a_vector_volume_and_back(build, make_image, channels, dtype, vector_type):
    image = make_image(direction="flipped", dtype=dtype, channels=channels)
    node = volume_node_from_image(build.scene, image, "colour")
    assert node.IsA("vtkMRMLVectorVolumeNode") and node.GetDisplayNode() is not None
    assert node.GetImageData().GetNumberOfScalarComponents() == channels
    assert node.GetVoxelVectorType() == getattr(node, f"VoxelVectorType{vector_type}")
    np.testing.assert_allclose(build.ijk_to_ras(node), build.LPS_TO_RAS @ image.affine, atol=1e-12)
    # ITK index (x, y, z) = (4, 3, 2), component 1, read through VTK itself
    assert node.GetImageData().GetScalarComponentAsDouble(4, 3, 2, 1) == pytest.approx(float(image.array[1, 2, 3, 4]))

    back = image_from_volume_node(node)
    assert back.array.dtype == dtype and back.same_grid(image, tolerance=1e-9)
    np.testing.assert_array_equal(back.array, image.array)


def test_a_2d_colour_image_makes_a_one_slice_vector_volume_and_back(build, make_image):
    flat = make_image((5, 6), direction="flipped", dtype=np.uint8, channels=3)
    node = volume_node_from_image(build.scene, flat, "picture")
    assert node.GetImageData().GetDimensions() == (6, 5, 1)
    back = slice_as_2d(image_from_volume_node(node), 0)
    assert back.same_grid(flat, tolerance=1e-9)
    np.testing.assert_array_equal(back.array, flat.array)


def test_rgba_drops_alpha_and_other_vectors_keep_every_component(build, make_image, caplog):
    four = make_image((1, 2, 3), dtype=np.uint8, channels=4)
    rgba = build.vector_volume(four, "rgba", "ColorRGBA")
    with caplog.at_level(logging.INFO, logger="MedSegCNNLib.mrml.volumes"):
        image = image_from_volume_node(rgba)
    assert "'rgba' is RGBA; its alpha component was dropped" in caplog.text
    np.testing.assert_array_equal(image.array, four.array[:3])
    assert volume_channel_names(rgba) == ("red", "green", "blue")

    other = build.vector_volume(four, "four", "Undefined")
    np.testing.assert_array_equal(image_from_volume_node(other).array, four.array)
    assert volume_channel_names(other) == ("component0", "component1", "component2", "component3")


def test_a_colour_volume_and_a_scalar_volume_give_their_channels_in_order(build, make_image):
    colour = make_image(dtype=np.uint8, channels=3, seed=1)
    gray = make_image(dtype=np.int16, seed=2)
    nodes = [build.vector_volume(colour), build.volume(gray, name="gray")]
    image = image_from_volume_nodes(nodes)
    assert image.num_channels == 4 and image.array.dtype == np.int16 and image.same_grid(gray)
    np.testing.assert_array_equal(image.array[:3], colour.array)
    np.testing.assert_array_equal(image.array[3], gray.array)
    assert volume_nodes_channel_names(nodes) == ("red", "green", "blue", "image")
    assert volume_nodes_channel_names(nodes[1:] * 2) == ("image0", "image1")


def test_a_single_slice_is_a_2d_image_in_the_pictures_frame_or_its_own():
    axial = Image(np.arange(30.0).reshape(1, 5, 6), (0.5, 0.25, 3.0), (-10.0, 20.0, 7.0), np.diag([1.0, -1.0, 1.0]))
    flat = slice_as_2d(axial, single_slice_axis(axial.shape))
    assert flat.spatial_dims == 2 and flat.spacing == (0.5, 0.25) and flat.origin == (-10.0, 20.0)
    np.testing.assert_array_equal(flat.direction, np.diag([1.0, -1.0]))
    np.testing.assert_allclose(flat.index_to_physical([5, 4]), axial.index_to_physical([5, 4, 0])[:2])

    sagittal = Image(np.arange(60.0).reshape(3, 4, 5, 1), (3.0, 0.5, 0.25), (1.0, 2.0, 3.0), np.eye(3))
    axis = single_slice_axis(sagittal.shape)
    flat = slice_as_2d(sagittal, axis)  # columns along y, rows along z: not in an LPS z plane
    assert axis == 2 and flat.shape == (4, 5) and flat.num_channels == 3
    assert flat.spacing == (0.5, 0.25) and flat.origin == (0.0, 0.0)
    np.testing.assert_array_equal(flat.direction, np.eye(2))
    np.testing.assert_array_equal(flat.array, sagittal.array[..., 0])
    np.testing.assert_array_equal(slice_to_3d(flat.array, axis), sagittal.array)
    assert single_slice_axis((4, 5, 6)) is None and single_slice_axis((1, 5, 1)) == 0


def test_channels_of_volumes_that_are_not_volumes_are_refused(build):
    with pytest.raises(InputError, match="not a scalar or vector volume"):
        volume_channel_names(build.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "seg"))
