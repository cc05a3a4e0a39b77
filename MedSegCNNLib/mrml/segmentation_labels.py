"""Segmentation node (or label map volume node) to a label image on a reference volume's grid.

For evaluation (the segmentation is the reference standard) and for training data (the segmentation is the
target). Positions are compared in world space, after the parent transforms of both nodes (linear only).
Voxels move onto the reference grid exactly when the grids share a lattice (always the case for a
segmentation made on that volume, even when Slicer cropped it), by nearest neighbour otherwise (see
:func:`~MedSegCNNLib.image.geometry.place_on_grid`); reference voxels outside the segmentation get 0.

Label values: see :mod:`.label_matching` (segment names, else segment label values, with ``labels``; 1..N in
segment order without). A label map volume's voxel values are its label values: with ``labels`` each value
must be one of them (its colour table's names are not used for matching); without, values are kept and
named from the node's colour table when it has one.

Overlapping segments: where several segments cover a voxel, the one later in the segmentation's segment order
wins (as when the segmentation is saved as one label map); one warning counts such voxels.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import InputError
from ..image.core import Image, LabelInfo
from ..image.geometry import Placed, place_on_grid
from ..image.labels import label_dtype
from ..image.seg_nrrd import default_label_info
from .geometry import image_from_ras, ras_from_image, shifted, to_numpy, to_vtk, to_world
from .image_data import array_from_image_data
from .label_matching import SourceSegment, number_segments
from .runtime import slicer_module, vtk_modules
from .volumes import image_from_volume_node, volume_grid

logger = logging.getLogger(__name__)

BINARY_LABELMAP = "Binary labelmap"
_SLAB = 8
"""Slices painted at a time (bounds the temporaries to a few slices)."""


def labels_from_segmentation(
    segmentation_node: Any, reference_volume_node: Any, *, labels: Sequence[LabelInfo] | None = None
) -> Image:
    """The label map of a segmentation or label map volume node on ``reference_volume_node``'s voxel grid.

    The result is a 3D :class:`Image` on the reference's grid in world LPS (as :func:`image_from_volume_node`
    gives it), of the smallest unsigned integer type, with ``labels`` (or the segments' names and colours).
    Raises :class:`InputError` when a segment matches no label, when the segmentation does not overlap the
    reference volume, or when a node is under a non-linear transform.
    """
    grid = volume_grid(reference_volume_node)
    if segmentation_node is None:
        raise InputError("No segmentation was given; select a segmentation or a label map volume.")
    name = segmentation_node.GetName()
    if segmentation_node.IsA("vtkMRMLLabelMapVolumeNode"):
        return _from_label_map_volume(segmentation_node, grid, labels)
    if not segmentation_node.IsA("vtkMRMLSegmentationNode"):
        raise InputError(
            f"'{name}' is a {segmentation_node.GetClassName()}; select a segmentation or a label map volume."
        )
    world = to_world(segmentation_node)
    segmentation = _with_binary_labelmaps(segmentation_node, world, grid)
    segments = [segmentation.GetNthSegment(index) for index in range(segmentation.GetNumberOfSegments())]
    sources = [SourceSegment(s.GetName(), s.GetLabelValue(), tuple(s.GetColor())) for s in segments]
    values, infos = number_segments(sources, labels, name)
    if not segments:
        logger.warning("Segmentation '%s' has no segments; its label map is empty.", name)

    output = np.zeros(grid.shape, label_dtype(max(values, default=0)))
    outside, overlapping = _paint_segments(output, segments, values, world, grid)
    if outside and not output.any():
        raise InputError(
            f"Segmentation '{name}' does not overlap volume '{reference_volume_node.GetName()}' in space; "
            "choose the volume it was made on (check both nodes' transforms)."
        )
    if outside:
        logger.warning("Segments of '%s' outside volume '%s': %s.", name, reference_volume_node.GetName(), outside)
    if overlapping:
        logger.warning(
            "%d voxels of '%s' are in several segments; each gets the later segment's label.", overlapping, name
        )
    return grid.with_array(output, labels=infos)


def _paint_segments(
    output: np.ndarray, segments: list[Any], values: list[int], world: np.ndarray, grid: Image
) -> tuple[list[str], int]:
    """Write each segment's value into ``output`` (on ``grid``) in segment order, later segments on top.

    Consecutive segments sharing a labelmap layer (which cannot overlap) are painted together through a lookup
    table (layer value -> output value), slab by slab, so the cost is a few passes per layer, not per segment.
    Returns the names of segments with voxels that all lie outside the grid, and the number of voxels where
    a segment covered an earlier one.
    """
    layers: dict[str, tuple[bool, Placed | None]] = {}  # layer address -> (has voxels, its voxels on the grid)
    outside, overlapping, painted = [], 0, False
    for key, layer, members in _runs_by_layer(segments, values):
        if key not in layers:
            layers[key] = _layer_on_grid(layer, world, grid)
        has_voxels, placed = layers[key]
        if placed is None:
            outside += [segment.GetName() for segment, _ in members] if has_voxels else []
            continue
        slices, source = placed
        # Layer values with no segment of this run map to 0, out-of-range ones too (``take`` clips to both ends).
        lut = np.zeros(max(max(segment.GetLabelValue() for segment, _ in members), 0) + 2, output.dtype)
        for segment, value in members:
            if segment.GetLabelValue() > 0:
                lut[segment.GetLabelValue()] = value
        region = output[slices]
        for start in range(0, source.shape[0], _SLAB):  # slabs keep the temporaries small
            part, target = lut.take(source[start : start + _SLAB], mode="clip"), region[start : start + _SLAB]
            if painted:
                mask = part != 0
                overlapping += int(np.count_nonzero(mask & (target != 0) & (target != part)))
                np.copyto(target, part, where=mask)
            else:
                target[...] = part
        painted = True
    return outside, overlapping


def _runs_by_layer(segments: list[Any], values: list[int]) -> list[tuple[str, Any, list[tuple[Any, int]]]]:
    """``(layer address, layer, [(segment, value), ...])`` for each run of consecutive segments sharing a layer
    (segments without a binary labelmap are skipped)."""
    runs: list[tuple[str, Any, list[tuple[Any, int]]]] = []
    for segment, value in zip(segments, values, strict=True):
        layer = segment.GetRepresentation(BINARY_LABELMAP)  # segments of one layer share this image
        if layer is None:
            continue
        key = layer.GetAddressAsString("vtkOrientedImageData")
        if runs and runs[-1][0] == key:
            runs[-1][2].append((segment, value))
        else:
            runs.append((key, layer, [(segment, value)]))
    return runs


def _with_binary_labelmaps(segmentation_node: Any, world: np.ndarray, grid: Image) -> Any:
    """The node's segmentation if it holds binary labelmaps; else a converted copy (the node is not modified).

    The copy is converted on the reference grid (expressed in the segmentation's own frame).
    """
    slicer = slicer_module()
    segmentation = segmentation_node.GetSegmentation()
    if segmentation.GetNumberOfSegments() == 0 or segmentation.ContainsRepresentation(BINARY_LABELMAP):
        return segmentation
    copy = slicer.vtkSegmentation()
    copy.DeepCopy(segmentation)
    local = np.linalg.inv(world) @ ras_from_image(grid)
    x_size, y_size, z_size = grid.size
    geometry = slicer.vtkSegmentationConverter.SerializeImageGeometry(
        to_vtk(local), [0, x_size - 1, 0, y_size - 1, 0, z_size - 1]
    )
    copy.SetConversionParameter(slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName(), geometry)
    if not copy.CreateRepresentation(BINARY_LABELMAP):
        raise InputError(
            f"Segmentation '{segmentation_node.GetName()}' has no binary labelmap and cannot be converted to one; "
            "create its 'Binary labelmap' representation in Slicer's Segmentations module."
        )
    return copy


def _layer_on_grid(layer: Any, world: np.ndarray, grid: Image) -> tuple[bool, Placed | None]:
    """Whether a binary-labelmap layer has non-zero voxels, and those voxels on the grid (None: none or outside)."""
    array = array_from_image_data(layer)
    if not array.any():
        return False, None
    vtk, _ = vtk_modules()
    matrix = vtk.vtkMatrix4x4()
    layer.GetImageToWorldMatrix(matrix)
    x0, _, y0, _, z0, _ = layer.GetExtent()
    return True, place_on_grid(image_from_ras(array, world @ shifted(to_numpy(matrix), (x0, y0, z0))), grid)


def _from_label_map_volume(node: Any, grid: Image, labels: Sequence[LabelInfo] | None) -> Image:
    """A label map volume node's values on the grid (see module docstring for the label values)."""
    image = image_from_volume_node(node)
    array = image.array if np.issubdtype(image.array.dtype, np.integer) else np.rint(image.array).astype(np.int64)
    image = image.with_array(np.clip(array, 0, None))  # negative voxels belong to no label
    present = [int(value) for value in np.unique(image.array) if value > 0]
    if labels is None:
        infos = _colour_table_labels(node, present)
    else:
        number_segments([SourceSegment(str(value), value) for value in present], labels, node.GetName(), by_name=False)
        infos = tuple(labels)
    output = np.zeros(grid.shape, label_dtype(max(present, default=0)))
    if present:
        placed = place_on_grid(image, grid)
        if placed is None:
            raise InputError(
                f"Label map '{node.GetName()}' does not overlap the reference volume in space; "
                "choose the volume it was made on (check both nodes' transforms)."
            )
        output[placed[0]] = placed[1]
    return grid.with_array(output, labels=infos)


def _colour_table_labels(node: Any, values: list[int]) -> tuple[LabelInfo, ...]:
    """Names and colours of ``values`` from the node's colour table (the library's defaults where it has none)."""
    display = node.GetDisplayNode()
    colors = display.GetColorNode() if display is not None else None
    if colors is None:
        return ()
    infos = []
    for value in values:
        default = default_label_info(value)
        if value >= colors.GetNumberOfColors() or not colors.GetColorName(value):
            infos.append(default)
            continue
        rgba = [0.0, 0.0, 0.0, 0.0]
        colors.GetColor(value, rgba)
        infos.append(LabelInfo(value, colors.GetColorName(value), tuple(min(max(c, 0.0), 1.0) for c in rgba[:3])))
    return tuple(infos)
