"""Post-processing of label maps: components measured in mm³ with the image spacing, hole filling,
label selection, geometry kept; probabilities to labels with per-label thresholds."""

from __future__ import annotations

import json

import numpy as np
import pytest

from MedSegCNNLib.errors import InputError
from MedSegCNNLib.image.core import Image, LabelInfo
from MedSegCNNLib.postprocessing import PostprocessingConfig, labels_from_probabilities, postprocess


def label_image(array: np.ndarray, spacing: tuple[float, ...] = (1.0, 1.0, 1.0)) -> Image:
    return Image.from_array(array, spacing=spacing)


def two_blobs(dtype=np.int16) -> np.ndarray:
    """Label 1: a 3×3×3 blob (27 voxels) and a 2×2×2 blob (8 voxels); label 2: a 2×2×2 and a 1-voxel blob."""
    array = np.zeros((12, 12, 12), dtype=dtype)
    array[1:4, 1:4, 1:4] = 1
    array[8:10, 8:10, 8:10] = 1
    array[1:3, 8:10, 1:3] = 2
    array[10, 1, 10] = 2
    return array


def test_keep_largest_keeps_the_bigger_blob_of_listed_labels_only():
    array = two_blobs()
    result = postprocess(label_image(array), PostprocessingConfig(keep_largest=[1])).array
    assert np.count_nonzero(result == 1) == 27
    assert np.all(result[1:4, 1:4, 1:4] == 1)
    assert np.all(result[8:10, 8:10, 8:10] == 0)
    np.testing.assert_array_equal(result == 2, array == 2)  # label 2 not listed: untouched

    everything = postprocess(label_image(array), PostprocessingConfig(keep_largest=True)).array
    assert np.count_nonzero(everything == 1) == 27
    assert np.count_nonzero(everything == 2) == 8


def test_min_size_uses_physical_volume_not_voxel_count():
    array = np.zeros((10, 10, 10), dtype=np.uint8)
    array[1, 1, 1:6] = 1  # 5 voxels × 4 mm³ = 20 mm³: kept, though 5 voxels < 10
    array[6, 6, 6:8] = 1  # 2 voxels × 4 mm³ = 8 mm³: removed
    array[8, 1, 1:4] = 2  # 3 voxels × 4 mm³ = 12 mm³: kept
    image = label_image(array, spacing=(1.0, 1.0, 4.0))  # voxel volume 4 mm³
    result = postprocess(image, PostprocessingConfig(min_size_mm3=10.0)).array
    assert np.count_nonzero(result == 1) == 5
    assert np.all(result[1, 1, 1:6] == 1)
    assert np.all(result[6, 6, 6:8] == 0)
    assert np.count_nonzero(result == 2) == 3
    at_threshold = postprocess(image, PostprocessingConfig(min_size_mm3=20.0)).array  # exactly 20 mm³: kept
    assert np.count_nonzero(at_threshold == 1) == 5
    # The same map at 1 mm³ voxels: every component is below 10 mm³.
    isotropic = postprocess(label_image(array), PostprocessingConfig(min_size_mm3=10.0)).array
    assert not isotropic.any()


def test_small_components_removed_before_keeping_the_largest():
    array = two_blobs()
    config = PostprocessingConfig(keep_largest=True, min_size_mm3=30.0)  # every component < 30 mm³
    assert not postprocess(label_image(array), config).array.any()


def test_fill_holes_fills_a_hollow_cube_in_3d_but_not_an_open_tube():
    array = np.zeros((9, 9, 9), dtype=np.uint8)
    array[1:8, 1:8, 1:8] = 1
    array[3:6, 3:6, 3:6] = 0  # enclosed cavity of 27 voxels
    array[4, 4, 4] = 2  # another label inside the cavity is kept
    tube = np.zeros((9, 9, 9), dtype=np.uint8)
    tube[:, 1:8, 1:8] = 3
    tube[:, 3:6, 3:6] = 0  # open at both ends along z: not a hole in 3D
    image = label_image(array)
    result = postprocess(image, PostprocessingConfig(fill_holes=True)).array
    expected = array.copy()
    expected[3:6, 3:6, 3:6] = 1
    expected[4, 4, 4] = 2
    np.testing.assert_array_equal(result, expected)
    tube_result = postprocess(label_image(tube), PostprocessingConfig(fill_holes=True)).array
    np.testing.assert_array_equal(tube_result, tube)


def test_fill_holes_only_for_listed_labels():
    array = np.zeros((9, 9, 20), dtype=np.uint8)
    array[1:8, 1:8, 1:8] = 1
    array[3:6, 3:6, 3:6] = 0
    array[1:8, 1:8, 11:18] = 2
    array[3:6, 3:6, 13:16] = 0
    result = postprocess(label_image(array), PostprocessingConfig(fill_holes=[2])).array
    assert np.all(result[3:6, 3:6, 3:6] == 0)  # label 1 not listed
    assert np.all(result[3:6, 3:6, 13:16] == 2)


def test_connectivity_face_versus_full():
    array = np.zeros((6, 6, 6), dtype=np.uint8)
    array[1:3, 1:3, 1:3] = 1  # 8 voxels
    array[3, 3, 3] = 1  # touches the cube only at a corner
    face = postprocess(label_image(array), PostprocessingConfig(keep_largest=True)).array
    full = postprocess(label_image(array), PostprocessingConfig(keep_largest=True, connectivity="full")).array
    assert np.count_nonzero(face) == 8
    assert np.count_nonzero(full) == 9


def test_geometry_labels_and_dtype_are_kept_and_input_untouched():
    array = two_blobs(np.int16)
    direction = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])
    names = (LabelInfo(1, "liver", (1.0, 0.0, 0.0)), LabelInfo(2, "spleen"))
    image = Image.from_array(array, (0.7, 1.3, 2.9), (-12.5, 3.0, 7.25), direction, names)
    before = array.copy()
    result = postprocess(image, PostprocessingConfig(keep_largest=True, fill_holes=True, min_size_mm3=1.0))
    assert result is not image
    assert result.same_grid(image, tolerance=0)
    assert result.array.dtype == np.int16
    assert result.labels == names
    np.testing.assert_array_equal(image.array, before)
    assert np.count_nonzero(result.array == 1) == 27


def test_2d_label_map_and_bool_map():
    array = np.zeros((10, 10), dtype=np.uint8)
    array[1:6, 1:6] = 1
    array[3, 3] = 0  # hole
    array[8, 8] = 1  # small island
    result = postprocess(Image.from_array(array), PostprocessingConfig(keep_largest=True, fill_holes=True)).array
    expected = np.zeros_like(array)
    expected[1:6, 1:6] = 1
    np.testing.assert_array_equal(result, expected)
    mask = postprocess(Image.from_array(array.astype(bool)), PostprocessingConfig(keep_largest=True)).array
    assert mask.dtype == np.uint8
    assert np.count_nonzero(mask) == 24


def test_inactive_config_returns_an_equal_copy():
    array = two_blobs()
    image = label_image(array)
    result = postprocess(image, PostprocessingConfig())
    assert not PostprocessingConfig().active
    np.testing.assert_array_equal(result.array, array)
    assert result.array is not image.array


def test_non_label_maps_are_refused():
    with pytest.raises(InputError, match="integer"):
        postprocess(label_image(np.zeros((3, 3, 3), np.float32)), PostprocessingConfig(keep_largest=True))
    with pytest.raises(InputError, match="channel"):
        image = Image.from_array(np.zeros((2, 3, 3, 3), np.uint8), spacing=(1.0, 1.0, 1.0))
        postprocess(image, PostprocessingConfig(keep_largest=True))


def test_config_round_trip_through_json():
    config = PostprocessingConfig(keep_largest=[3, 1, 3], min_size_mm3=12.5, fill_holes=True, connectivity="full")
    data = json.loads(json.dumps(config.to_dict()))
    assert data == {"keep_largest": [1, 3], "min_size_mm3": 12.5, "fill_holes": True, "connectivity": "full"}
    assert PostprocessingConfig.from_dict(data) == config
    assert PostprocessingConfig.from_dict({}) == PostprocessingConfig()
    assert PostprocessingConfig(keep_largest=np.array([2, 1])).keep_largest == (1, 2)


@pytest.mark.parametrize(
    "options",
    [
        {"keep_largest": [0]},
        {"keep_largest": [1.5]},
        {"keep_largest": "1"},
        {"fill_holes": [-2]},
        {"fill_holes": 1},
        {"min_size_mm3": -1.0},
        {"min_size_mm3": float("nan")},
        {"min_size_mm3": "5"},
        {"connectivity": "edge"},
        {"keep_biggest": True},
    ],
)
def test_config_validation(options):
    with pytest.raises(InputError):
        PostprocessingConfig.from_dict(options)


def test_labels_from_probabilities_argmax_and_ties():
    probabilities = np.array(
        [
            [[0.6, 0.2, 0.4, 1 / 3]],
            [[0.3, 0.7, 0.4, 1 / 3]],
            [[0.1, 0.1, 0.2, 1 / 3]],
        ]
    )
    labels = labels_from_probabilities(probabilities)
    np.testing.assert_array_equal(labels, [[0, 1, 0, 0]])  # ties go to the lowest label
    assert labels.dtype == np.uint8


def test_labels_from_probabilities_thresholds_make_background_not_second_best():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(4, 5, 6, 7))
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=0)
    argmax = probabilities.argmax(axis=0)
    labels = labels_from_probabilities(probabilities.astype(np.float32), thresholds={2: 0.5, 3: 0.0})
    expected = argmax.copy()
    expected[(argmax == 2) & (probabilities[2] < 0.5)] = 0
    np.testing.assert_array_equal(labels, expected)
    assert np.any((argmax == 2) & (labels == 0))  # the threshold did something
    np.testing.assert_array_equal(labels_from_probabilities(probabilities, thresholds={}), argmax)


@pytest.mark.parametrize("thresholds", [{0: 0.5}, {4: 0.5}, {1: 1.5}, {1: -0.1}, {1: "0.5"}])
def test_labels_from_probabilities_rejects_bad_thresholds(thresholds):
    with pytest.raises(InputError):
        labels_from_probabilities(np.full((4, 2, 2), 0.25), thresholds=thresholds)


def test_labels_from_probabilities_rejects_bad_arrays():
    with pytest.raises(InputError):
        labels_from_probabilities(np.zeros(3))
    with pytest.raises(InputError):
        labels_from_probabilities(np.zeros((2, 3, 3), dtype=np.int64))


@pytest.mark.parametrize("connectivity", ["face", "full"])
@pytest.mark.parametrize(
    "options", [{"min_size_mm3": 3.0}, {"keep_largest": True}, {"keep_largest": [2, 5], "min_size_mm3": 2.0}]
)
def test_one_pass_over_a_noisy_many_label_map_equals_the_per_label_path(monkeypatch, options, connectivity):
    """Noisy labels everywhere (their boxes overlap) take the whole-map pass; it must match label by label."""
    from MedSegCNNLib import postprocessing

    rng = np.random.default_rng(3)
    blocks = np.kron(rng.integers(0, 7, size=(3, 4, 4)), np.ones((4, 4, 4), dtype=np.int64))
    noisy = np.where(rng.random(blocks.shape) < 0.15, rng.integers(0, 7, size=blocks.shape), blocks).astype(np.uint8)
    image = label_image(noisy, spacing=(1.0, 0.5, 2.0))
    config = PostprocessingConfig(connectivity=connectivity, **options)
    whole_map_calls = []
    one_pass = postprocessing._prune_components_at_once
    monkeypatch.setattr(
        postprocessing, "_prune_components_at_once", lambda *a, **k: whole_map_calls.append(1) or one_pass(*a, **k)
    )
    result = postprocess(image, config).array
    assert whole_map_calls, "the noisy map should have taken the whole-map pass"

    expected = noisy.copy()
    present = [int(v) for v in np.unique(noisy) if v > 0]
    largest = present if config.keep_largest is True else list(config.keep_largest or ())
    min_voxels = int(np.ceil(config.min_size_mm3 / image.voxel_volume_mm3 - 1e-9))
    for label in present if config.min_size_mm3 > 0 else largest:
        postprocessing._prune_components(
            expected, label, (slice(None),) * 3, min_voxels=min_voxels, keep_largest=label in largest,
            fully_connected=connectivity == "full",
        )  # fmt: skip
    assert (expected != noisy).any(), "the options should remove something"
    np.testing.assert_array_equal(result, expected)
