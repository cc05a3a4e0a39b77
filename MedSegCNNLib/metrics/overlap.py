"""Confusion counts of many labels in one pass over two label maps, and the overlap ratios built on them.

For label ``L`` with ``P = pred == L`` and ``R = ref == L`` over ``N`` voxels::

    TP = |P ∩ R|    FP = |P \\ R|    FN = |R \\ P|    TN = N - TP - FP - FN

Counting visits each voxel once for all labels together: slabs of both maps are turned into codes and one
``np.bincount`` over ``code_pred * M + code_ref`` gives the joint histogram, whose row sums, column sums and
diagonal are |P|, |R| and TP of every label. Codes are the label values themselves when they lie in
``[0, 2048)``; otherwise (negative, huge or sparse values) they are positions in the sorted requested labels,
with 0 for every other value. Inputs are assumed validated (same shape, integer dtype, values < 2**63);
:func:`MedSegCNNLib.metrics.label_metrics.compute_label_metrics` does that.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

_MAX_JOINT_CODES = 2048  # joint histogram of at most 2048**2 bins (32 MiB of int64)
_SLAB_VOXELS = 1 << 22  # voxels per slab: bounds the temporary arrays to a few tens of MiB

Encoder = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class ConfusionCounts:
    """Voxel counts per label; every array is aligned with ``labels`` (int64, shape ``(K,)``)."""

    labels: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    fn: np.ndarray
    tn: np.ndarray

    @property
    def pred_count(self) -> np.ndarray:
        """|P| = TP + FP."""
        return self.tp + self.fp

    @property
    def ref_count(self) -> np.ndarray:
        """|R| = TP + FN."""
        return self.tp + self.fn


@dataclass(frozen=True)
class OverlapScores:
    """Overlap ratios per label (float64 arrays aligned with the labels of the counts); see :func:`overlap_scores`."""

    dice: np.ndarray
    iou: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    specificity: np.ndarray
    accuracy: np.ndarray
    rvd: np.ndarray


def confusion_counts(pred: np.ndarray, ref: np.ndarray, labels: Sequence[int]) -> ConfusionCounts:
    """TP, FP, FN and TN of every label in ``labels``, from one pass over ``pred`` and ``ref``.

    ``pred`` and ``ref`` are integer arrays of the same shape. A label absent from a map simply has zero
    voxels there; ``labels`` may repeat values and may contain values absent from both maps.
    """
    wanted = np.asarray(labels, dtype=np.int64).reshape(-1)
    total = pred.size
    if wanted.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return ConfusionCounts(wanted, empty, empty, empty, empty)
    low = min(int(pred.min()), int(ref.min()))
    high = max(int(pred.max()), int(ref.max()))
    if low >= 0 and high < _MAX_JOINT_CODES:
        num_codes = high + 1
        encode: Encoder = _identity
        codes = np.where((wanted >= 0) & (wanted < num_codes), wanted, num_codes)  # num_codes: "absent" slot
    else:
        sorted_labels = np.unique(wanted)
        num_codes = sorted_labels.size + 1
        encode = _compact_encoder(sorted_labels)
        codes = np.searchsorted(sorted_labels, wanted) + 1
    counter = _joint_counts if num_codes <= _MAX_JOINT_CODES else _separate_counts
    pred_count, ref_count, tp = (np.append(c, 0)[codes] for c in counter(pred, ref, encode, num_codes))
    fp = pred_count - tp
    fn = ref_count - tp
    return ConfusionCounts(labels=wanted, tp=tp, fp=fp, fn=fn, tn=total - tp - fp - fn)


def overlap_scores(counts: ConfusionCounts) -> OverlapScores:
    """Overlap ratios from confusion counts, with the empty-mask policy; never NaN.

    dice = 2TP/(2TP+FP+FN); iou = TP/(TP+FP+FN); precision = TP/(TP+FP); recall = TP/(TP+FN);
    specificity = TN/(TN+FP); accuracy = (TP+TN)/N; rvd = (|P| - |R|)/|R| (relative volume difference).
    Where a denominator is 0: both masks empty -> dice = iou = precision = recall = 1 and rvd = 0; only
    the prediction empty -> precision = 0 (dice = iou = recall = 0 and rvd = -1 follow from the formulas);
    only the reference empty -> recall = 0 and rvd = +inf; TN + FP = 0 -> specificity = 1.
    """
    tp, fp, fn, tn = (c.astype(np.float64) for c in (counts.tp, counts.fp, counts.fn, counts.tn))
    both_empty = (tp + fp + fn) == 0
    return OverlapScores(
        dice=_ratio(2 * tp, 2 * tp + fp + fn, np.where(both_empty, 1.0, 0.0)),
        iou=_ratio(tp, tp + fp + fn, np.where(both_empty, 1.0, 0.0)),
        precision=_ratio(tp, tp + fp, np.where(fn == 0, 1.0, 0.0)),
        recall=_ratio(tp, tp + fn, np.where(fp == 0, 1.0, 0.0)),
        specificity=_ratio(tn, tn + fp, np.ones_like(tn)),
        accuracy=_ratio(tp + tn, tp + fp + fn + tn, np.ones_like(tn)),
        rvd=_ratio(fp - fn, tp + fn, np.where(fp == 0, 0.0, np.inf)),
    )


def _ratio(numerator: np.ndarray, denominator: np.ndarray, if_zero: np.ndarray) -> np.ndarray:
    """``numerator / denominator`` where the denominator is non-zero, ``if_zero`` elsewhere."""
    return np.divide(numerator, denominator, out=np.array(if_zero, dtype=np.float64), where=denominator != 0)


def _identity(values: np.ndarray) -> np.ndarray:
    return values


def _compact_encoder(sorted_labels: np.ndarray) -> Encoder:
    """Encoder mapping ``sorted_labels[i]`` to ``i + 1`` and every other value to 0."""
    last = sorted_labels.size - 1

    def encode(values: np.ndarray) -> np.ndarray:
        values = values.astype(np.int64, copy=False)
        position = np.searchsorted(sorted_labels, values)
        hit = sorted_labels[np.minimum(position, last)] == values
        return np.where(hit, position + 1, 0)

    return encode


def _slabs(pred: np.ndarray, ref: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Flattened slabs along the first axis of both arrays, about ``_SLAB_VOXELS`` voxels each."""
    step = max(1, _SLAB_VOXELS // max(1, int(np.prod(pred.shape[1:]))))
    for start in range(0, pred.shape[0], step):
        yield pred[start : start + step].ravel(), ref[start : start + step].ravel()


def _joint_counts(
    pred: np.ndarray, ref: np.ndarray, encode: Encoder, num_codes: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(|P|, |R|, TP) per code from the joint histogram of (pred code, ref code)."""
    histogram = np.zeros(num_codes * num_codes, dtype=np.int64)
    for pred_slab, ref_slab in _slabs(pred, ref):
        key = encode(pred_slab).astype(np.intp)
        key *= num_codes
        np.add(key, encode(ref_slab), out=key, casting="unsafe")
        histogram += np.bincount(key, minlength=histogram.size)
    histogram = histogram.reshape(num_codes, num_codes)
    return histogram.sum(axis=1), histogram.sum(axis=0), np.diagonal(histogram).copy()


def _separate_counts(
    pred: np.ndarray, ref: np.ndarray, encode: Encoder, num_codes: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(|P|, |R|, TP) per code from three histograms; for code ranges too large for a joint histogram."""
    pred_count, ref_count, tp = (np.zeros(num_codes, dtype=np.int64) for _ in range(3))
    for pred_slab, ref_slab in _slabs(pred, ref):
        pred_code = encode(pred_slab)
        ref_code = encode(ref_slab)
        pred_count += np.bincount(pred_code, minlength=num_codes)
        ref_count += np.bincount(ref_code, minlength=num_codes)
        tp += np.bincount(pred_code[pred_code == ref_code], minlength=num_codes)
    return pred_count, ref_count, tp
