"""Preprocessing: cropping, resampling, normalisation, label handling, plans, and the way back."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from MedSegCNNLib import Image
from MedSegCNNLib.data.preprocessing import (
    FOREGROUND_SAMPLES_PER_LABEL,
    NormalizationSpec,
    PreprocessingPlan,
    preprocess_case,
    to_source_grid,
)
from MedSegCNNLib.errors import InputError
from MedSegCNNLib.image.geometry import Grid
from MedSegCNNLib.image.labels import as_label_array

NONE = (NormalizationSpec("none"),)


def _rotation(flip: bool) -> np.ndarray:
    """An oblique direction (rotations about z and x), with the last axis mirrored when ``flip``."""
    a, b = 0.7, 0.3
    about_z = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    about_x = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    return about_x @ about_z @ np.diag([1.0, 1.0, -1.0 if flip else 1.0])


def _blob_case(shape=(12, 14, 16), *, spacing=(0.8, 1.1, 2.0), direction="oblique", seed=0):
    """A float image that is zero outside a box, with a two-label map inside that box."""
    rng = np.random.default_rng(seed)
    array = np.zeros(shape, np.float32)
    array[2:9, 3:12, 4:13] = rng.normal(50, 10, size=(7, 9, 9)).astype(np.float32) + 100
    label = np.zeros(shape, np.uint8)
    label[3:8, 4:11, 5:12] = 1
    label[4:7, 5:9, 6:9] = 2
    geometry = {"spacing": spacing, "origin": (-20.0, 31.5, 7.25), "direction": _rotation(direction == "flipped")}
    return Image(array, **geometry), Image(label, **geometry)


def _centre(geometry: Grid) -> np.ndarray:
    return geometry.index_to_physical([(n - 1) / 2 for n in geometry.size])


def test_crop_box_and_lost_label_warning(caplog):
    image, label = _blob_case()
    plan = PreprocessingPlan(None, True, NONE)
    case = preprocess_case(image, label, plan, name="blob")
    assert case.crop_box == (slice(2, 9), slice(3, 12), slice(4, 13))
    np.testing.assert_array_equal(case.image[0], image.array[2:9, 3:12, 4:13])
    np.testing.assert_array_equal(case.label, label.array[2:9, 3:12, 4:13])
    assert case.spacing == image.array_spacing
    np.testing.assert_allclose(case.geometry.origin, image.index_to_physical([4, 3, 2]))
    outside = label.with_array(label.array.copy())
    outside.array[0, 0, 0] = 1
    with caplog.at_level(logging.WARNING):
        preprocess_case(image, outside, plan, name="blob")
    assert "1 labelled voxel(s)" in caplog.text


def test_no_crop_keeps_everything():
    image, label = _blob_case()
    case = preprocess_case(image, label, PreprocessingPlan(None, False, NONE))
    assert case.crop_box == (slice(0, 12), slice(0, 14), slice(0, 16))
    np.testing.assert_array_equal(case.image[0], image.array)
    assert case.image is not image.array and case.image.dtype == np.float32


@pytest.mark.parametrize("interpolation", ["linear", "bspline"])
def test_resampling_shape_extent_and_labels(interpolation):
    image, label = _blob_case()
    plan = PreprocessingPlan((0.5, 1.1, 1.0), False, NONE, image_interpolation=interpolation)
    case = preprocess_case(image, label, plan)
    source = Grid.of(image)
    # x: 16 * 0.8 / 0.5 = 25.6 -> 26; y kept; z: 12 * 2.0 / 1.0 = 24
    assert case.shape == (24, 14, 26)
    assert case.spacing == (1.0, 1.1, 0.5)
    np.testing.assert_allclose(_centre(case.geometry), _centre(source), atol=1e-9)
    extent_old = np.array(source.size) * source.spacing
    extent_new = np.array(case.geometry.size) * case.geometry.spacing
    assert np.all(np.abs(extent_new - extent_old) <= np.array(case.geometry.spacing) / 2 + 1e-9)
    assert case.label.dtype == np.uint8
    assert set(np.unique(case.label)) == {0, 1, 2}
    volumes = [np.count_nonzero(case.label == v) * np.prod(case.spacing) for v in (1, 2)]
    expected = [np.count_nonzero(label.array == v) * label.voxel_volume_mm3 for v in (1, 2)]
    np.testing.assert_allclose(volumes, expected, rtol=0.15)


def test_axes_with_none_or_nearly_equal_spacing_are_kept():
    image, label = _blob_case()
    case = preprocess_case(image, label, PreprocessingPlan((0.8000001, 0.55, None), False, NONE))
    assert case.shape == (12, 28, 16)
    assert case.spacing == (2.0, 0.55, 0.8)


def test_zscore_and_ct_normalisation():
    image, _ = _blob_case()
    zscore = preprocess_case(image, None, PreprocessingPlan(None, False, (NormalizationSpec("zscore"),)))
    assert abs(zscore.image.mean()) < 1e-5 and abs(zscore.image.std() - 1) < 1e-5
    masked = preprocess_case(image, None, PreprocessingPlan(None, True, (NormalizationSpec("zscore"),)))
    inside = image.array[2:9, 3:12, 4:13]
    np.testing.assert_allclose(masked.image[0], (inside - inside.mean()) / inside.std(), atol=1e-4)
    constant = image.with_array(np.full(image.shape, 7.0, np.float32))
    flat = preprocess_case(constant, None, PreprocessingPlan(None, False, (NormalizationSpec("zscore"),)))
    assert np.all(flat.image == 0)
    spec = NormalizationSpec("ct", clip_low=100.0, clip_high=150.0, mean=120.0, std=10.0)
    ct = preprocess_case(image, None, PreprocessingPlan(None, False, (spec,)))
    assert ct.image.min() == pytest.approx(-2.0) and ct.image.max() == pytest.approx(3.0)
    middle = (image.array > 100) & (image.array < 150)
    np.testing.assert_allclose(ct.image[0][middle], (image.array[middle] - 120) / 10, rtol=1e-6)


def test_multichannel_normalised_per_channel():
    image, label = _blob_case()
    two = Image(np.stack([image.array, image.array * 3 + 1]), image.spacing, image.origin, image.direction)
    plan = PreprocessingPlan(None, False, (NormalizationSpec("none"), NormalizationSpec("zscore")))
    case = preprocess_case(two, label, plan)
    np.testing.assert_array_equal(case.image[0], image.array)
    assert abs(case.image[1].std() - 1) < 1e-5
    with pytest.raises(InputError, match="2 channel"):
        preprocess_case(two, label, PreprocessingPlan(None, False, NONE))


def test_foreground_locations():
    shape = (30, 30, 30)
    label = np.zeros(shape, np.uint8)
    label[:, :, :20] = 1  # 18000 voxels: capped
    label[5, 6, 25] = 2
    image = Image.from_array(np.ones(shape, np.float32))
    case = preprocess_case(image, Image.from_array(label), PreprocessingPlan(None, False, NONE), seed=3)
    values = case.foreground_labels
    assert np.count_nonzero(values == 1) == FOREGROUND_SAMPLES_PER_LABEL
    assert np.count_nonzero(values == 2) == 1 and np.all(np.diff(values) >= 0)
    assert case.foreground_locations.shape == (FOREGROUND_SAMPLES_PER_LABEL + 1, 3)
    np.testing.assert_array_equal(label[tuple(case.foreground_locations.T)], values)
    assert len(np.unique(case.foreground_locations, axis=0)) == len(values)
    again = preprocess_case(image, Image.from_array(label), PreprocessingPlan(None, False, NONE), seed=3)
    np.testing.assert_array_equal(again.foreground_locations, case.foreground_locations)
    unlabelled = preprocess_case(image, None, PreprocessingPlan(None, False, NONE))
    assert unlabelled.label is None and unlabelled.foreground_locations.shape == (0, 3)


def test_integer_labels():
    def integer_labels(array: np.ndarray, what: str) -> np.ndarray:
        """Training label maps: whole floats accepted, the smallest label type."""
        return as_label_array(array, allow_whole_floats=True, compact=True, what=what)

    assert integer_labels(np.array([0.0, 2.0, 255.0], np.float32), "x").dtype == np.uint8
    assert integer_labels(np.array([0, 300]), "x").dtype == np.int16
    assert integer_labels(np.array([0, 70000]), "x").dtype == np.int32
    assert integer_labels(np.array([True, False]), "x").dtype == np.uint8
    with pytest.raises(InputError, match="non-integer values"):
        integer_labels(np.array([0.0, 1.5]), "the label map of case a")
    with pytest.raises(InputError, match="negative"):
        integer_labels(np.array([-1, 1]), "x")
    with pytest.raises(InputError, match="NaN"):
        integer_labels(np.array([np.nan, 1.0]), "x")


def test_plan_and_specs_round_trip_through_json():
    spec = NormalizationSpec("ct", clip_low=-100, clip_high=300, mean=40.5, std=80.25)
    plan = PreprocessingPlan((0.8, 0.8, None), True, (spec, NormalizationSpec("zscore")), "bspline", 2)
    data = json.loads(json.dumps(plan.to_dict()))
    assert PreprocessingPlan.from_dict(data) == plan
    assert data["normalization"][0] == {
        "scheme": "ct",
        "clip_low": -100.0,
        "clip_high": 300.0,
        "mean": 40.5,
        "std": 80.25,
    }
    geometry = Grid.of(_blob_case()[0])
    assert Grid.from_dict(json.loads(json.dumps(geometry.to_dict()))) == geometry


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: NormalizationSpec("minmax"), "Unknown normalisation"),
        (lambda: NormalizationSpec("ct", clip_low=0, clip_high=1, mean=0), "needs finite std"),
        (lambda: NormalizationSpec("ct", clip_low=2, clip_high=1, mean=0, std=1), "clip_low <= clip_high"),
        (lambda: NormalizationSpec("zscore", mean=1.0), "takes no mean"),
        (lambda: PreprocessingPlan((1.0, -1.0, 1.0), False, NONE), "positive"),
        (lambda: PreprocessingPlan(None, False, ()), "one normalisation per input channel"),
        (lambda: PreprocessingPlan(None, False, NONE, "cubic"), "Unknown image interpolation"),
        (lambda: PreprocessingPlan(None, False, NONE, spatial_dims=4), "spatial_dims"),
        (
            lambda: PreprocessingPlan.from_dict({"target_spacing": None, "crop": True}),
            "preprocessing plan: crop",
        ),
        (lambda: PreprocessingPlan.from_dict({"target_spacing": None}), "lacks the required field"),
    ],
)
def test_invalid_configuration(make, message):
    with pytest.raises(InputError, match=message):
        make()


def test_label_off_grid_and_wrong_spacing_length_are_refused():
    image, label = _blob_case()
    moved = Image(label.array, label.spacing, (0.0, 0.0, 0.0), label.direction)
    with pytest.raises(InputError, match="not on its image's grid"):
        preprocess_case(image, moved, PreprocessingPlan(None, False, NONE))
    with pytest.raises(InputError, match="plan is for a 3D model and the image is 2D; use a 2D model"):
        preprocess_case(Image.from_array(np.ones((4, 5), np.float32)), None, PreprocessingPlan((1, 1, 1), False, NONE))


@pytest.mark.parametrize("target", [(0.5, 0.8), (0.5, 0.8, None)])
def test_a_2d_plan_preprocesses_2d_images_and_3d_volumes_alike(target):
    """A 2D model's plan, made from 2D images (x, y) or from volumes (x, y, None), resamples in-plane only."""
    plan = PreprocessingPlan(target, False, NONE, spatial_dims=2)
    rotated = np.array([[np.cos(0.4), -np.sin(0.4)], [np.sin(0.4), np.cos(0.4)]])
    flat = Image(np.arange(30, dtype=np.float32).reshape(5, 6), (1.0, 1.6), (3.0, -2.5), rotated)
    case = preprocess_case(flat, None, plan)
    assert case.geometry.dims == 2 and case.geometry.spacing == (0.5, 0.8) and case.image.shape == (1, 10, 12)
    np.testing.assert_allclose(_centre(case.geometry), _centre(Grid.of(flat)), atol=1e-9)
    back = to_source_grid(np.ones(case.shape, np.uint8), case)
    assert back.shape == flat.shape and np.all(back == 1)
    volume, _label = _blob_case()  # spacing (0.8, 1.1, 2.0): z keeps its 2.0 mm and its 12 slices
    stacked = preprocess_case(volume, None, plan)
    assert stacked.geometry.spacing == (0.5, 0.8, 2.0) and stacked.image.shape == (1, 12, 19, 26)


def test_inverse_is_voxel_exact_without_resampling():
    image, label = _blob_case(direction="flipped")
    case = preprocess_case(image, label, PreprocessingPlan(None, True, NONE))
    back = to_source_grid(case.label, case)
    assert back.shape == label.shape and back.dtype == label.array.dtype
    np.testing.assert_array_equal(back, label.array)
    assert case.source_geometry.image(back).same_grid(label, tolerance=1e-9)
    probabilities = np.stack([case.label == 0, case.label != 0]).astype(np.float32)
    mapped = to_source_grid(probabilities, case, interpolation="linear", fill=(1.0, 0.0))
    np.testing.assert_array_equal(mapped[1], (label.array != 0).astype(np.float32))
    assert mapped[0, 0, 0, 0] == 1.0


def test_inverse_after_resampling():
    image, label = _blob_case()
    doubled = preprocess_case(image, label, PreprocessingPlan((0.4, 0.55, 1.0), True, NONE))
    np.testing.assert_array_equal(to_source_grid(doubled.label, doubled), label.array)  # factor 2: exact
    odd = preprocess_case(image, label, PreprocessingPlan((1.3, 0.7, 1.5), True, NONE))
    back = to_source_grid(odd.label, odd)
    coarser_half_voxel = 0.5 * np.maximum(1.0, np.array(odd.spacing) / label.array_spacing)  # original voxels
    for value in (1, 2):
        reference = label.array == value
        dice = 2 * np.count_nonzero(reference & (back == value)) / (reference.sum() + np.count_nonzero(back == value))
        assert dice > 0.75
        shift = np.abs(np.argwhere(back == value).mean(0) - np.argwhere(reference).mean(0))
        assert np.all(shift <= coarser_half_voxel)
    with pytest.raises(InputError, match="preprocessed to"):
        to_source_grid(np.zeros((3, 3, 3)), odd)


def test_two_dimensional_images():
    image = Image.from_array(np.arange(30, dtype=np.float32).reshape(5, 6) + 1, spacing=(1.0, 2.0))
    label = Image.from_array((np.arange(30).reshape(5, 6) % 3).astype(np.int64), spacing=(1.0, 2.0))
    case = preprocess_case(image, label, PreprocessingPlan((1.0, 1.0), True, NONE))
    assert case.shape == (10, 6) and case.label.dtype == np.uint8
    np.testing.assert_array_equal(to_source_grid(case.label, case), label.array)
