"""``.seg.nrrd`` files between MRML's storage node and the library, landing on the volume's voxels both ways."""

from __future__ import annotations

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")

from MedSegCNNLib import read_image, write_image  # noqa: E402
from MedSegCNNLib.image.core import LabelInfo  # noqa: E402
from MedSegCNNLib.image.geometry import resample_labels_onto  # noqa: E402
from MedSegCNNLib.mrml import image_from_volume_node, labels_from_segmentation, segmentation_from_labels  # noqa: E402

NAMES = (LabelInfo(1, "liver", (0.9, 0.1, 0.2)), LabelInfo(3, "kidney", (0.2, 0.4, 0.6)), LabelInfo(5, "lesion"))


def storage(scene, node, path):
    storage_node = slicer.vtkMRMLSegmentationStorageNode()
    scene.AddNode(storage_node)
    node.SetAndObserveStorageNodeID(storage_node.GetID())
    storage_node.SetFileName(str(path))
    return storage_node


@pytest.mark.parametrize("direction", ["oblique", "flipped"])
def test_a_file_slicer_writes_from_our_node_reads_onto_the_same_voxels(
    build, make_image, label_volume, tmp_path, direction
):
    node = build.volume(make_image(direction=direction).with_array(label_volume.array), name="CT")
    labels = image_from_volume_node(node).with_labels(NAMES)
    segmentation = segmentation_from_labels(build.scene, labels, node)
    path = tmp_path / "from_mrml.seg.nrrd"
    assert storage(build.scene, segmentation, path).WriteData(segmentation) == 1

    image = read_image(path)
    assert [(info.value, info.name) for info in image.labels] == [(1, "liver"), (3, "kidney"), (5, "lesion")]
    assert image.label_info(1).color == pytest.approx((0.9, 0.1, 0.2))
    np.testing.assert_array_equal(resample_labels_onto(image, labels).array, labels.array)  # Slicer may crop


def test_a_file_we_write_loads_in_mrml_onto_the_same_voxels(build, label_volume, tmp_path):
    node = build.volume(label_volume, name="CT")
    labels = image_from_volume_node(node).with_labels(NAMES)
    path = write_image(labels, tmp_path / "ours.seg.nrrd")

    segmentation = build.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "loaded")
    assert storage(build.scene, segmentation, path).ReadData(segmentation) == 1
    assert segmentation.GetSegmentation().GetNumberOfSegments() == 3
    back = labels_from_segmentation(segmentation, node, labels=NAMES)
    np.testing.assert_array_equal(back.array, labels.array)
    assert back.labels == NAMES
