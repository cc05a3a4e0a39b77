"""Per-label metrics of a predicted label map against a reference label map.

For label L: P = pred == L, R = ref == L, N = number of voxels, TP = |P ∩ R|, FP = |P \\ R|, FN = |R \\ P|,
TN = N - TP - FP - FN. Distances in mm (Euclidean between voxel centres), volumes in ml.

=================  ==================================================  ==========  ===========  ===========
field              definition                                          both empty  pred empty   ref empty
=================  ==================================================  ==========  ===========  ===========
dice, f1           2TP / (2TP + FP + FN)                               1           0            0
iou                TP / (TP + FP + FN)                                 1           0            0
precision          TP / (TP + FP)                                      1           0            0
recall             TP / (TP + FN)                                      1           0            0
specificity        TN / (TN + FP); 1 when TN + FP = 0                  formula     formula      formula
accuracy           (TP + TN) / N                                       formula     formula      formula
volume_pred_ml     |P| * prod(spacing) / 1000                          0           0            formula
volume_ref_ml      |R| * prod(spacing) / 1000                          0           formula      0
rvd                (V_pred - V_ref) / V_ref                            0           -1           +inf
hd                 max(max d(P→R), max d(R→P))                         0           +inf         +inf
hd95               max(p95 d(P→R), p95 d(R→P)), linear percentile      0           +inf         +inf
assd               (Σ d(P→R) + Σ d(R→P)) / (|S_P| + |S_R|)             0           +inf         +inf
nsd                (#{d(P→R) ≤ τ} + #{d(R→P) ≤ τ}) / (|S_P| + |S_R|)   1           0            0
tp, fp, fn, tn     voxel counts                                        counts      counts       counts
pred_empty         |P| = 0
ref_empty          |R| = 0
=================  ==================================================  ==========  ===========  ===========

S_M, the surface of mask M, is the set of voxels of M with at least one face neighbour (6-connectivity in 3D,
4 in 2D) outside M; voxels outside the array count as outside. d(P→R) is, for each voxel of S_P, the distance
to the nearest voxel of S_R. hd95 is the larger of the two *directed* 95th percentiles (numpy's default linear
percentile), not the 95th percentile of the pooled distances. τ is ``nsd_tolerance_mm``. No field is ever
NaN, except hd, hd95, assd and nsd when ``surface=False`` (they are not computed then).

With a region of interest (``roi``, e.g. the field of view of a fundus photograph) every metric counts only the
voxels inside it: P and R above become P ∩ ROI and R ∩ ROI, N becomes |ROI| (so TN counts only background inside
the ROI), and the surfaces are those of P ∩ ROI and R ∩ ROI, where voxels outside the ROI count as outside, exactly
as voxels outside the array do. A structure cut by the ROI's edge thus has surface along the cut in both maps
(at distance 0 from each other where both are cut at the same place), and nothing outside the ROI moves any
metric.

Overlap counts for all labels come from one pass over both maps (:mod:`.overlap`). Surface work for a label
is done only inside the union of the bounding boxes of P and R, which ITK's label-shape statistics give for all
labels of a map at once: voxels outside the box are outside both masks, as the surface definition treats
voxels outside the array, and the distance transform pads the box by one background voxel
(:mod:`.surface`). No per-label work touches the full volume (except for label 0 when it is asked for).
"""

from __future__ import annotations

import logging
import math
import operator
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from ..image.labels import integer_label_values
from .overlap import confusion_counts, overlap_scores
from .surface import SurfaceMetrics, empty_surface_metrics, surface_metrics

logger = logging.getLogger(__name__)

_NOT_COMPUTED = SurfaceMetrics(hd=math.nan, hd95=math.nan, assd=math.nan, nsd=math.nan)

Box = tuple[slice, ...]


@dataclass(frozen=True)
class LabelMetrics:
    """Metrics of one label; definitions and empty-mask policy in the module docstring. mm, ml."""

    dice: float
    iou: float
    precision: float
    recall: float
    specificity: float
    accuracy: float
    f1: float
    volume_pred_ml: float
    volume_ref_ml: float
    rvd: float
    hd: float
    hd95: float
    assd: float
    nsd: float
    tp: int
    fp: int
    fn: int
    tn: int
    pred_empty: bool
    ref_empty: bool

    def as_dict(self) -> dict[str, float | int | bool]:
        """Field name -> value, in field order."""
        return asdict(self)


def compute_label_metrics(
    pred: np.ndarray,
    ref: np.ndarray,
    labels: Sequence[int],
    spacing: Sequence[float],
    *,
    nsd_tolerance_mm: float = 1.0,
    surface: bool = True,
    roi: np.ndarray | None = None,
) -> dict[int, LabelMetrics]:
    """Metrics of each label in ``labels`` between integer label maps ``pred`` and ``ref`` (2D or 3D).

    ``spacing`` is in array axis order (mm), one entry per axis. Labels absent from a map follow the
    empty-mask policy. ``surface=False`` skips hd, hd95, assd and nsd (they are NaN). ``roi``: a boolean array
    of the maps' shape (or integers, non-zero inside) restricting every metric to the voxels inside it (see the
    module docstring). Raises :class:`InputError` for arrays of different shapes or non-integer dtype, bad
    spacing, labels, tolerance or an empty ROI.
    """
    start = time.perf_counter()
    pred, ref = _validated_maps(pred, ref)
    wanted = _validated_labels(labels)
    spacing = _validated_spacing(spacing, pred.ndim)
    if not (math.isfinite(nsd_tolerance_mm) and nsd_tolerance_mm >= 0):
        raise InputError(f"The NSD tolerance must be a finite number of mm >= 0, got {nsd_tolerance_mm!r}.")
    inside = None if roi is None else _validated_roi(roi, pred.shape)

    counts = (
        confusion_counts(pred, ref, wanted) if inside is None else confusion_counts(pred[inside], ref[inside], wanted)
    )
    scores = overlap_scores(counts)
    pred_count = counts.pred_count.tolist()
    ref_count = counts.ref_count.tolist()
    pred_boxes: dict[int, Box] = {}
    ref_boxes: dict[int, Box] = {}
    if surface:
        pred_boxes = _bounding_boxes(
            pred, [label for label, n in zip(wanted, pred_count, strict=True) if n > 0], inside
        )
        ref_boxes = _bounding_boxes(ref, [label for label, n in zip(wanted, ref_count, strict=True) if n > 0], inside)
    voxel_mm3 = math.prod(spacing)

    results: dict[int, LabelMetrics] = {}
    for i, label in enumerate(wanted):
        if not surface:
            distances = _NOT_COMPUTED
        elif pred_count[i] == 0 or ref_count[i] == 0:
            distances = empty_surface_metrics(pred_count[i] == 0, ref_count[i] == 0)
        else:
            box = _union(pred_boxes[label], ref_boxes[label])
            pred_mask, ref_mask = pred[box] == label, ref[box] == label
            if inside is not None:
                pred_mask &= inside[box]
                ref_mask &= inside[box]
            distances = surface_metrics(pred_mask, ref_mask, spacing, nsd_tolerance_mm=nsd_tolerance_mm)
        dice = float(scores.dice[i])
        results[label] = LabelMetrics(
            dice=dice,
            iou=float(scores.iou[i]),
            precision=float(scores.precision[i]),
            recall=float(scores.recall[i]),
            specificity=float(scores.specificity[i]),
            accuracy=float(scores.accuracy[i]),
            f1=dice,
            volume_pred_ml=pred_count[i] * voxel_mm3 / 1000.0,
            volume_ref_ml=ref_count[i] * voxel_mm3 / 1000.0,
            rvd=float(scores.rvd[i]),
            hd=distances.hd,
            hd95=distances.hd95,
            assd=distances.assd,
            nsd=distances.nsd,
            tp=int(counts.tp[i]),
            fp=int(counts.fp[i]),
            fn=int(counts.fn[i]),
            tn=int(counts.tn[i]),
            pred_empty=pred_count[i] == 0,
            ref_empty=ref_count[i] == 0,
        )
    logger.debug(
        "Metrics of %d labels on a %s map (surface=%s) in %.3f s.",
        len(results),
        "x".join(map(str, pred.shape)),
        surface,
        time.perf_counter() - start,
    )
    return results


def _validated_maps(pred: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both maps as integer arrays (bool viewed as uint8), or InputError."""
    arrays = []
    for name, value in (("prediction", pred), ("reference", ref)):
        array = integer_label_values(np.asarray(value), what=f"The {name} label map")
        if array.ndim not in (2, 3):
            raise InputError(f"The {name} label map must be 2D or 3D, got shape {array.shape}.")
        if array.size == 0:
            raise InputError(f"The {name} label map is empty (shape {array.shape}).")
        if array.dtype == np.uint64 and int(array.max()) > np.iinfo(np.int64).max:
            raise InputError(f"The {name} label map has label values >= 2**63; use labels below 2**63.")
        arrays.append(array)
    if arrays[0].shape != arrays[1].shape:
        raise InputError(
            f"Prediction and reference must have the same shape, got {arrays[0].shape} and {arrays[1].shape}; "
            "resample the prediction onto the reference grid first."
        )
    return arrays[0], arrays[1]


def _validated_labels(labels: Sequence[int]) -> list[int]:
    """Distinct label values as Python ints in the order given, or InputError."""
    wanted: dict[int, None] = {}
    for value in labels:
        try:
            label = operator.index(value)
        except TypeError:
            raise InputError(f"Label values must be integers, got {value!r}.") from None
        if not np.iinfo(np.int64).min <= label <= np.iinfo(np.int64).max:
            raise InputError(f"Label values must fit in 64 bits, got {value!r}.")
        wanted[label] = None
    return list(wanted)


def _validated_spacing(spacing: Sequence[float], ndim: int) -> tuple[float, ...]:
    """Spacing as floats, or InputError unless it has ``ndim`` positive finite entries."""
    try:
        values = tuple(float(s) for s in spacing)
    except (TypeError, ValueError):
        raise InputError(
            f"Spacing must be a sequence of {ndim} numbers (mm, array axis order), got {spacing!r}."
        ) from None
    if len(values) != ndim or not all(math.isfinite(s) and s > 0 for s in values):
        raise InputError(
            f"Spacing must have {ndim} positive finite entries (mm, array axis order) for a {ndim}D map, "
            f"got {spacing!r}."
        )
    return values


def _validated_roi(roi: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The region of interest as a boolean array of ``shape`` (non-zero: inside), or InputError."""
    array = np.asarray(roi)
    if array.shape != shape:
        raise InputError(f"The ROI mask must have the label maps' shape {shape}, got {array.shape}.")
    if array.dtype != bool:
        array = integer_label_values(array, what="The ROI mask") != 0
    if not array.any():
        raise InputError("The ROI mask is empty: no voxel is inside it, so there is nothing to evaluate.")
    return array


def _bounding_boxes(label_map: np.ndarray, labels: list[int], inside: np.ndarray | None = None) -> dict[int, Box]:
    """Bounding box (slices in array order) of each of ``labels``, all of which occur in ``label_map`` (inside
    the boolean region ``inside`` when given; only the voxels there count).

    ITK's label-shape statistics (perimeter, Feret diameter and oriented box off) gives the boxes of all
    non-zero labels in one pass; label 0, ITK's background, is boxed with numpy projections.
    """
    boxes: dict[int, Box] = {}
    nonzero = [label for label in labels if label != 0]
    if nonzero:
        statistics = sitk.LabelShapeStatisticsImageFilter()
        statistics.ComputePerimeterOff()
        statistics.ComputeFeretDiameterOff()
        statistics.ComputeOrientedBoundingBoxOff()
        statistics.Execute(sitk.GetImageFromArray(label_map if inside is None else np.where(inside, label_map, 0)))
        ndim = label_map.ndim
        for label in nonzero:
            box = statistics.GetBoundingBox(label)  # ITK order: start (x, y, z) then size (x, y, z)
            starts, sizes = box[:ndim][::-1], box[ndim:][::-1]
            boxes[label] = tuple(slice(s, s + n) for s, n in zip(starts, sizes, strict=True))
    if 0 in labels:
        background = label_map == 0
        if inside is not None:
            background &= inside
        axes = range(background.ndim)
        boxes[0] = tuple(_extent(background.any(axis=tuple(a for a in axes if a != axis))) for axis in axes)
    return boxes


def _extent(present: np.ndarray) -> slice:
    """Slice from the first to the last True of a non-empty 1D boolean array."""
    indices = np.flatnonzero(present)
    return slice(int(indices[0]), int(indices[-1]) + 1)


def _union(first: Box, second: Box) -> Box:
    """Smallest box holding both boxes."""
    return tuple(slice(min(a.start, b.start), max(a.stop, b.stop)) for a, b in zip(first, second, strict=True))
