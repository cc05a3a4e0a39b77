"""The Image type: validation of its fields, shape properties and index <-> physical mapping."""

from __future__ import annotations

import numpy as np
import pytest

from MedSegCNNLib.errors import InputError
from MedSegCNNLib.image.core import Image, LabelInfo


@pytest.mark.parametrize(
    ("spacing", "message"),
    [
        ((1.0, 0.0, 1.0), "positive"),
        ((1.0, -2.0, 1.0), "positive"),
        ((1.0, np.nan, 1.0), "positive"),
        ((1.0, np.inf, 1.0), "positive"),
        ((1.0,), "2D or 3D"),
        ((1.0, 1.0, 1.0, 1.0), "2D or 3D"),
    ],
)
def test_bad_spacing_is_refused(spacing, message):
    with pytest.raises(InputError, match=message):
        Image.from_array(np.zeros((2, 2, 2)), spacing=spacing, spatial_dims=3)


@pytest.mark.parametrize("shape", [(5,), (2, 3, 4, 5, 6), (0, 3, 4, 5)])
def test_array_with_wrong_number_of_axes_or_no_channel_is_refused(shape):
    with pytest.raises(InputError, match=r"axes|channel"):
        Image.from_array(np.zeros(shape), spacing=(1.0, 1.0, 1.0))


def test_origin_and_direction_are_validated():
    with pytest.raises(InputError, match="Origin"):
        Image.from_array(np.zeros((2, 2, 2)), spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0))
    with pytest.raises(InputError, match="Origin"):
        Image.from_array(np.zeros((2, 2, 2)), origin=(0.0, np.nan, 0.0))
    with pytest.raises(InputError, match="invertible"):
        Image.from_array(np.zeros((2, 2, 2)), direction=np.diag([1.0, 1.0, 0.0]))


def test_duplicate_label_values_are_refused():
    with pytest.raises(InputError, match="unique"):
        Image.from_array(np.zeros((2, 2, 2)), labels=[LabelInfo(1, "liver"), LabelInfo(1, "tumour")])


@pytest.mark.parametrize(
    ("value", "color"), [(-1, None), (1.5, None), (1, (0.5, 0.5)), (1, (0.0, 1.2, 0.0)), (1, (-0.1, 0.0, 0.0))]
)
def test_label_info_is_validated(value, color):
    with pytest.raises(InputError):
        LabelInfo(value, "x", color)


def test_labels_are_sorted_and_looked_up_by_value():
    image = Image.from_array(np.zeros((2, 2, 2), np.uint8), labels=[LabelInfo(3, "c"), LabelInfo(1, "a", (1, 0, 0))])
    assert [info.value for info in image.labels] == [1, 3]
    assert image.label_info(1) == LabelInfo(1, "a", (1.0, 0.0, 0.0))
    assert image.label_info(2) is None
    assert image.with_array(np.ones((2, 2, 2))).labels == image.labels
    assert image.with_labels([]).labels == ()


def test_channels_follow_from_array_ndim_versus_spacing(make_image):
    scalar = make_image((4, 5, 6))
    assert not scalar.is_multichannel and scalar.num_channels == 1
    assert scalar.shape == (4, 5, 6) and scalar.size == (6, 5, 4)
    assert scalar.array_spacing == (2.9, 1.3, 0.7)
    multi = make_image((4, 5, 6), channels=2)
    assert multi.is_multichannel and multi.num_channels == 2 and multi.shape == (4, 5, 6)
    assert make_image((5, 6), channels=3).spatial_dims == 2


def test_from_array_defaults_to_unit_geometry():
    image = Image.from_array(np.zeros((3, 4)))
    assert image.spacing == (1.0, 1.0) and image.origin == (0.0, 0.0)
    np.testing.assert_array_equal(image.direction, np.eye(2))
    assert Image.from_array(np.zeros((2, 3, 4, 5)), spatial_dims=3).num_channels == 2


@pytest.mark.parametrize("direction", ["identity", "oblique", "flipped"])
def test_index_to_physical_follows_itk_convention_and_inverts(make_image, direction):
    image = make_image((4, 5, 6), direction=direction)
    index = np.array([[0, 0, 0], [5, 4, 3], [1.5, 2.0, 0.25]])
    expected = np.asarray(image.origin) + (index * image.spacing) @ image.direction.T
    np.testing.assert_allclose(image.index_to_physical(index), expected)
    np.testing.assert_allclose(image.physical_to_index(expected), index, atol=1e-12)
    homogeneous = np.c_[index, np.ones(3)] @ image.affine.T
    np.testing.assert_allclose(homogeneous[:, :3], expected)
    assert len(image.corners()) == 8


def test_same_grid_compares_geometry_with_tolerance(make_image):
    image = make_image((4, 5, 6))
    shifted = Image(image.array, image.spacing, np.add(image.origin, 1e-6), image.direction)
    moved = Image(image.array, image.spacing, np.add(image.origin, 0.1), image.direction)
    assert image.same_grid(shifted)
    assert not image.same_grid(moved)
    assert not image.same_grid(make_image((4, 5, 7)))
    assert not image.same_grid(make_image((4, 5, 6), direction="flipped"))
