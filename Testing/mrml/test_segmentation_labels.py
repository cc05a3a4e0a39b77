"""Segmentation or label map node -> label image on a reference volume's grid (evaluation and training inputs)."""

from __future__ import annotations

import logging

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")

from MedSegCNNLib.errors import InputError  # noqa: E402
from MedSegCNNLib.image.core import Image, LabelInfo  # noqa: E402
from MedSegCNNLib.mrml import (  # noqa: E402
    image_from_volume_node,
    labels_from_segmentation,
    segmentation_from_labels,
    volume_node_from_image,
)

CARD = (LabelInfo(1, "Anterior", (1.0, 0.0, 0.0)), LabelInfo(2, "Posterior", (0.0, 1.0, 0.0)))


def two_label_segmentation(build, make_image, direction="oblique"):
    """A volume and a segmentation made on it with segments 'anterior' (1) and 'posterior' (2)."""
    volume = make_image((6, 7, 8), direction=direction)
    node = build.volume(volume, name="MR")
    labels = np.zeros((6, 7, 8), np.uint8)
    labels[1:3, 2:5, 1:4] = 1
    labels[3:5, 1:3, 4:7] = 2
    named = volume.with_array(labels, labels=[LabelInfo(1, "anterior"), LabelInfo(2, "posterior")])
    return volume, node, named, segmentation_from_labels(build.scene, named, node)


def add_segment(segmentation_node, name, mask: np.ndarray, grid: Image, label_value: int = 1):
    """A segment with its own labelmap layer holding ``mask`` on ``grid`` (as older Slicer files have them)."""
    import vtk
    from vtk.util import numpy_support

    labelmap = slicer.vtkOrientedImageData()
    labelmap.SetDimensions(*grid.size)
    scalars = numpy_support.numpy_to_vtk((mask * label_value).astype(np.uint8).ravel(), deep=True)
    labelmap.GetPointData().SetScalars(scalars)
    matrix = vtk.vtkMatrix4x4()
    ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ grid.affine
    for row in range(4):
        for column in range(4):
            matrix.SetElement(row, column, ras[row, column])
    labelmap.SetImageToWorldMatrix(matrix)
    segment = slicer.vtkSegment()
    segment.SetName(name)
    segment.SetLabelValue(label_value)
    segment.AddRepresentation("Binary labelmap", labelmap)
    segmentation_node.GetSegmentation().AddSegment(segment, name)


def test_segments_are_matched_to_labels_by_name_then_value(build, make_image):
    _, node, named, segmentation = two_label_segmentation(build, make_image)
    swapped = (LabelInfo(1, "posterior"), LabelInfo(2, "ANTERIOR "))  # names decide, ignoring case and spaces
    image = labels_from_segmentation(segmentation, node, labels=swapped)
    np.testing.assert_array_equal(image.array, np.array([0, 2, 1], np.uint8)[named.array])
    assert image.labels == swapped

    by_value = (LabelInfo(1, "liver"), LabelInfo(2, "spleen"), LabelInfo(3, "kidney"))  # no name matches
    np.testing.assert_array_equal(labels_from_segmentation(segmentation, node, labels=by_value).array, named.array)


def test_a_segment_matching_no_label_is_named_in_the_error(build, make_image):
    _, node, _, segmentation = two_label_segmentation(build, make_image)
    segmentation.GetSegmentation().GetSegment("Segment_2").SetLabelValue(2)
    segmentation.GetSegmentation().GetSegment("Segment_2").SetName("tumour")
    with pytest.raises(InputError, match=r"Segment 'tumour' of 'MR segmentation' matches no label \(1 'Anterior'\)"):
        labels_from_segmentation(segmentation, node, labels=CARD[:1])
    segmentation.GetSegmentation().GetSegment("Segment_2").SetName("Anterior")
    with pytest.raises(InputError, match="'anterior' and Segment 'Anterior' of 'MR segmentation' both match label 1"):
        labels_from_segmentation(segmentation, node, labels=CARD)


def test_reference_on_a_finer_grid_gets_nearest_neighbour_labels(build, make_image):
    volume, _, named, segmentation = two_label_segmentation(build, make_image, direction="flipped")
    # Half the spacing, origin a quarter voxel back: fine voxel b sits at coarse index (b - 0.5) / 2, so
    # its nearest coarse voxel is b // 2 along every axis (no ties).
    origin = volume.index_to_physical([-0.25, -0.25, -0.25])
    fine_grid = Image(np.zeros((12, 14, 16), np.int16), tuple(s / 2 for s in volume.spacing), origin, volume.direction)
    fine = build.volume(fine_grid, name="fine")
    image = labels_from_segmentation(segmentation, fine, labels=CARD)
    expected = named.array.repeat(2, axis=0).repeat(2, axis=1).repeat(2, axis=2)
    np.testing.assert_array_equal(image.array, expected)
    assert image.same_grid(fine_grid)


def test_cropped_and_larger_references_share_the_lattice(build, make_image):
    volume, _, named, segmentation = two_label_segmentation(build, make_image)
    cropped = Image(
        np.zeros((3, 4, 5), np.int16), volume.spacing, volume.index_to_physical([2, 1, 1]), volume.direction
    )
    image = labels_from_segmentation(segmentation, build.volume(cropped), labels=CARD)
    np.testing.assert_array_equal(image.array, named.array[1:4, 1:5, 2:7])
    larger = Image(
        np.zeros((8, 9, 10), np.int16), volume.spacing, volume.index_to_physical([-1, -1, -1]), volume.direction
    )
    image = labels_from_segmentation(segmentation, build.volume(larger), labels=CARD)
    np.testing.assert_array_equal(image.array[1:7, 1:8, 1:9], named.array)
    assert np.count_nonzero(image.array) == np.count_nonzero(named.array)


def test_segmentation_and_reference_under_different_transforms_meet_in_the_world(build, make_image):
    transform = build.linear_transform(build.rigid((0.5, 0.2, -0.4), (20.0, -10.0, 5.0)))
    volume = make_image((6, 7, 8))
    moved = build.volume(volume, name="moved", transform=transform)
    labels = image_from_volume_node(moved).with_array((np.arange(volume.array.size) % 3).reshape(6, 7, 8) == 1)
    segmentation = segmentation_from_labels(build.scene, labels, moved)
    # The same voxels in the world, as a volume without a transform (what hardening would give).
    still = volume_node_from_image(build.scene, image_from_volume_node(moved), "hardened")
    assert still.GetParentTransformNode() is None
    image = labels_from_segmentation(segmentation, still)
    np.testing.assert_array_equal(image.array, labels.array.astype(np.uint8))


def test_no_overlap_is_an_error(build, make_image):
    volume, _, _, segmentation = two_label_segmentation(build, make_image)
    far = Image(volume.array, volume.spacing, volume.index_to_physical([50, 0, 0]), volume.direction)
    with pytest.raises(InputError, match="'MR segmentation' does not overlap volume 'far'"):
        labels_from_segmentation(segmentation, build.volume(far, name="far"))


def test_overlapping_segments_later_wins_with_one_warning(build, make_image, caplog):
    grid = make_image((3, 4, 5))
    node = build.volume(grid)
    segmentation = build.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "layers")
    organ, lesion = np.zeros((2, 3, 4, 5), bool)
    organ[0:2] = True
    lesion[1:3, 0, 0] = True  # overlaps the organ at z = 1
    add_segment(segmentation, "organ", organ, grid)
    add_segment(segmentation, "lesion", lesion, grid)
    assert segmentation.GetSegmentation().GetNumberOfLayers() == 2
    with caplog.at_level(logging.WARNING):
        image = labels_from_segmentation(segmentation, node)
    np.testing.assert_array_equal(image.array, np.where(lesion, 2, organ.astype(np.uint8)))
    assert [(info.value, info.name) for info in image.labels] == [(1, "organ"), (2, "lesion")]
    assert "1 voxels of 'layers' are in several segments" in caplog.text
    with pytest.raises(InputError, match="'organ' and Segment 'lesion' of 'layers' both match label 1"):
        labels_from_segmentation(segmentation, node, labels=[LabelInfo(1, "x")])  # both have label value 1


def test_label_map_volume_as_reference(build, make_image):
    grid = make_image((3, 4, 5))
    node = build.volume(grid)
    array = np.zeros((3, 4, 5), np.int16)
    array[0, 1, 2], array[2, 3, 4] = 2, 7
    label_map = build.volume(grid.with_array(array), name="manual", node_class="vtkMRMLLabelMapVolumeNode")
    image = labels_from_segmentation(label_map, node)
    np.testing.assert_array_equal(image.array, array)
    assert image.array.dtype == np.uint8
    with pytest.raises(InputError, match=r"Label value 7 of 'manual' matches no label \(2 'b'\)"):
        labels_from_segmentation(label_map, node, labels=[LabelInfo(2, "b")])
    card = [LabelInfo(2, "b"), LabelInfo(7, "g")]
    assert labels_from_segmentation(label_map, node, labels=card).labels == tuple(card)

    colors = build.scene.AddNewNodeByClass("vtkMRMLColorTableNode", "my colours")
    colors.SetTypeToUser()
    colors.SetNumberOfColors(4)
    colors.SetColor(2, "vessel", 0.1, 0.2, 0.3, 1.0)
    label_map.CreateDefaultDisplayNodes()
    label_map.GetDisplayNode().SetAndObserveColorNodeID(colors.GetID())
    named = labels_from_segmentation(label_map, node).labels  # value 7 is not in the table: the default
    assert [(info.value, info.name) for info in named] == [(2, "vessel"), (7, "Segment_7")]
    assert named[0].color == pytest.approx((0.1, 0.2, 0.3), abs=1 / 255)  # colour tables store 8 bits


def test_closed_surface_segmentation_is_converted_in_a_copy(build, make_image):
    import vtk

    grid = Image(np.zeros((20, 20, 20), np.int16), (1.0, 1.0, 1.0), (-10.0, -10.0, -10.0), np.eye(3))
    node = build.volume(grid)
    sphere = vtk.vtkSphereSource()
    sphere.SetCenter(-5.0, 0.0, 0.0)  # RAS: 5 mm to the patient's right, i.e. LPS x = +5 (index x = 15)
    sphere.SetRadius(4.0)
    sphere.SetPhiResolution(24)
    sphere.SetThetaResolution(24)
    sphere.Update()
    segmentation = build.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "surface")
    segmentation.SetSourceRepresentationToClosedSurface()
    segmentation.AddSegmentFromClosedSurfaceRepresentation(sphere.GetOutput(), "ball", (1.0, 0.0, 0.0))
    image = labels_from_segmentation(segmentation, node)
    assert image.array[10, 10, 15] == 1 and image.array[10, 10, 5] == 0
    assert abs(np.count_nonzero(image.array) - 4 / 3 * np.pi * 4**3) < 0.2 * 4 / 3 * np.pi * 4**3
    assert not segmentation.GetSegmentation().ContainsRepresentation("Binary labelmap")  # the node is untouched


def test_empty_segmentation_gives_an_empty_map(build, make_image, caplog):
    node = build.volume(make_image())
    empty = build.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "nothing")
    with caplog.at_level(logging.WARNING):
        image = labels_from_segmentation(empty, node, labels=CARD)
    assert not image.array.any() and image.labels == CARD and "no segments" in caplog.text
    with pytest.raises(InputError, match="select a segmentation"):
        labels_from_segmentation(node.GetDisplayNode() or build.scene.AddNewNodeByClass("vtkMRMLTableNode"), node)
