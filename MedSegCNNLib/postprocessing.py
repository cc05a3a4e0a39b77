"""Post-processing of predicted label maps: hole filling, small-component removal, largest component.

Definitions (per label ``L``; "component" means a connected component of the voxels equal to ``L`` under the
configured connectivity: ``"face"`` = 6 neighbours in 3D / 4 in 2D, ``"full"`` = 26 / 8):

1. **Fill holes** (``fill_holes``): a *hole* of ``L`` is a set of voxels not equal to ``L`` that cannot be
   reached from outside ``L``'s bounding box without crossing ``L`` (a 3D fill, not per slice: a tube open at
   both ends has no hole). The background (0) voxels of the holes become ``L``; voxels of other labels inside
   a hole are kept. Labels are filled in ascending order, each on the map as left by the previous ones.
2. **Remove small components** (``min_size_mm3``): components of ``L`` with a volume (voxel count × the
   voxel volume from the image spacing) below ``min_size_mm3`` become background. For 2D images the product
   of the two spacings is an area in mm², and the threshold is compared with that.
3. **Keep the largest component** (``keep_largest``): all components of ``L`` but the one with the most
   voxels become background (of equally large ones, ITK's first in scan order is kept). Applied after step 2,
   so a label whose components are all too small disappears.

Each label is processed inside its bounding box only (ITK label-shape statistics give all boxes in one
pass), which keeps large CT maps with many labels fast; the filters are SimpleITK's. When the boxes of the
labels to prune add up to more voxels than the map (many labels, or noisy ones spread everywhere), steps 2 and
3 instead label the components of all labels in one pass over the whole map (ITK's scalar connected
components), with the same result.

:func:`labels_from_probabilities` turns per-label probabilities (softmax output) into a label map.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import SimpleITK as sitk

from .errors import InputError
from .image.core import Image
from .image.labels import as_label_array, label_dtype
from .records import record_from_dict

logger = logging.getLogger(__name__)

CONNECTIVITIES = ("face", "full")

Box = tuple[slice, ...]


@dataclass(frozen=True)
class PostprocessingConfig:
    """What :func:`postprocess` does (see the module docstring for the definitions and the order).

    ``keep_largest`` and ``fill_holes`` are ``True`` (every label), ``False`` (none) or a sequence of label
    values (>= 1). ``min_size_mm3`` is a volume in mm³ (0: keep every component), applied to every label.
    """

    keep_largest: bool | Sequence[int] = False
    min_size_mm3: float = 0.0
    fill_holes: bool | Sequence[int] = False
    connectivity: Literal["face", "full"] = "face"

    def __post_init__(self) -> None:
        object.__setattr__(self, "keep_largest", _label_selection(self.keep_largest, "keep_largest"))
        object.__setattr__(self, "fill_holes", _label_selection(self.fill_holes, "fill_holes"))
        if isinstance(self.min_size_mm3, bool) or not isinstance(self.min_size_mm3, int | float | np.number):
            raise InputError(f"min_size_mm3 must be a number of mm³ (>= 0), got {self.min_size_mm3!r}.")
        if not (math.isfinite(self.min_size_mm3) and self.min_size_mm3 >= 0):
            raise InputError(f"min_size_mm3 must be a finite volume in mm³ >= 0, got {self.min_size_mm3!r}.")
        object.__setattr__(self, "min_size_mm3", float(self.min_size_mm3))
        if self.connectivity not in CONNECTIVITIES:
            raise InputError(f"connectivity must be one of {', '.join(CONNECTIVITIES)}, got {self.connectivity!r}.")

    @property
    def active(self) -> bool:
        """True when :func:`postprocess` would change anything at all on some label map."""
        return bool(self.keep_largest) or bool(self.fill_holes) or self.min_size_mm3 > 0

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data (label selections as ``true``/``false`` or a list of label values)."""
        data = dataclasses.asdict(self)
        for key in ("keep_largest", "fill_holes"):
            if not isinstance(data[key], bool):
                data[key] = list(data[key])
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PostprocessingConfig:
        """Inverse of :meth:`to_dict`; missing keys take the defaults, unknown keys are an error."""
        return record_from_dict(cls, data, "post-processing configuration")


def _label_selection(value: Any, name: str) -> bool | tuple[int, ...]:
    """``value`` as ``True``/``False`` or a sorted tuple of distinct label values >= 1."""
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, str | bytes) or not isinstance(value, Sequence | np.ndarray):
        raise InputError(f"{name} must be true, false or a list of label values, got {value!r}.")
    labels = []
    for item in value:
        if isinstance(item, bool | np.bool_) or not isinstance(item, int | np.integer) or item < 1:
            raise InputError(
                f"{name} lists {item!r}, which is not a label value; give integers >= 1 (0 is the background)."
            )
        labels.append(int(item))
    return tuple(sorted(set(labels)))


def _selected(selection: bool | Sequence[int], present: Sequence[int]) -> list[int]:
    """The labels of ``present`` that a ``keep_largest``/``fill_holes`` selection names."""
    if isinstance(selection, bool):
        return list(present) if selection else []
    return [label for label in present if label in selection]


def postprocess(labels: Image, config: PostprocessingConfig) -> Image:
    """A new label map: ``labels`` with holes filled, small components removed and the largest kept.

    ``labels`` must be a label map by :func:`~MedSegCNNLib.image.labels.as_label_array` (one channel, integers
    >= 0; bool is read as uint8). Geometry, label names and dtype are kept; removed voxels become 0. See the
    module docstring.
    """
    array = as_label_array(labels, allow_whole_floats=False, what="The label map to post-process")
    result = array.copy()
    if not config.active:
        return labels.with_array(result)
    full = config.connectivity == "full"
    present = [int(v) for v in np.unique(result) if v > 0]
    fill = _selected(config.fill_holes, present)
    if fill:
        boxes = _bounding_boxes(result, fill)
        for label in fill:
            _fill_holes(result, label, boxes[label], fully_connected=full)
    largest = _selected(config.keep_largest, present)
    pruned = present if config.min_size_mm3 > 0 else largest
    if pruned:
        # A component of n voxels is removed when n × voxel volume < min_size_mm3, i.e. n < ceil(ratio).
        min_voxels = math.ceil(config.min_size_mm3 / labels.voxel_volume_mm3 * (1 - 1e-12))
        boxes = _bounding_boxes(result, pruned)
        if sum(_box_voxels(box) for box in boxes.values()) > result.size:
            _prune_components_at_once(result, pruned, largest, min_voxels=min_voxels, fully_connected=full)
        else:
            for label in pruned:
                _prune_components(
                    result, label, boxes[label], min_voxels=min_voxels, keep_largest=label in largest,
                    fully_connected=full,
                )  # fmt: skip
    if logger.isEnabledFor(logging.DEBUG):
        changed = int(np.count_nonzero(result != array))
        logger.debug("Post-processing changed %d voxels (%s).", changed, config.to_dict())
    return labels.with_array(result)


def _bounding_boxes(array: np.ndarray, labels: Sequence[int]) -> dict[int, Box]:
    """Bounding box (slices in array order) of each of ``labels`` (all >= 1 and present in ``array``)."""
    statistics = sitk.LabelShapeStatisticsImageFilter()
    statistics.ComputePerimeterOff()
    statistics.ComputeFeretDiameterOff()
    statistics.ComputeOrientedBoundingBoxOff()
    statistics.Execute(sitk.GetImageFromArray(array))
    boxes = {}
    for label in labels:
        box = statistics.GetBoundingBox(label)  # ITK order: start (x, y, z), then size (x, y, z)
        starts, sizes = box[: array.ndim][::-1], box[array.ndim :][::-1]
        boxes[label] = tuple(slice(start, start + size) for start, size in zip(starts, sizes, strict=True))
    return boxes


def _fill_holes(array: np.ndarray, label: int, box: Box, *, fully_connected: bool) -> None:
    """Set the background voxels in the holes of ``label`` (inside its box ``box``) to ``label``, in place."""
    crop = array[box]
    mask = crop == label
    filler = sitk.BinaryFillholeImageFilter()
    filler.SetForegroundValue(1)
    filler.SetFullyConnected(fully_connected)
    filled = sitk.GetArrayFromImage(filler.Execute(sitk.GetImageFromArray(mask.view(np.uint8)))).view(bool)
    crop[filled & (crop == 0)] = label


def _prune_components(
    array: np.ndarray, label: int, box: Box, *, min_voxels: int, keep_largest: bool, fully_connected: bool
) -> None:
    """Set the components of ``label`` with fewer than ``min_voxels`` voxels (and, if asked, all but the
    largest) to 0, in place."""
    crop = array[box]
    mask = crop == label
    components = sitk.ConnectedComponent(sitk.GetImageFromArray(mask.view(np.uint8)), fully_connected)
    relabel = sitk.RelabelComponentImageFilter()  # numbers components by decreasing size: 1 is the largest
    relabel.SortByObjectSizeOn()
    relabel.SetMinimumObjectSize(min_voxels)  # smaller components become 0
    ranked = sitk.GetArrayFromImage(relabel.Execute(components))
    kept = min(relabel.GetNumberOfObjects(), 1) if keep_largest else relabel.GetNumberOfObjects()
    if kept == relabel.GetOriginalNumberOfObjects():
        return
    np.copyto(crop, 0, where=mask & ((ranked == 0) | (ranked > kept)))  # ranked 0: too small (or not label)


def _box_voxels(box: Box) -> int:
    return math.prod(piece.stop - piece.start for piece in box)


def _prune_components_at_once(
    array: np.ndarray, pruned: Sequence[int], largest: Sequence[int], *, min_voxels: int, fully_connected: bool
) -> None:
    """:func:`_prune_components` for all labels of ``pruned`` in one connected-component pass, in place.

    ITK's scalar connected components number the regions of equal value in scan order of their first voxel,
    so the first of equally large components is the one with the lowest number, as in the per-label path.
    """
    components_image = sitk.ScalarConnectedComponent(sitk.GetImageFromArray(array), 0.0, fully_connected)
    components = sitk.GetArrayViewFromImage(components_image).ravel()
    sizes = np.bincount(components)
    values = np.zeros(sizes.size, dtype=array.dtype)
    values[components] = array.ravel()  # every voxel of a component has the component's value
    remove = np.isin(values, list(pruned)) & (sizes < min_voxels)
    for label in largest:
        mine = np.flatnonzero(values == label)
        if mine.size:
            remove[mine] = True
            remove[mine[np.argmax(sizes[mine])]] = sizes[mine].max() < min_voxels
    remove[values == 0] = False
    if remove.any():
        np.copyto(array, 0, where=remove[components].reshape(array.shape))


def labels_from_probabilities(
    probabilities: np.ndarray, *, thresholds: Mapping[int, float] | None = None
) -> np.ndarray:
    """Label map ``(*S)`` from probabilities ``(K, *S)`` (channel ``k`` = label ``k``, channel 0 = background).

    Each voxel gets the label of its highest probability (of equal ones, the lowest label). With
    ``thresholds`` ``{k: t_k}`` (labels 1..K-1, ``t_k`` in [0, 1]), a voxel whose argmax label ``k`` has
    ``p_k < t_k`` becomes background (0) — not its second-best label; labels without a threshold are kept
    as the argmax gives them. The result's type is :func:`~MedSegCNNLib.image.labels.label_dtype` of K - 1:
    ``uint8`` for K <= 256.
    """
    probabilities = np.asarray(probabilities)
    if probabilities.ndim < 2 or probabilities.shape[0] < 1:
        raise InputError(
            f"Probabilities must have shape (labels, *spatial) with at least one label, got {probabilities.shape}."
        )
    if not np.issubdtype(probabilities.dtype, np.floating):
        raise InputError(f"Probabilities must be floating point, got {probabilities.dtype}.")
    count = probabilities.shape[0]
    checked = _thresholds(thresholds or {}, count)
    labels = np.argmax(probabilities, axis=0).astype(label_dtype(count - 1))
    for label, threshold in checked.items():
        below = (labels == label) & (probabilities[label] < threshold)
        labels[below] = 0
    return labels


def _thresholds(thresholds: Mapping[int, float], count: int) -> dict[int, float]:
    """``thresholds`` checked against ``count`` labels (keys 1..count-1, values in [0, 1])."""
    if not isinstance(thresholds, Mapping):
        raise InputError(f"thresholds must map label values to probabilities, got {thresholds!r}.")
    checked = {}
    for label, threshold in thresholds.items():
        if isinstance(label, bool) or not isinstance(label, int | np.integer) or not 1 <= label < count:
            raise InputError(
                f"Threshold given for label {label!r}, but the probabilities have labels 1..{count - 1} "
                "(channel 0, the background, takes no threshold)."
            )
        if isinstance(threshold, bool) or not isinstance(threshold, int | float | np.number):
            raise InputError(f"Threshold of label {label} must be a number in [0, 1], got {threshold!r}.")
        if not 0.0 <= float(threshold) <= 1.0:
            raise InputError(f"Threshold of label {label} must be in [0, 1], got {threshold!r}.")
        checked[int(label)] = float(threshold)
    return checked
