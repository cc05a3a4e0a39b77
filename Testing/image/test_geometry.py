"""Voxel grids, physical overlap of oriented voxel boxes, resampling onto another grid and label voxels placed on
another grid's lattice."""

from __future__ import annotations

import numpy as np
import pytest

from MedSegCNNLib.errors import GeometryError
from MedSegCNNLib.image.core import Image, LabelInfo
from MedSegCNNLib.image.geometry import (
    Grid,
    grid_difference,
    physical_overlap,
    place_on_grid,
    resample_labels_onto,
    resample_onto,
    uncovered_fraction,
)

ROTATION_45_Z = np.array([[1.0, -1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 2**0.5]]) / 2**0.5


def box(size_xyz, origin, direction=None, spacing=(1.0, 1.0, 1.0)) -> Image:
    return Image.from_array(np.zeros(size_xyz[::-1], np.uint8), spacing, origin, direction)


def test_an_image_overlaps_itself_and_a_shifted_copy(make_image):
    image = make_image((4, 5, 6), direction="oblique")
    assert physical_overlap(image, image)
    half_way = Image(image.array, image.spacing, image.index_to_physical([3, 2, 2]), image.direction)
    assert physical_overlap(image, half_way) and physical_overlap(half_way, image)


def test_separated_and_face_touching_boxes_do_not_overlap():
    a = box((10, 10, 10), (0.0, 0.0, 0.0))  # voxel faces span -0.5 .. 9.5 on each axis
    assert not physical_overlap(a, box((5, 5, 5), (20.0, 0.0, 0.0)))
    assert not physical_overlap(a, box((5, 5, 5), (10.0, 0.0, 0.0)))  # touching faces share no volume
    assert physical_overlap(a, box((5, 5, 5), (9.9, 0.0, 0.0)))


def test_oblique_boxes_are_tested_exactly_not_by_bounding_boxes():
    diagonal = box((20, 1, 1), (0.0, 0.0, 0.0), ROTATION_45_Z)  # a thin bar from (0, 0) to about (13.4, 13.4)
    beside = box((2, 2, 2), (12.0, 2.0, 0.0))  # inside the bar's axis-aligned bounding box, far from the bar
    on_bar = box((2, 2, 2), (7.0, 7.0, 0.0))
    assert not physical_overlap(diagonal, beside)
    assert physical_overlap(diagonal, on_bar)


def test_images_of_different_dimension_do_not_overlap(make_image):
    assert not physical_overlap(make_image((4, 5, 6)), make_image((5, 6)))


def test_resampling_onto_the_same_grid_is_the_identity(make_image):
    labels = make_image((4, 5, 6), direction="flipped", dtype=np.uint8, labels=[LabelInfo(2, "liver")])
    result = resample_labels_onto(labels, labels.with_array(np.zeros(labels.shape, np.float32)))
    assert result.array.dtype == np.uint8 and result.labels == labels.labels
    np.testing.assert_array_equal(result.array, labels.array)
    assert result.same_grid(labels, tolerance=1e-9)


@pytest.mark.parametrize("direction", ["oblique", "flipped"])
def test_resampling_onto_a_grid_shifted_by_whole_voxels_is_exact(make_image, direction):
    labels = make_image((4, 5, 6), direction=direction, dtype=np.int16)
    shift_xyz = np.array([1, 2, -1])
    grid = Image(labels.array, labels.spacing, labels.index_to_physical(shift_xyz), labels.direction)
    result = resample_labels_onto(labels, grid)
    expected = np.zeros_like(labels.array)
    # grid voxel (z, y, x) is labels voxel (z - 1, y + 2, x + 1); voxels outside the label map get 0
    expected[1:, :3, :5] = labels.array[:-1, 2:, 1:]
    np.testing.assert_array_equal(result.array, expected)
    assert result.same_grid(grid, tolerance=1e-9)


def test_resampling_refuses_non_overlapping_multichannel_and_mixed_dimensions(make_image):
    labels = make_image((4, 5, 6), dtype=np.uint8)
    far = Image(labels.array, labels.spacing, np.add(labels.origin, 1000.0), labels.direction)
    with pytest.raises(GeometryError, match="do not overlap"):
        resample_labels_onto(labels, far)
    with pytest.raises(GeometryError, match="one channel"):
        resample_labels_onto(make_image((4, 5, 6), channels=2), labels)
    with pytest.raises(GeometryError, match="2D"):
        resample_labels_onto(labels, make_image((5, 6)))


def test_resample_onto_interpolates_every_channel_in_the_type_asked(make_image):
    image = make_image((4, 5, 6), direction="oblique", dtype=np.int16, channels=2)
    grid = Grid.of(image)
    same = resample_onto(image, grid, "linear", dtype=np.float32)
    assert same.array.dtype == np.float32 and same.array.shape == image.array.shape
    np.testing.assert_allclose(same.array, image.array, atol=1e-5)
    half_voxel = Grid(grid.size, grid.spacing, tuple(image.index_to_physical([0.5, 0, 0])), grid.direction)
    shifted = resample_onto(image, half_voxel, "linear", dtype=np.float32).array
    expected = (image.array[..., :-1] + image.array[..., 1:]) / 2  # the mean of neighbours along x
    np.testing.assert_allclose(shifted[..., :-1], expected, atol=1e-5)
    far = Grid(grid.size, grid.spacing, tuple(image.index_to_physical([10, 0, 0])), grid.direction)
    assert not resample_onto(image, far, "nearest").array.any()  # 0 outside the image


def test_a_grid_round_trips_through_sitk_and_keeps_the_centre_when_resampled(make_image):
    image = make_image((4, 5, 6), direction="flipped")
    grid = Grid.of(image)
    assert Grid.of_sitk(grid.sitk_reference()) == grid
    coarse = grid.resampled((1.4, None, 2.9))  # x resampled, y kept, z within 0.1 %: kept
    assert coarse.size == (3, 5, 4) and coarse.spacing == (1.4, 1.3, 2.9)
    centre = [(n - 1) / 2 for n in grid.size]
    np.testing.assert_allclose(
        coarse.index_to_physical([(n - 1) / 2 for n in coarse.size]), grid.index_to_physical(centre)
    )


def test_grid_difference_says_what_differs_in_mm_and_degrees():
    reference = Grid.of(box((10, 10, 10), (0.0, 0.0, 0.0)))
    assert grid_difference(reference, reference) == ""
    moved = Grid.of(box((10, 10, 8), (3.0, 0.0, 4.0), spacing=(1.0, 1.0, 1.25)))
    assert grid_difference(moved, reference) == (
        "size (10, 10, 8) vs (10, 10, 10), spacing (1, 1, 1.25) vs (1, 1, 1) mm, origin 5 mm apart ((3, 0, 4) vs "
        "(0, 0, 0) mm)"
    )
    turned = Grid.of(box((10, 10, 10), (0.0, 0.0, 0.0), ROTATION_45_Z))
    assert grid_difference(turned, reference) == "direction: axes turned by up to 45°"
    flat = Grid((10, 10), (1.0, 1.0), (0.0, 0.0), (1.0, 0.0, 0.0, 1.0))
    assert grid_difference(flat, reference) == "size (10, 10) vs (10, 10, 10), spacing (1, 1) vs (1, 1, 1) mm"


def test_uncovered_fraction_counts_first_grid_voxel_centres_outside_the_other_image():
    reference = box((10, 10, 10), (0.0, 0.0, 0.0))
    assert uncovered_fraction(reference, reference) == 0.0
    assert uncovered_fraction(box((10, 10, 10), (0.5, 0.0, 0.0)), reference) == 0.0  # a half voxel: centres inside
    assert uncovered_fraction(box((10, 10, 10), (3.0, 0.0, 0.0)), reference) == pytest.approx(0.3)
    assert uncovered_fraction(box((10, 10, 4), (0.0, 0.0, 0.0)), reference) == pytest.approx(0.6)


def test_label_voxels_on_a_shared_lattice_are_pasted_exactly(make_image):
    grid = make_image((4, 5, 6), direction="oblique")
    crop = make_image((3, 3, 3), direction="oblique", seed=1)
    cropped = Image(crop.array, grid.spacing, grid.index_to_physical([4, 1, 2]), grid.direction)  # x 4..6: 2 inside
    slices, values = place_on_grid(cropped, grid)
    assert slices == (slice(2, 4), slice(1, 4), slice(4, 6))
    np.testing.assert_array_equal(values, crop.array[:2, :, :2])


def test_label_voxels_off_the_lattice_are_resampled_and_apart_are_none(make_image):
    grid = make_image((4, 5, 6), direction="oblique")
    shifted = Image(grid.array, grid.spacing, grid.index_to_physical([0.5, 0, 0]), grid.direction)
    slices, values = place_on_grid(shifted, grid)
    assert slices == (slice(None),) * 3
    np.testing.assert_array_equal(values, resample_labels_onto(shifted, grid).array)
    far = Image(grid.array, grid.spacing, grid.index_to_physical([50, 0, 0]), grid.direction)
    assert place_on_grid(far, grid) is None
