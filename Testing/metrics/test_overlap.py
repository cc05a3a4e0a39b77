"""Confusion counts and overlap ratios, against per-label numpy counting and SimpleITK's overlap filter."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from MedSegCNNLib.metrics import overlap
from MedSegCNNLib.metrics.overlap import ConfusionCounts, confusion_counts, overlap_scores


def naive_counts(pred: np.ndarray, ref: np.ndarray, labels: list[int]) -> np.ndarray:
    """(K, 4) array of TP, FP, FN, TN, one boolean mask per label."""
    rows = []
    for label in labels:
        p, r = pred == label, ref == label
        tp, fp, fn = int((p & r).sum()), int((p & ~r).sum()), int((~p & r).sum())
        rows.append((tp, fp, fn, pred.size - tp - fp - fn))
    return np.array(rows, dtype=np.int64).reshape(-1, 4)


def as_array(counts: ConfusionCounts) -> np.ndarray:
    return np.stack([counts.tp, counts.fp, counts.fn, counts.tn], axis=1)


def random_maps(seed: int, shape: tuple[int, ...], values: np.ndarray, dtype: type) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ref = rng.choice(values, size=shape).astype(dtype)
    pred = np.where(rng.random(shape) < 0.7, ref, rng.choice(values, size=shape)).astype(dtype)
    return pred, ref


@pytest.mark.parametrize(
    ("dtype", "values", "labels"),
    [
        (np.uint8, np.arange(6), [1, 2, 3, 4, 5, 9, 300]),  # dense codes; 9 absent, 300 out of dtype range
        (np.uint16, np.array([0, 1, 2, 4000]), [4000, 2, 7]),  # values >= 2048: compact codes
        (np.int16, np.array([-5, 0, 3, 7]), [-5, 3, 7, 8]),  # negative values: compact codes
        (np.int64, np.array([0, 2**40, 2**62, 5]), [2**40, 2**62, 5, 1]),  # huge values
        (np.uint64, np.array([0, 1, 2**50]), [1, 2**50]),
        (np.int32, np.arange(4), [0, 1, 2, 3]),  # background requested explicitly
    ],
)
def test_counts_match_per_label_counting(dtype: type, values: np.ndarray, labels: list[int]) -> None:
    pred, ref = random_maps(0, (7, 9, 11), values, dtype)
    counts = confusion_counts(pred, ref, labels)
    assert counts.labels.tolist() == labels
    np.testing.assert_array_equal(as_array(counts), naive_counts(pred, ref, labels))


def test_repeated_labels_and_bool_maps() -> None:
    rng = np.random.default_rng(1)
    pred, ref = rng.random((2, 20, 30)) < 0.4
    counts = confusion_counts(pred, ref, [1, 0, 1])
    np.testing.assert_array_equal(as_array(counts), naive_counts(pred, ref, [1, 0, 1]))


def test_no_labels() -> None:
    counts = confusion_counts(np.zeros((3, 3), np.uint8), np.zeros((3, 3), np.uint8), [])
    assert counts.tp.shape == counts.tn.shape == (0,)


@pytest.mark.parametrize("compact", [False, True])
def test_separate_histograms_and_slabs_agree(monkeypatch: pytest.MonkeyPatch, compact: bool) -> None:
    """Force tiny slabs and the three-histogram path (used when a joint histogram would be too large)."""
    values = np.array([0, 1, 2, 3, 10**9]) if compact else np.arange(5)
    pred, ref = random_maps(2, (9, 8, 7), values, np.int64)
    labels = [int(v) for v in values] + [77]
    expected = naive_counts(pred, ref, labels)
    monkeypatch.setattr(overlap, "_SLAB_VOXELS", 50)
    np.testing.assert_array_equal(as_array(confusion_counts(pred, ref, labels)), expected)
    monkeypatch.setattr(overlap, "_MAX_JOINT_CODES", 3)
    np.testing.assert_array_equal(as_array(confusion_counts(pred, ref, labels)), expected)


def test_non_contiguous_input() -> None:
    pred, ref = random_maps(3, (10, 12, 14), np.arange(4), np.uint8)
    pred_view, ref_view = pred[:, ::2, ::-1], np.swapaxes(ref, 0, 2)[:, :6, :].swapaxes(0, 2)
    labels = [1, 2, 3]
    counts = confusion_counts(pred_view, ref_view, labels)
    np.testing.assert_array_equal(as_array(counts), naive_counts(pred_view, ref_view, labels))


def scores_of(tp: int, fp: int, fn: int, tn: int) -> dict[str, float]:
    counts = ConfusionCounts(*(np.array([v], dtype=np.int64) for v in (1, tp, fp, fn, tn)))
    scores = overlap_scores(counts)
    return {name: float(getattr(scores, name)[0]) for name in scores.__dataclass_fields__}


def test_scores_by_hand() -> None:
    got = scores_of(tp=6, fp=2, fn=4, tn=88)
    expected = {
        "dice": 12 / 18,
        "iou": 6 / 12,
        "precision": 6 / 8,
        "recall": 6 / 10,
        "specificity": 88 / 90,
        "accuracy": 94 / 100,
        "rvd": (8 - 10) / 10,
    }
    assert got == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(
    ("tp", "fp", "fn", "tn", "expected"),
    [
        (0, 0, 0, 10, {"dice": 1, "iou": 1, "precision": 1, "recall": 1, "specificity": 1, "accuracy": 1, "rvd": 0}),
        (0, 0, 4, 6, {"dice": 0, "iou": 0, "precision": 0, "recall": 0, "specificity": 1, "accuracy": 0.6, "rvd": -1}),
        (
            0,
            3,
            0,
            7,
            {"dice": 0, "iou": 0, "precision": 0, "recall": 0, "specificity": 0.7, "accuracy": 0.7, "rvd": np.inf},
        ),
        (5, 0, 0, 0, {"dice": 1, "iou": 1, "precision": 1, "recall": 1, "specificity": 1, "accuracy": 1, "rvd": 0}),
    ],
    ids=["both-empty", "pred-empty", "ref-empty", "tn-plus-fp-zero"],
)
def test_empty_policies(tp: int, fp: int, fn: int, tn: int, expected: dict[str, float]) -> None:
    got = scores_of(tp, fp, fn, tn)
    assert not any(np.isnan(v) for v in got.values())
    assert got == pytest.approx(expected, abs=0)


def test_dice_and_jaccard_match_simpleitk() -> None:
    pred, ref = random_maps(4, (12, 15, 17), np.arange(6), np.uint8)
    labels = [1, 2, 3, 4, 5]
    scores = overlap_scores(confusion_counts(pred, ref, labels))
    measures = sitk.LabelOverlapMeasuresImageFilter()
    measures.Execute(sitk.GetImageFromArray(pred), sitk.GetImageFromArray(ref))  # source, target
    for i, label in enumerate(labels):
        assert scores.dice[i] == pytest.approx(measures.GetDiceCoefficient(label), rel=1e-12)
        assert scores.iou[i] == pytest.approx(measures.GetJaccardCoefficient(label), rel=1e-12)
        # SimpleITK's false-negative error is |target \ source| / |target| = FN / |R| = 1 - recall.
        assert 1 - scores.recall[i] == pytest.approx(measures.GetFalseNegativeError(label), abs=1e-12)
