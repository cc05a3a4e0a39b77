"""compute_label_metrics: hand-computed cases, empty policies, cropping, properties and validation."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, arrays

from MedSegCNNLib.errors import InputError
from MedSegCNNLib.metrics.label_metrics import LabelMetrics, compute_label_metrics
from MedSegCNNLib.metrics.surface import surface_metrics

FIELDS = [
    "dice", "iou", "precision", "recall", "specificity", "accuracy", "f1", "volume_pred_ml", "volume_ref_ml", "rvd",
    "hd", "hd95", "assd", "nsd", "tp", "fp", "fn", "tn", "pred_empty", "ref_empty",
]  # fmt: skip
SURFACE_FIELDS = ("hd", "hd95", "assd", "nsd")


def cube_pair(side: int, shift: int, axis: int, shape: tuple[int, ...] = (16, 16, 16)) -> tuple[np.ndarray, np.ndarray]:
    """Reference: a cube of label 1 of side ``side``; prediction: that cube moved ``shift`` voxels along ``axis``."""
    ref = np.zeros(shape, np.uint8)
    ref[tuple(slice(2, 2 + side) for _ in shape)] = 1
    return np.roll(ref, shift, axis=axis), ref


# ----- hand-computed cases -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("side", "shift"), [(6, 1), (6, 2), (8, 3)])
def test_shifted_cube(side: int, shift: int) -> None:
    pred, ref = cube_pair(side, shift, axis=2)
    m = compute_label_metrics(pred, ref, [1], (1.0, 1.0, 1.0))[1]
    face = side * side
    assert (m.tp, m.fp, m.fn, m.tn) == (
        face * (side - shift),
        face * shift,
        face * shift,
        16**3 - face * (side + shift),
    )
    assert m.dice == pytest.approx((side - shift) / side)
    assert m.f1 == m.dice
    assert m.iou == pytest.approx((side - shift) / (side + shift))
    assert m.precision == m.recall == pytest.approx((side - shift) / side)
    assert m.hd == pytest.approx(shift)
    assert m.volume_pred_ml == m.volume_ref_ml == pytest.approx(side**3 / 1000)
    assert m.rvd == 0.0


def test_anisotropic_spacing_uses_the_spacing_of_the_shifted_axis() -> None:
    spacing = (3.0, 0.5, 0.5)  # array order: the first axis is the coarse one
    coarse = compute_label_metrics(*cube_pair(6, 2, axis=0), [1], spacing)[1]
    fine = compute_label_metrics(*cube_pair(6, 2, axis=2), [1], spacing)[1]
    assert coarse.hd == pytest.approx(2 * 3.0)
    assert fine.hd == pytest.approx(2 * 0.5)
    assert coarse.dice == fine.dice == pytest.approx(4 / 6)
    assert coarse.volume_ref_ml == pytest.approx(6**3 * 0.75 / 1000)


def test_mask_touching_the_array_border_has_surface_there() -> None:
    """ref: rows 0-3 of a 6x6 image, pred: rows 0-4; both touch the border on three sides.

    S_P = row 0, row 4 and the border columns (18 voxels); only row 4 (6 voxels) is 1 mm from S_R.
    S_R = row 0, row 3 and the border columns (16 voxels); only row 3, columns 1-4, is 1 mm from S_P.
    If the border did not count as outside, rows 0 and the border columns would not be surface.
    """
    ref = np.zeros((6, 6), np.int32)
    ref[0:4] = 1
    pred = np.zeros_like(ref)
    pred[0:5] = 1
    m = compute_label_metrics(pred, ref, [1], (1.0, 1.0), nsd_tolerance_mm=0.5)[1]
    assert m.hd == m.hd95 == 1.0
    assert m.assd == pytest.approx((6 + 4) / (18 + 16))
    assert m.nsd == pytest.approx((12 + 12) / (18 + 16))
    assert compute_label_metrics(pred, ref, [1], (1.0, 1.0), nsd_tolerance_mm=1.0)[1].nsd == 1.0


def test_2d_shifted_square_with_anisotropic_spacing() -> None:
    pred, ref = cube_pair(5, 2, axis=0, shape=(12, 12))
    m = compute_label_metrics(pred, ref, [1], (2.0, 0.5))[1]
    assert m.hd == pytest.approx(4.0)
    assert m.dice == pytest.approx(3 / 5)
    assert m.volume_ref_ml == pytest.approx(25 * 1.0 / 1000)


def test_hd95_is_the_larger_directed_percentile_not_the_pooled_one() -> None:
    """A 6^3 cube in both maps; the prediction adds a 2x2x3 blob 11-13 voxels in front of a cube face.

    d(P→R): 152 zeros (the shared shell) and 4 blob voxels each at 11, 12, 13 mm, so 7.3 % of the values are
    large and its 95th percentile is large; d(R→P): 152 zeros. Pooled, the blob is 3.8 % of 316 values, so
    the pooled 95th percentile is 0.
    """
    ref = np.zeros((10, 10, 24), np.uint8)
    ref[2:8, 2:8, 2:8] = 1
    pred = ref.copy()
    pred[3:5, 3:5, 18:21] = 1
    m = compute_label_metrics(pred, ref, [1], (1.0, 1.0, 1.0))[1]
    pred_to_ref = np.array([0.0] * 152 + [11.0] * 4 + [12.0] * 4 + [13.0] * 4)
    ref_to_pred = np.zeros(152)
    directed = max(np.percentile(pred_to_ref, 95), np.percentile(ref_to_pred, 95))
    pooled = np.percentile(np.concatenate([pred_to_ref, ref_to_pred]), 95)
    assert pooled == 0.0 and directed > 10
    assert m.hd95 == pytest.approx(directed)
    assert m.hd == 13.0
    assert m.assd == pytest.approx(pred_to_ref.sum() / (164 + 152))
    assert m.nsd == pytest.approx(304 / 316)


# ----- empty-mask policy -------------------------------------------------------------------------------------------


def full_expectation(m: LabelMetrics, **expected: float | bool) -> None:
    """Every field of ``m``, compared exactly; no field may be NaN."""
    got = m.as_dict()
    assert not any(isinstance(v, float) and math.isnan(v) for v in got.values())
    assert got == expected


def test_both_empty_label_absent_from_both_maps() -> None:
    pred = np.array([[0, 1], [1, 0]], np.uint8)
    m = compute_label_metrics(pred, pred, [7], (1.0, 1.0))[7]
    full_expectation(
        m, dice=1.0, iou=1.0, precision=1.0, recall=1.0, specificity=1.0, accuracy=1.0, f1=1.0,
        volume_pred_ml=0.0, volume_ref_ml=0.0, rvd=0.0, hd=0.0, hd95=0.0, assd=0.0, nsd=1.0,
        tp=0, fp=0, fn=0, tn=4, pred_empty=True, ref_empty=True,
    )  # fmt: skip


def test_pred_empty() -> None:
    ref = np.zeros((4, 5), np.uint8)
    ref[1:3, 1:3] = 2
    m = compute_label_metrics(np.zeros_like(ref), ref, [2], (2.0, 5.0))[2]
    full_expectation(
        m, dice=0.0, iou=0.0, precision=0.0, recall=0.0, specificity=1.0, accuracy=16 / 20, f1=0.0,
        volume_pred_ml=0.0, volume_ref_ml=0.04, rvd=-1.0, hd=math.inf, hd95=math.inf, assd=math.inf, nsd=0.0,
        tp=0, fp=0, fn=4, tn=16, pred_empty=True, ref_empty=False,
    )  # fmt: skip


def test_ref_empty() -> None:
    pred = np.zeros((4, 5), np.uint8)
    pred[0, :] = 3
    m = compute_label_metrics(pred, np.zeros_like(pred), [3], (2.0, 5.0))[3]
    full_expectation(
        m, dice=0.0, iou=0.0, precision=0.0, recall=0.0, specificity=15 / 20, accuracy=15 / 20, f1=0.0,
        volume_pred_ml=0.05, volume_ref_ml=0.0, rvd=math.inf, hd=math.inf, hd95=math.inf, assd=math.inf, nsd=0.0,
        tp=0, fp=5, fn=0, tn=15, pred_empty=False, ref_empty=True,
    )  # fmt: skip


def test_labels_present_in_one_map_only_among_others() -> None:
    ref = np.zeros((8, 9, 10), np.int16)
    ref[1:4, 1:4, 1:4] = 1
    ref[5:7, 5:8, 5:9] = 2
    pred = ref.copy()
    pred[pred == 2] = 0
    pred[0, 0, 0] = 3
    result = compute_label_metrics(pred, ref, [1, 2, 3, 4], (1.0, 1.0, 1.0))
    assert list(result) == [1, 2, 3, 4]
    assert (result[1].dice, result[1].hd, result[1].nsd) == (1.0, 0.0, 1.0)
    assert result[2].pred_empty and not result[2].ref_empty and result[2].hd == math.inf and result[2].rvd == -1
    assert result[3].ref_empty and not result[3].pred_empty and result[3].hd == math.inf and result[3].rvd == math.inf
    assert result[4].pred_empty and result[4].ref_empty and result[4].dice == 1.0 and result[4].hd == 0.0


# ----- cropping and bounding boxes ------------------------------------------------------------------------------


def random_label_map(rng: np.random.Generator, shape: tuple[int, ...], values: list[int]) -> np.ndarray:
    """Random boxes of the given label values, later ones painted over earlier ones, on a background of 0."""
    label_map = np.zeros(shape, np.int64)
    for value in values * 2:
        starts = [int(rng.integers(0, n)) for n in shape]
        box = tuple(slice(s, s + int(rng.integers(1, max(2, n // 2)))) for s, n in zip(starts, shape, strict=True))
        label_map[box] = value
    return label_map


@pytest.mark.parametrize(
    ("values", "dtype"),
    [([1, 2, 3, 4, 5], np.uint8), ([-3, 7, 2**40], np.int64), ([1, 2, 3], np.uint16)],
)
def test_cropped_surface_work_equals_full_volume_computation(values: list[int], dtype: type) -> None:
    """Per-label crops to the union bounding box must not change anything (reference: uncropped masks)."""
    rng = np.random.default_rng(3)
    spacing = (1.5, 0.75, 1.25)
    for _ in range(4):
        pred = random_label_map(rng, (14, 17, 19), values).astype(dtype)
        ref = random_label_map(rng, (14, 17, 19), values).astype(dtype)
        labels = [0, *values]
        result = compute_label_metrics(pred, ref, labels, spacing, nsd_tolerance_mm=2.0)
        for label in labels:
            p, r = pred == label, ref == label
            if p.any() and r.any():
                expected = surface_metrics(p, r, spacing, nsd_tolerance_mm=2.0)
                got = result[label]
                assert (got.hd, got.hd95, got.assd, got.nsd) == (
                    expected.hd,
                    expected.hd95,
                    expected.assd,
                    expected.nsd,
                )


def test_surface_false_leaves_surface_fields_nan_and_the_rest_unchanged() -> None:
    rng = np.random.default_rng(4)
    pred = random_label_map(rng, (10, 11, 12), [1, 2]).astype(np.uint8)
    ref = random_label_map(rng, (10, 11, 12), [1, 2]).astype(np.uint8)
    full = compute_label_metrics(pred, ref, [1, 2, 3], (1.0, 1.0, 1.0))
    fast = compute_label_metrics(pred, ref, [1, 2, 3], (1.0, 1.0, 1.0), surface=False)
    for label in (1, 2, 3):
        got, expected = fast[label].as_dict(), full[label].as_dict()
        assert all(math.isnan(got.pop(name)) for name in SURFACE_FIELDS)
        assert got == {k: v for k, v in expected.items() if k not in SURFACE_FIELDS}


def test_as_dict_has_exactly_the_fields_with_python_scalars() -> None:
    ref = np.zeros((5, 5), np.uint8)
    ref[1:3, 1:4] = 1
    d = compute_label_metrics(np.roll(ref, 1, axis=1), ref, [1], (1.0, 1.0))[1].as_dict()
    assert list(d) == FIELDS == [f.name for f in dataclasses.fields(LabelMetrics)]
    for name, value in d.items():
        expected_type = bool if name.endswith("_empty") else int if name in ("tp", "fp", "fn", "tn") else float
        assert type(value) is expected_type, name


# ----- properties ---------------------------------------------------------------------------------------------------


@st.composite
def label_map_pairs(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, list[float]]:
    shape = draw(array_shapes(min_dims=2, max_dims=3, min_side=1, max_side=8))
    pred = draw(arrays(np.uint8, shape, elements=st.integers(0, 3)))
    ref = draw(arrays(np.uint8, shape, elements=st.integers(0, 3)))
    spacing = draw(st.lists(st.integers(1, 24).map(lambda n: n / 8), min_size=len(shape), max_size=len(shape)))
    return pred, ref, spacing


@settings(max_examples=80, deadline=None)
@given(label_map_pairs(), st.floats(0, 4))
def test_swapping_pred_and_ref(maps: tuple[np.ndarray, np.ndarray, list[float]], tau: float) -> None:
    pred, ref, spacing = maps
    forward = compute_label_metrics(pred, ref, [1, 2, 3], spacing, nsd_tolerance_mm=tau)
    backward = compute_label_metrics(ref, pred, [1, 2, 3], spacing, nsd_tolerance_mm=tau)
    for label in (1, 2, 3):
        f, b = forward[label], backward[label]
        for name in ("dice", "iou", "f1", "accuracy", *SURFACE_FIELDS):
            assert getattr(f, name) == pytest.approx(getattr(b, name), rel=1e-12), name
        assert (f.precision, f.recall) == (b.recall, b.precision)
        assert (f.tp, f.fp, f.fn, f.tn) == (b.tp, b.fn, b.fp, b.tn)


@settings(max_examples=80, deadline=None)
@given(label_map_pairs(), st.floats(0, 4))
def test_bounds(maps: tuple[np.ndarray, np.ndarray, list[float]], tau: float) -> None:
    pred, ref, spacing = maps
    for m in compute_label_metrics(pred, ref, [0, 1, 2, 3], spacing, nsd_tolerance_mm=tau).values():
        assert not any(isinstance(v, float) and math.isnan(v) for v in m.as_dict().values())
        assert 0 <= m.iou <= m.dice <= 1
        assert 0 <= m.nsd <= 1
        assert m.hd >= m.hd95 >= 0
        assert m.hd >= m.assd >= 0
        assert 0 <= min(m.precision, m.recall, m.specificity, m.accuracy) <= max(m.precision, m.recall) <= 1
        assert m.tp + m.fp + m.fn + m.tn == pred.size


@settings(max_examples=60, deadline=None)
@given(label_map_pairs())
def test_identical_maps(maps: tuple[np.ndarray, np.ndarray, list[float]]) -> None:
    pred, _, spacing = maps
    for m in compute_label_metrics(pred, pred.copy(), [1, 2, 3], spacing).values():
        assert (m.dice, m.iou, m.hd, m.hd95, m.assd, m.nsd, m.rvd) == (1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


# ----- validation ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pred", "ref", "labels", "spacing", "kwargs", "message"),
    [
        (np.zeros((4, 4), np.uint8), np.zeros((4, 5), np.uint8), [1], (1.0, 1.0), {}, "same shape"),
        (np.zeros((4, 4), np.float32), np.zeros((4, 4), np.uint8), [1], (1.0, 1.0), {}, "integer dtype"),
        (np.zeros((4, 4), np.uint8), np.zeros((4, 4), np.float64), [1], (1.0, 1.0), {}, "integer dtype"),
        (np.zeros((4, 4), np.uint8), np.zeros((4, 4), np.uint8), [1], (1.0,), {}, "2 positive finite entries"),
        (np.zeros((4, 4), np.uint8), np.zeros((4, 4), np.uint8), [1], (1.0, 0.0), {}, "positive finite"),
        (np.zeros((4, 4), np.uint8), np.zeros((4, 4), np.uint8), [1], (1.0, -2.0), {}, "positive finite"),
        (np.zeros((4, 4), np.uint8), np.zeros((4, 4), np.uint8), [1], (1.0, math.nan), {}, "positive finite"),
        (np.zeros((4, 4), np.uint8), np.zeros((4, 4), np.uint8), [1], "ab", {}, "sequence of 2 numbers"),
        (np.zeros(4, np.uint8), np.zeros(4, np.uint8), [1], (1.0,), {}, "2D or 3D"),
        (np.zeros((0, 4), np.uint8), np.zeros((0, 4), np.uint8), [1], (1.0, 1.0), {}, "empty"),
        (np.zeros((4, 4), np.uint8), np.zeros((4, 4), np.uint8), [1.5], (1.0, 1.0), {}, "integers"),
        (np.zeros((4, 4), np.uint8), np.zeros((4, 4), np.uint8), [2**70], (1.0, 1.0), {}, "64 bits"),
        (np.zeros((4, 4), np.uint8), np.zeros((4, 4), np.uint8), [1], (1.0, 1.0), {"nsd_tolerance_mm": -1}, "NSD"),
        (np.full((2, 2), 2**63, np.uint64), np.zeros((2, 2), np.uint64), [1], (1.0, 1.0), {}, "2\\*\\*63"),
    ],
)
def test_validation_errors(
    pred: np.ndarray, ref: np.ndarray, labels: list, spacing: tuple, kwargs: dict, message: str
) -> None:
    with pytest.raises(InputError, match=message):
        compute_label_metrics(pred, ref, labels, spacing, **kwargs)


def test_bool_maps_are_accepted_as_zero_one() -> None:
    ref = np.zeros((6, 6), bool)
    ref[1:4, 1:4] = True
    m = compute_label_metrics(np.roll(ref, 1, axis=0), ref, [1], (1.0, 1.0))[1]
    assert m.dice == pytest.approx(2 / 3)
    assert m.hd == 1.0
