"""Label image to segmentation node: one segment per label, voxel-exact on the input volume.

The segments share one binary-labelmap layer whose voxels are the label map's, in the reference volume's own
IJK-to-RAS geometry; the segmentation node goes under the volume's parent transform. A label voxel thus lands
exactly on the volume voxel it was computed from, wherever the volume is moved. The volume is also the
segmentation's reference geometry (what Slicer's Segment Editor paints on).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import InputError
from ..image.core import Image, LabelInfo
from ..image.geometry import Grid, grid_difference
from ..image.labels import as_label_array, label_dtype
from ..image.seg_nrrd import default_label_info
from .geometry import as_3d, ijk_to_ras, to_vtk
from .image_data import fill_image_data
from .runtime import slicer_module
from .scene_cleanup import remove_added_node
from .subject_hierarchy import place_beside
from .volumes import volume_grid

BINARY_LABELMAP = "Binary labelmap"


def segmentation_from_labels(
    scene: Any,
    label_image: Image,
    reference_volume_node: Any,
    segmentation_node: Any = None,
    *,
    replace: bool = False,
    name: str | None = None,
) -> Any:
    """Put a label map on ``reference_volume_node``'s grid into a ``vtkMRMLSegmentationNode`` and return the node.

    Segments: one per non-zero value in the label map and per non-zero value named in ``label_image.labels``
    (an empty segment then says the model found nothing there), in increasing value order, with ID
    ``Segment_<value>``, the label's name and colour, else ``Segment_<value>`` and the library's palette colour
    (as in ``.seg.nrrd`` files the library writes), and the value as the segment's label value.

    Without ``segmentation_node`` a new node named ``name`` (default: "<volume name> segmentation") is added,
    beside the volume in the subject hierarchy. A given node that already has segments is refused unless
    ``replace=True``, which replaces all its segments (the user's edits are never replaced silently); ``name``
    renames it. Everything is checked before the scene is touched, so on error the scene is unchanged.

    Raises :class:`InputError` when the label map is not an integer single-channel map, not on the volume's
    voxel grid (in world space, after parent transforms), or the node has segments and ``replace`` is false.
    """
    labels = _checked_label_map(label_image)
    grid = volume_grid(reference_volume_node)
    if not labels.same_grid(grid):
        raise InputError(
            f"The label map is not on the voxel grid of volume '{reference_volume_node.GetName()}' (label map vs "
            f"volume: {grid_difference(Grid.of(labels), Grid.of(grid))}); resample it onto the volume first "
            "(MedSegCNNLib.image.resample_labels_onto)."
        )
    if segmentation_node is not None:
        check_replaceable(segmentation_node, replace)
    slicer = slicer_module()
    layer = fill_image_data(slicer.vtkOrientedImageData(), labels.array)
    layer.SetExtent(reference_volume_node.GetImageData().GetExtent())  # the volume's IJK indices, voxel for voxel
    layer.SetImageToWorldMatrix(to_vtk(ijk_to_ras(reference_volume_node)))
    segments = [_segment(slicer, info, layer) for info in _segment_labels(labels)]

    created = segmentation_node is None
    if created:
        segmentation_node = slicer.vtkMRMLSegmentationNode()
        segmentation_node.SetName(name or f"{reference_volume_node.GetName()} segmentation")
        scene.AddNode(segmentation_node)
    try:
        _fill(segmentation_node, segments, reference_volume_node, name)
        if created:
            segmentation_node.CreateDefaultDisplayNodes()
        place_beside(scene, segmentation_node, reference_volume_node)
    except Exception:
        if created:
            remove_added_node(scene, segmentation_node)
        raise
    return segmentation_node


def _checked_label_map(image: Image) -> Image:
    """``image`` (a label map by :func:`~MedSegCNNLib.image.labels.as_label_array`) as a 3D label map whose type is
    :func:`~MedSegCNNLib.image.labels.label_dtype` of its largest value or named label; InputError otherwise."""
    array = as_label_array(image, allow_whole_floats=False, what="The label map for the segmentation")
    top = max([int(array.max(initial=0)), *(info.value for info in image.labels)])
    return as_3d(image.with_array(array.astype(label_dtype(top), copy=False)))


def check_replaceable(segmentation_node: Any, replace: bool) -> None:
    """Refuse a node that is not a segmentation, or one with segments unless ``replace``."""
    if not segmentation_node.IsA("vtkMRMLSegmentationNode"):
        raise InputError(
            f"'{segmentation_node.GetName()}' is a {segmentation_node.GetClassName()}, not a segmentation node; "
            "choose a segmentation node or create a new one."
        )
    count = segmentation_node.GetSegmentation().GetNumberOfSegments()
    if count and not replace:
        raise InputError(
            f"Segmentation '{segmentation_node.GetName()}' already has {count} segment(s), which MedSegCNN does not "
            "replace unless asked: choose a new segmentation, or ask to replace its segments (replace=True)."
        )


def _segment_labels(labels: Image) -> list[LabelInfo]:
    """Name and colour of each segment, in value order (see :func:`segmentation_from_labels`)."""
    seen = np.zeros(int(labels.array.max(initial=0)) + 1, bool)
    seen[labels.array.ravel()] = True  # faster than np.unique, and no sorted copy of the map
    present = set(np.flatnonzero(seen).tolist())
    values = sorted((present | {info.value for info in labels.labels}) - {0})
    result = []
    for value in values:
        given, default = labels.label_info(value), default_label_info(value)
        result.append(LabelInfo(value, given.name if given else default.name, (given and given.color) or default.color))
    return result


def _segment(slicer: Any, info: LabelInfo, layer: Any) -> tuple[str, Any]:
    """The segment ID and a ``vtkSegment`` for one label, its voxels in the shared ``layer``."""
    segment = slicer.vtkSegment()
    segment.SetName(info.name)
    segment.SetColor(*info.color)
    segment.SetLabelValue(info.value)
    segment.AddRepresentation(BINARY_LABELMAP, layer)
    return default_label_info(info.value).name, segment


def _fill(
    segmentation_node: Any, segments: list[tuple[str, Any]], reference_volume_node: Any, name: str | None
) -> None:
    """Replace the node's segments by ``segments``, on the reference volume's geometry and transform."""
    modifying = segmentation_node.StartModify()
    try:
        if name:
            segmentation_node.SetName(name)
        segmentation = segmentation_node.GetSegmentation()
        segmentation.RemoveAllSegments()
        segmentation_node.SetSourceRepresentationToBinaryLabelmap()
        segmentation_node.SetAndObserveTransformNodeID(reference_volume_node.GetTransformNodeID())
        # After the transform: MRML stores the volume's geometry relative to the segmentation's frame.
        segmentation_node.SetReferenceImageGeometryParameterFromVolumeNode(reference_volume_node)
        for segment_id, segment in segments:
            segmentation.AddSegment(segment, segment_id)
    finally:
        segmentation_node.EndModify(modifying)
