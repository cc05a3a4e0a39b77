"""Volume nodes to images and back: LPS geometry, parent transforms, refusals, placement in the scene."""

from __future__ import annotations

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")

from MedSegCNNLib.errors import InputError  # noqa: E402
from MedSegCNNLib.image.core import Image  # noqa: E402
from MedSegCNNLib.mrml import image_from_volume_node, image_from_volume_nodes, volume_node_from_image  # noqa: E402


def test_known_voxel_lands_at_its_lps_position(build):
    array = np.zeros((4, 5, 6), np.int16)  # (z, y, x)
    array[3, 2, 1] = 7  # ITK index (x, y, z) = (1, 2, 3)
    node = build.volume(Image(array, (2.0, 3.0, 4.0), (-10.0, 20.0, 5.0), np.eye(3)))
    # Written out: LPS origin (-10, 20, 5) is RAS (10, -20, 5); voxel (1, 2, 3) is at LPS (-8, 26, 17).
    np.testing.assert_allclose(build.ijk_to_world(node) @ [1, 2, 3, 1], [8.0, -26.0, 17.0, 1.0])

    image = image_from_volume_node(node)
    assert image.array.dtype == np.int16 and image.shape == (4, 5, 6)
    assert image.array[3, 2, 1] == 7 and np.count_nonzero(image.array) == 1
    np.testing.assert_allclose(image.index_to_physical([1, 2, 3]), [-8.0, 26.0, 17.0], atol=1e-9)
    np.testing.assert_allclose(image.spacing, (2.0, 3.0, 4.0))
    np.testing.assert_allclose(image.direction, np.eye(3), atol=1e-12)


@pytest.mark.parametrize("direction", ["oblique", "flipped"])
def test_every_voxel_keeps_its_world_position(build, make_image, direction):
    original = make_image(direction=direction, dtype=np.float32)
    node = build.volume(original)
    image = image_from_volume_node(node)
    np.testing.assert_array_equal(image.array, original.array)
    index = np.array([[0, 0, 0], [5, 4, 3], [2, 1, 3]])
    ras = (build.ijk_to_world(node) @ np.c_[index, np.ones(3)].T).T[:, :3]
    np.testing.assert_allclose(image.index_to_physical(index), ras * [-1, -1, 1], atol=1e-9)


def test_nested_linear_transforms_are_hardened_in_a_copy(build, make_image):
    outer = build.linear_transform(build.rigid((0.1, 0.4, -0.3), (5.0, -7.0, 11.0)))
    scale = np.diag([1.0, 1.5, 1.0, 1.0])  # transforms may scale, too
    inner = build.linear_transform(build.rigid((0.2, 0.0, 0.5), (1.0, 2.0, 3.0)) @ scale, parent=outer)
    original = make_image(direction="flipped")
    node = build.volume(original, transform=inner)
    world_before = build.ijk_to_world(node)
    inner_before = build.to_parent(inner)

    image = image_from_volume_node(node)

    hardened = slicer.vtkMRMLScalarVolumeNode()  # Slicer's own hardening, on a copy, is the reference
    build.scene.AddNode(hardened)
    hardened.Copy(node)
    hardened.SetAndObserveTransformNodeID(inner.GetID())
    assert slicer.vtkSlicerTransformLogic.hardenTransform(hardened)
    np.testing.assert_allclose(build.LPS_TO_RAS @ image.affine, build.ijk_to_world(hardened), atol=1e-9)
    np.testing.assert_array_equal(image.array, original.array)
    # The user's node and transforms are as they were.
    assert node.GetTransformNodeID() == inner.GetID() and inner.GetTransformNodeID() == outer.GetID()
    np.testing.assert_array_equal(build.ijk_to_world(node), world_before)
    np.testing.assert_array_equal(build.to_parent(inner), inner_before)
    np.testing.assert_allclose(build.ijk_to_ras(node), build.LPS_TO_RAS @ original.affine, atol=1e-12)


def test_non_linear_transform_is_refused(build, make_image):
    grid = build.scene.AddNewNodeByClass("vtkMRMLGridTransformNode")
    parent = build.linear_transform(np.eye(4), parent=grid)
    node = build.volume(make_image(), name="CT", transform=parent)
    with pytest.raises(InputError, match=r"'CT' is under a non-linear transform.*harden"):
        image_from_volume_node(node)


def test_what_is_not_a_scalar_or_vector_volume_is_refused(build, make_image):
    import vtk
    from vtk.util import numpy_support

    def data(components: int):
        image_data = vtk.vtkImageData()
        image_data.SetDimensions(6, 5, 4)
        values = np.zeros((120, components), np.float32)
        image_data.GetPointData().SetScalars(numpy_support.numpy_to_vtk(values, deep=True))
        return image_data

    scalar = build.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "three")
    scalar.SetAndObserveImageData(data(3))
    with pytest.raises(
        InputError, match="'three' is a vtkMRMLScalarVolumeNode with 3 values per voxel; make it a vector"
    ):
        image_from_volume_node(scalar)
    for node_class in ("vtkMRMLDiffusionWeightedVolumeNode", "vtkMRMLDiffusionTensorVolumeNode"):
        node = build.scene.AddNewNodeByClass(node_class, "dti")
        node.SetAndObserveImageData(data(6))
        with pytest.raises(InputError, match=f"'dti' is a {node_class} \\(tensor or diffusion data\\)"):
            image_from_volume_node(node)
    empty = build.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "empty")
    with pytest.raises(InputError, match="'empty' has no voxels"):
        image_from_volume_node(empty)
    segmentation = build.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "seg")
    with pytest.raises(InputError, match="not a scalar or vector volume"):
        image_from_volume_node(segmentation)
    with pytest.raises(InputError, match="No volume"):
        image_from_volume_node(None)


def test_single_slice_and_label_map_volumes(build, make_image):
    one_slice = make_image((1, 5, 6))
    image = image_from_volume_node(build.volume(one_slice))
    assert image.spatial_dims == 3 and image.shape == (1, 5, 6)
    np.testing.assert_array_equal(image.array, one_slice.array)
    labels = image_from_volume_node(build.volume(make_image(dtype=np.uint8), node_class="vtkMRMLLabelMapVolumeNode"))
    assert labels.array.dtype == np.uint8


def test_volumes_on_one_grid_become_channels_exactly(build, make_image):
    first, second = make_image(dtype=np.int16, seed=1), make_image(dtype=np.float32, seed=2)
    image = image_from_volume_nodes([build.volume(first), build.volume(second)])
    assert image.num_channels == 2 and image.array.dtype == np.float32
    np.testing.assert_array_equal(image.array[0], first.array)
    np.testing.assert_array_equal(image.array[1], second.array)
    assert image.same_grid(first)


def test_a_volume_on_another_grid_is_resampled_onto_the_first(build, make_image):
    first = make_image(dtype=np.float32, seed=1)
    second = make_image(dtype=np.float32, seed=2)
    # The second volume is shifted by one voxel along x: its voxel i lies on the first's voxel i + 1.
    shifted = Image(second.array, second.spacing, second.index_to_physical([1, 0, 0]), second.direction)
    nodes = [build.volume(first), build.volume(shifted, name="shifted")]
    with pytest.raises(InputError, match=r"Volume 'shifted' does not cover 16.7% of the voxels of volume 'volume' \("):
        image_from_volume_nodes(nodes)  # a sixth of the first volume would be 0: only when asked for
    image = image_from_volume_nodes(nodes, allow_partial_channels=True)
    np.testing.assert_allclose(image.array[1, :, :, 1:], second.array[:, :, :-1], atol=1e-5)
    np.testing.assert_array_equal(image.array[1, :, :, 0], 0.0)  # outside the second volume


def test_channels_that_do_not_overlap_are_refused(build, make_image):
    first = make_image()
    far = Image(first.array, first.spacing, first.index_to_physical([100, 0, 0]), first.direction)
    with pytest.raises(InputError, match="'far' does not overlap volume 'near'"):
        image_from_volume_nodes([build.volume(first, name="near"), build.volume(far, name="far")])
    with pytest.raises(InputError, match="No input volume"):
        image_from_volume_nodes([])


def test_image_to_volume_node_and_back(build, make_image):
    image = make_image(direction="flipped", dtype=np.float32)
    node = volume_node_from_image(build.scene, image, "probability")
    assert node.GetScene() is build.scene and node.GetName() == "probability"
    assert node.GetDisplayNode() is not None
    back = image_from_volume_node(node)
    np.testing.assert_array_equal(back.array, image.array)
    assert back.same_grid(image, tolerance=1e-9)

    flat = make_image((5, 6), direction="flipped", dtype=np.float32)  # 2D: a one-slice volume at z = 0
    back = image_from_volume_node(volume_node_from_image(build.scene, flat, "slice"))
    assert back.shape == (1, 5, 6)
    np.testing.assert_array_equal(back.array[0], flat.array)
    np.testing.assert_allclose(back.index_to_physical([4, 3, 0]), [*flat.index_to_physical([4, 3]), 0.0], atol=1e-9)


def test_output_volume_follows_the_reference_transform_and_study(build, make_image):
    transform = build.linear_transform(build.rigid((0.3, -0.1, 0.2), (4.0, 5.0, -6.0)))
    reference = build.volume(make_image(), name="MR", transform=transform)
    study = build.study(reference)
    world = image_from_volume_node(reference)
    uncertainty = world.with_array(np.random.default_rng(0).random(world.shape).astype(np.float32))

    node = volume_node_from_image(build.scene, uncertainty, "uncertainty", reference_volume_node=reference)
    assert node.GetTransformNodeID() == transform.GetID()
    np.testing.assert_allclose(build.ijk_to_world(node), build.ijk_to_world(reference), atol=1e-9)
    np.testing.assert_array_equal(image_from_volume_node(node).array, uncertainty.array)
    assert build.parent_item(node) == study


def test_output_volume_under_a_non_linear_transform_is_refused_and_scene_unchanged(build, make_image):
    grid = build.scene.AddNewNodeByClass("vtkMRMLGridTransformNode")
    reference = build.volume(make_image(), transform=grid)
    before = build.state()
    with pytest.raises(InputError, match="non-linear"):
        volume_node_from_image(build.scene, make_image(), "p", reference_volume_node=reference)
    assert build.state() == before
