"""The label-map rule (as_label_array) and the label type (label_dtype)."""

from __future__ import annotations

import numpy as np
import pytest

from MedSegCNNLib.errors import InputError
from MedSegCNNLib.image.core import Image
from MedSegCNNLib.image.labels import as_label_array, integer_label_values, label_dtype


@pytest.mark.parametrize(
    ("largest", "dtype"),
    [(0, np.uint8), (255, np.uint8), (256, np.int16), (32767, np.int16), (32768, np.int32), (2**31 - 1, np.int32)],
)
def test_label_dtype_is_the_smallest_of_uint8_int16_int32(largest, dtype):
    assert label_dtype(largest) == dtype


def test_label_dtype_refuses_values_above_int32():
    with pytest.raises(InputError, match=r"2\*\*31 - 1"):
        label_dtype(2**31)


def test_integer_arrays_are_kept_and_bool_is_read_as_uint8():
    array = np.arange(6, dtype=np.int64).reshape(2, 3) * 1000
    assert as_label_array(array, allow_whole_floats=False) is array
    assert as_label_array(array, allow_whole_floats=False, compact=True).dtype == np.int16
    mask = np.array([[True, False]])
    read = as_label_array(Image.from_array(mask), allow_whole_floats=False)
    assert read.dtype == np.uint8 and np.shares_memory(read, mask) and read.tolist() == [[1, 0]]


def test_whole_floats_are_accepted_only_when_allowed():
    floats = np.array([[0.0, 3.0], [300.0, 1.0]], np.float32)
    assert as_label_array(floats, allow_whole_floats=True).dtype == np.int16
    with pytest.raises(InputError, match="integer dtype"):
        as_label_array(floats, allow_whole_floats=False)


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.array([[0.0, 1.5]]), r"^Case c: label map a\.nii holds non-integer values \(e\.g\. 1\.5\)"),
        (np.array([[np.nan, 1.0]]), r"^Case c: label map a\.nii has 1 non-finite voxel\(s\).* and evaluate again\.$"),
        (np.array([[-2, 1]], np.int8), r"negative values \(min -2\); label values must be non-negative"),
        (np.array([[-2.0, 1.0]]), "negative values"),
        (np.array([["a", "b"]]), "integer dtype"),
        (np.zeros((2, 3, 4, 5), np.uint8), r"has 2 channels .*single 2D or 3D volume.*single-channel"),
    ],
)
def test_what_is_not_a_label_map_is_refused_naming_it(array, message):
    source = Image.from_array(array, spatial_dims=3) if array.ndim == 4 else array
    with pytest.raises(InputError, match=message):
        as_label_array(source, allow_whole_floats=True, what="Case c: label map a.nii", retry="evaluate again")


def test_integer_label_values_takes_any_integers():
    array = np.array([-3, 7, 2**40])
    assert integer_label_values(array, what="The map") is array
    with pytest.raises(InputError, match=r"^The map has values of type float64"):
        integer_label_values(array.astype(float), what="The map")
