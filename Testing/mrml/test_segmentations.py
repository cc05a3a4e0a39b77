"""Label image -> segmentation node -> label image: voxel-exact, named, coloured, placed, and never destructive."""

from __future__ import annotations

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")

from MedSegCNNLib.errors import InputError  # noqa: E402
from MedSegCNNLib.image.core import Image, LabelInfo  # noqa: E402
from MedSegCNNLib.image.seg_nrrd import PALETTE  # noqa: E402
from MedSegCNNLib.mrml import (  # noqa: E402
    image_from_volume_node,
    labels_from_segmentation,
    segmentation_from_labels,
)

NAMED = (LabelInfo(1, "liver", (0.9, 0.1, 0.2)), LabelInfo(3, "kidney"), LabelInfo(4, "spleen", (0.0, 0.0, 1.0)))


def segment_world_voxels(segmentation_node, segment_id) -> np.ndarray:
    """World RAS centres of a segment's voxels, read through Slicer's segmentation logic and MRML's transforms.

    (The logic's own ``applyParentTransform`` is not used: in slicer-core 5.13 it composes nested transforms in
    the wrong order, unlike MRML's transforms and hardening.)
    """
    import vtk
    from vtk.util import numpy_support

    labelmap = slicer.vtkOrientedImageData()  # the segment's layer, in the segmentation node's frame
    assert slicer.vtkSlicerSegmentationsModuleLogic.GetSegmentBinaryLabelmapRepresentation(
        segmentation_node, segment_id, labelmap, False
    )
    x0, x1, y0, y1, z0, z1 = labelmap.GetExtent()
    values = numpy_support.vtk_to_numpy(labelmap.GetPointData().GetScalars())
    values = values.reshape(z1 - z0 + 1, y1 - y0 + 1, x1 - x0 + 1)
    label = segmentation_node.GetSegmentation().GetSegment(segment_id).GetLabelValue()
    z, y, x = np.nonzero(values == label)
    matrix = vtk.vtkMatrix4x4()
    labelmap.GetImageToWorldMatrix(matrix)
    matrix = np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])
    local = (matrix @ np.c_[x + x0, y + y0, z + z0, np.ones(len(x))].T).T[:, :3]
    to_world = vtk.vtkGeneralTransform()
    if segmentation_node.GetParentTransformNode() is not None:
        segmentation_node.GetParentTransformNode().GetTransformToWorld(to_world)
    return np.array([to_world.TransformPoint(*point) for point in local])


@pytest.mark.parametrize("case", ["oblique", "flipped", "identity", "transformed"])
def test_round_trip_is_voxel_exact(build, make_image, case):
    direction = "oblique" if case == "transformed" else case
    volume = make_image(direction=direction, dtype=np.int16)  # anisotropic spacing, non-zero origin
    transform = None
    if case == "transformed":  # a rotated and scaled parent transform under another one
        outer = build.linear_transform(build.rigid((0.0, 0.3, 0.1), (-3.0, 4.0, 9.0)))
        transform = build.linear_transform(build.rigid((0.4, -0.2, 0.6), (10.0, 0.0, -5.0)), parent=outer)
    node = build.volume(volume, name="CT", transform=transform)
    names = (*NAMED, LabelInfo(5, "lesion"))
    labels = image_from_volume_node(node).with_array(np.zeros(volume.shape, np.uint8), labels=names)
    labels.array[0:2, 1:4, 2:5] = 1
    labels.array[2:4, 0:2, 0:3] = 3
    labels.array[3, 4, 5] = 5

    segmentation = segmentation_from_labels(build.scene, labels, node)
    back = labels_from_segmentation(segmentation, node, labels=names)

    np.testing.assert_array_equal(back.array, labels.array)
    assert back.labels == names
    assert back.same_grid(labels, tolerance=1e-9)
    assert segmentation.GetTransformNodeID() == node.GetTransformNodeID()
    # The Segment Editor paints on the volume's own voxels.
    geometry = slicer.vtkOrientedImageData()
    parameter = segmentation.GetSegmentation().GetConversionParameter("Reference image geometry")
    assert slicer.vtkSegmentationConverter.DeserializeImageGeometry(parameter, geometry)
    matrix = build.vtk_matrix(np.eye(4))
    geometry.GetImageToWorldMatrix(matrix)
    np.testing.assert_allclose(build.numpy_matrix(matrix), build.ijk_to_ras(node), atol=1e-6)
    assert geometry.GetExtent() == (0, 5, 0, 4, 0, 3)
    # Each segment voxel is, in the world, exactly where the volume voxel it labels is.
    ijk_to_world = build.ijk_to_world(node)
    for value in (1, 3, 5):
        positions = segment_world_voxels(segmentation, f"Segment_{value}")
        z, y, x = np.nonzero(labels.array == value)
        expected = (ijk_to_world @ np.c_[x, y, z, np.ones(len(x))].T).T[:, :3]
        np.testing.assert_allclose(
            positions[np.lexsort(positions.T)], expected[np.lexsort(expected.T)], rtol=0, atol=1e-6
        )


def test_segments_have_the_labels_names_colours_and_values(build, label_volume):
    node = build.volume(label_volume, name="MR")
    segmentation = segmentation_from_labels(build.scene, label_volume.with_labels(NAMED), node)
    assert segmentation.GetName() == "MR segmentation"
    content = segmentation.GetSegmentation()
    found = []
    for index in range(content.GetNumberOfSegments()):
        segment = content.GetNthSegment(index)
        found.append((content.GetNthSegmentID(index), segment.GetName(), segment.GetLabelValue(), segment.GetColor()))
    assert found == [
        ("Segment_1", "liver", 1, pytest.approx((0.9, 0.1, 0.2))),
        ("Segment_3", "kidney", 3, pytest.approx(PALETTE[2])),  # named without colour: the palette's
        ("Segment_4", "spleen", 4, pytest.approx((0.0, 0.0, 1.0))),  # named but absent: an empty segment
        ("Segment_5", "Segment_5", 5, pytest.approx(PALETTE[4])),  # unnamed: the library's default
    ]
    assert content.GetNumberOfLayers() == 1  # one shared labelmap, as Slicer's Segment Editor keeps it
    assert segmentation.GetNodeReference("referenceImageGeometryRef") is node
    assert segmentation.GetDisplayNode() is not None
    back = labels_from_segmentation(segmentation, node)  # without labels: 1..N in segment order
    assert [(info.value, info.name) for info in back.labels] == [
        (1, "liver"),
        (2, "kidney"),
        (3, "spleen"),
        (4, "Segment_5"),
    ]
    renumbered = np.array([0, 1, 0, 2, 0, 4], np.uint8)[label_volume.array]  # 1, 3, 5 -> 1, 2, 4
    np.testing.assert_array_equal(back.array, renumbered)


def test_segmentation_goes_into_the_volume_study(build, label_volume):
    node = build.volume(label_volume)
    study = build.study(node)
    segmentation = segmentation_from_labels(build.scene, label_volume, node, name="AI result")
    assert segmentation.GetName() == "AI result"
    assert build.parent_item(segmentation) == study


def test_existing_segments_are_kept_unless_replace_is_asked(build, label_volume):
    node = build.volume(label_volume)
    mine = build.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "my edits")
    mine.GetSegmentation().AddEmptySegment("edited", "edited")
    before = build.state()
    with pytest.raises(InputError, match=r"'my edits' already has 1 segment.*replace=True"):
        segmentation_from_labels(build.scene, label_volume, node, mine)
    assert build.state() == before
    assert mine.GetSegmentation().GetNumberOfSegments() == 1 and mine.GetSegmentation().GetSegment("edited")

    same = segmentation_from_labels(build.scene, label_volume, node, mine, replace=True)
    assert same is mine and build.scene.GetNumberOfNodes() == before[0]
    assert mine.GetSegmentation().GetSegment("edited") is None
    np.testing.assert_array_equal(labels_from_segmentation(mine, node).array > 0, label_volume.array > 0)

    empty = build.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "empty")  # nothing to lose: filled
    assert segmentation_from_labels(build.scene, label_volume, node, empty) is empty
    assert empty.GetSegmentation().GetNumberOfSegments() == 3


def test_errors_leave_the_scene_unchanged(build, make_image, label_volume):
    node = build.volume(label_volume, name="CT")
    before = build.state()
    moved = Image(
        label_volume.array, label_volume.spacing, label_volume.index_to_physical([1, 0, 0]), label_volume.direction
    )
    with pytest.raises(InputError, match=r"not on the voxel grid of volume 'CT'.*resample"):
        segmentation_from_labels(build.scene, moved, node)
    with pytest.raises(InputError, match="integer"):
        segmentation_from_labels(build.scene, label_volume.with_array(label_volume.array.astype(np.float32)), node)
    with pytest.raises(InputError, match="single-channel"):
        segmentation_from_labels(build.scene, make_image(channels=2), node)
    with pytest.raises(InputError, match="not a segmentation node"):
        segmentation_from_labels(build.scene, label_volume, node, node)
    assert build.state() == before

    grid = build.scene.AddNewNodeByClass("vtkMRMLGridTransformNode")
    warped = build.volume(label_volume, transform=grid)
    before = build.state()
    with pytest.raises(InputError, match="non-linear transform"):
        segmentation_from_labels(build.scene, label_volume, warped)
    assert build.state() == before


def test_volume_whose_voxel_indices_do_not_start_at_zero(build, label_volume):
    node = build.volume(label_volume, name="offset")
    node.GetImageData().SetExtent(2, 7, 1, 5, 3, 6)  # same voxels, IJK indices starting at (2, 1, 3)
    image = image_from_volume_node(node)
    np.testing.assert_array_equal(image.array, label_volume.array)
    np.testing.assert_allclose(image.origin, label_volume.index_to_physical([2, 1, 3]), atol=1e-9)
    segmentation = segmentation_from_labels(build.scene, image, node)
    np.testing.assert_array_equal(labels_from_segmentation(segmentation, node).array > 0, label_volume.array > 0)
    positions = segment_world_voxels(segmentation, "Segment_5")  # the single voxel (x, y, z) = (5, 4, 3)
    np.testing.assert_allclose(positions, (build.ijk_to_world(node) @ [7, 5, 6, 1])[None, :3], atol=1e-6)
