"""label_map_from_mask: the one rule turning mask files into label maps (kept, 0/255 -> 0/1, refused, mapped)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image as PillowImage

from MedSegCNNLib.errors import InputError
from MedSegCNNLib.image.core import Image, LabelInfo
from MedSegCNNLib.image.io import read_image
from MedSegCNNLib.image.masks import LARGEST_PLAIN_LABEL, label_map_from_mask

RNG = np.random.default_rng(3)


def mask_of(values, shape=(12, 14), dtype=np.uint8, channels: int | None = None) -> Image:
    """A 2D mask holding every one of ``values`` (random layout), spacing (0.5, 0.25), origin (3, 4)."""
    flat = np.resize(np.asarray(values, dtype=dtype), int(np.prod(shape)))
    array = RNG.permutation(flat).reshape(shape)
    if channels is not None:
        array = np.stack([array] * channels)
    return Image.from_array(array, spacing=(0.5, 0.25), origin=(3.0, 4.0), spatial_dims=2)


@pytest.mark.parametrize(
    ("values", "dtype"),
    [((0, 255), np.uint8), ((0, 65535), np.uint16), ((255,), np.uint8), ((0.0, 255.0), np.float32)],
)
def test_binary_masks_saved_white_on_black_become_0_1(values, dtype):
    mask = mask_of(values, dtype=dtype)
    labels = label_map_from_mask(mask)
    assert labels.array.dtype == np.uint8
    np.testing.assert_array_equal(labels.array, (mask.array != 0).astype(np.uint8))
    assert labels.same_grid(mask)


@pytest.mark.parametrize("values", [(0, 1), (0, 1, 2, 5), (0, 2), (0,), (0, LARGEST_PLAIN_LABEL)])
def test_label_values_are_kept_even_when_a_case_lacks_some(values):
    mask = mask_of(values, dtype=np.int32)
    labels = label_map_from_mask(mask.with_labels([LabelInfo(v, f"l{v}") for v in values if v]))
    assert labels.array.dtype == np.uint8
    np.testing.assert_array_equal(labels.array, mask.array)  # {0, 2}: label 2, not a binary mask
    assert [info.value for info in labels.labels] == [v for v in values if v]


def test_bool_and_grey_colour_masks():
    flags = mask_of((0, 1), dtype=bool)
    labels = label_map_from_mask(flags)
    assert labels.array.dtype == np.uint8
    np.testing.assert_array_equal(labels.array, flags.array)
    grey = mask_of((0, 255), channels=3)
    labels = label_map_from_mask(grey)
    assert not labels.is_multichannel
    np.testing.assert_array_equal(labels.array, grey.array[0] // 255)


@pytest.mark.parametrize(
    ("values", "shown"),
    [
        ((0, 128, 255), r"3 distinct values \(0, 128, 255\).*mask_values=\(0, 128, 255\)"),
        ((0, 128), r"mask_values=\(0, 128\)"),
        ((0, 1, 255), r"mask_values=\(0, 1, 255\)"),  # labels with a VOC-style border value
        (tuple(range(0, 256, 5)), r"52 distinct values \(0, 5, 10, 15, 20, 25, 30, 35, \.\.\.\).*threshold"),
        ((0, LARGEST_PLAIN_LABEL + 1), rf"N <= {LARGEST_PLAIN_LABEL}"),
    ],
)
def test_values_that_are_no_known_label_set_are_refused_with_the_option(values, shown):
    with pytest.raises(InputError, match=rf"Mask case_7\.png holds .*{shown}"):
        label_map_from_mask(mask_of(values), source="case_7.png")


def test_real_colour_masks_negative_and_fractional_values_are_refused():
    colour = mask_of((0, 255), channels=3)
    colour.array[1] = 0
    with pytest.raises(InputError, match=r"colour picture with 3 different channels.*one integer label per structure"):
        label_map_from_mask(colour)
    with pytest.raises(InputError, match="negative"):
        label_map_from_mask(mask_of((0, -1), dtype=np.int16))
    with pytest.raises(InputError, match="non-integer values"):
        label_map_from_mask(mask_of((0.0, 0.5), dtype=np.float32))


def test_jpeg_masks_are_refused():
    with pytest.raises(InputError, match=r"m\.JPG is a JPEG file.*save the masks as PNG"):
        label_map_from_mask(mask_of((0, 1)), source="a/m.JPG")


def test_mask_values_map_raw_values_to_labels_in_order():
    mask = mask_of((0, 128, 255))
    labels = label_map_from_mask(mask.with_labels([LabelInfo(128, "grey")]), mask_values=(0, 128, 255))
    np.testing.assert_array_equal(labels.array, np.select([mask.array == 128, mask.array == 255], [1, 2], 0))
    assert labels.labels == () and labels.same_grid(mask)
    flipped = label_map_from_mask(mask_of((0, 255)), mask_values=(255, 0))  # background saved white
    assert set(np.unique(flipped.array)) == {0, 1}
    colour = label_map_from_mask(mask_of((0, 128), channels=3), mask_values=(0, 128))
    assert not colour.is_multichannel and set(np.unique(colour.array)) == {0, 1}


def test_mask_values_must_list_every_value_and_be_sensible():
    with pytest.raises(InputError, match=r"values that mask_values does not list \(255\).*they hold 0, 128, 255"):
        label_map_from_mask(mask_of((0, 128, 255)), mask_values=(0, 128))
    for bad in ((), (0, 0), ("a", 1)):
        with pytest.raises(InputError, match="mask_values must"):
            label_map_from_mask(mask_of((0, 1)), mask_values=bad)


def test_masks_from_png_files(tmp_path):
    """A 0/255 PNG mask and a palette PNG mask (VOC style) read from files by the real readers."""
    binary = (RNG.random((10, 12)) > 0.5).astype(np.uint8) * 255
    PillowImage.fromarray(binary).save(tmp_path / "binary.png")
    np.testing.assert_array_equal(label_map_from_mask(read_image(tmp_path / "binary.png")).array, binary // 255)
    indices = RNG.integers(0, 3, (10, 12)).astype(np.uint8)
    palette = PillowImage.fromarray(indices, mode="P")
    palette.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [0] * (3 * 253))
    palette.save(tmp_path / "voc.png")
    labels = label_map_from_mask(read_image(tmp_path / "voc.png", palette="indices"), source=tmp_path / "voc.png")
    np.testing.assert_array_equal(labels.array, indices)
