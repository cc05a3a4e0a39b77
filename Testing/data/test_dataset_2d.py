"""2D datasets from picture files: images/ + masks/ folder pairs, nnU-Net v2 and MSD folders of PNG/TIFF files,
masks through the mask rule or mask_values, colour pictures as three channels, and what is refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image as Picture

from MedSegCNNLib import Image, write_image
from MedSegCNNLib.data.dataset import (
    dataset_from_folders,
    dataset_from_pairs,
    load_case,
    load_dataset,
    load_msd_dataset,
    validate_dataset,
)
from MedSegCNNLib.data.planning import dataset_fingerprint, plan_preprocessing
from MedSegCNNLib.errors import InputError

SHAPE = (12, 16)  # rows (y), columns (x)


def _rgb(seed: int) -> np.ndarray:
    """A (rows, columns, 3) uint8 picture."""
    return np.random.default_rng(seed).integers(0, 256, size=(*SHAPE, 3), dtype=np.uint8)


def _mask(seed: int, values=(0, 255)) -> np.ndarray:
    """A (rows, columns) uint8 mask holding every one of ``values``."""
    mask = np.random.default_rng(seed).choice(np.asarray(values, dtype=np.uint8), size=SHAPE)
    mask.flat[: len(values)] = values
    return mask


def _save(array: np.ndarray, path: Path, **options) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Picture.fromarray(array).save(path, **options)
    return path


def _folder_pair(root: Path, *, masks="masks", count=3, values=(0, 255), mask_suffix="") -> Path:
    for index in range(count):
        _save(_rgb(index), root / "images" / f"case{index}.png")
        _save(_mask(index, values), root / masks / f"case{index}{mask_suffix}.png")
    return root


def test_an_images_and_masks_folder_pair_of_colour_pictures_loads(tmp_path):
    root = _folder_pair(tmp_path / "skin", mask_suffix="_mask")
    dataset = load_dataset(root)
    assert dataset.name == "skin" and [case.name for case in dataset.cases] == ["case0", "case1", "case2"]
    assert dataset.channel_names == ("red", "green", "blue")
    assert dataset.label_names == {0: "background", 1: "label_1"}  # 0/255 masks read as 0/1
    validate_dataset(dataset)
    image, label = load_case(dataset.cases[1])
    assert image.spatial_dims == 2 and image.array.shape == (3, *SHAPE) and image.array.dtype == np.float32
    np.testing.assert_array_equal(image.array, np.moveaxis(_rgb(1), -1, 0))  # row r, column c: array[:, r, c]
    np.testing.assert_array_equal(label.array, _mask(1) // 255)
    assert label.spacing == image.spacing == (1.0, 1.0) and label.origin == (0.0, 0.0)
    fingerprint = dataset_fingerprint(dataset)
    plan = plan_preprocessing(dataset, fingerprint=fingerprint)
    assert plan.spatial_dims == 2 and plan.target_spacing == (1.0, 1.0) and len(plan.normalization) == 3


@pytest.mark.parametrize("masks", ["labels", "GT", "annotations", "ground_truth"])
def test_mask_folders_go_by_several_names(tmp_path, masks):
    assert len(load_dataset(_folder_pair(tmp_path, masks=masks, count=2)).cases) == 2


def test_two_mask_folders_or_none_are_refused(tmp_path):
    root = _folder_pair(tmp_path / "two", count=1)
    _save(_mask(0), root / "gt" / "case0.png")
    with pytest.raises(InputError, match=r"several mask folders beside images/ \(masks, gt\)"):
        load_dataset(root)
    _save(_rgb(0), tmp_path / "alone" / "images" / "a.png")
    with pytest.raises(InputError, match=r"not a dataset folder: .* an image folder with a mask folder beside it"):
        load_dataset(tmp_path / "alone")


def test_masks_of_other_values_are_refused_unless_mask_values_maps_them(tmp_path):
    root = _folder_pair(tmp_path, count=2, values=(0, 128, 255))
    with pytest.raises(InputError, match=r"case0\.png holds 3 distinct values \(0, 128, 255\), not a known label set"):
        load_dataset(root)
    dataset = load_dataset(root, mask_values=(0, 128, 255))
    assert dataset.label_names == {0: "background", 1: "label_1", 2: "label_2"}
    _image, label = load_case(dataset.cases[0])
    np.testing.assert_array_equal(label.array, np.searchsorted([0, 128, 255], _mask(0, (0, 128, 255))))
    assert dataset_from_folders(root / "images", root / "masks", mask_values=[0, 128, 255]).cases[0].mask_values == (
        0,
        128,
        255,
    )
    with pytest.raises(InputError, match="mask_values must list at least two distinct raw mask values"):
        load_dataset(root, mask_values=(255,))
    _save(_mask(2, (0, 64, 128)), root / "masks" / "case0.png")  # 64 is not listed
    with pytest.raises(InputError, match="holds values that mask_values does not list"):
        validate_dataset(load_dataset(root, mask_values=(0, 128, 255)))


def test_label_maps_0_to_n_are_kept_also_when_a_case_lacks_a_label(tmp_path):
    """A multi-label dataset where one mask holds only {0, 2}: label 2 stays label 2, not a binary mask."""
    root = tmp_path / "organs"
    for index, values in enumerate([(0, 1, 2), (0, 2)]):
        _save(_rgb(index), root / "images" / f"c{index}.png")
        _save(_mask(index, values), root / "masks" / f"c{index}.png")
    dataset = load_dataset(root)
    assert dataset.label_names == {0: "background", 1: "label_1", 2: "label_2"}
    np.testing.assert_array_equal(load_case(dataset.cases[1])[1].array, _mask(1, (0, 2)))


def test_palette_masks_are_read_as_their_indices(tmp_path):
    """VOC-style masks: label values stored as palette indices, shown in colour."""
    root = tmp_path / "voc"
    _save(_rgb(0), root / "images" / "a.png")
    mask = Picture.fromarray(_mask(0, (0, 1, 2)), mode="P")
    mask.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [0] * 759)
    (root / "masks").mkdir()
    mask.save(root / "masks" / "a.png")
    _image, label = load_case(load_dataset(root).cases[0])
    np.testing.assert_array_equal(label.array, _mask(0, (0, 1, 2)))


def test_nnunet_v2_dataset_of_png_channel_files_loads(tmp_path):
    root = tmp_path / "Dataset120_Cells"
    description = {"channel_names": {"0": "phase", "1": "fluorescence"}, "labels": {"background": 0, "cell": 1},
                   "numTraining": 2, "file_ending": ".png"}  # fmt: skip
    root.mkdir()
    (root / "dataset.json").write_text(json.dumps(description))
    for index in range(2):
        for channel in range(2):
            _save(_rgb(index)[..., channel], root / "imagesTr" / f"cell_{index:03d}_{channel:04d}.png")
        _save(_mask(index, (0, 1)), root / "labelsTr" / f"cell_{index:03d}.png")
    dataset = load_msd_dataset(root)
    assert dataset.channel_names == ("phase", "fluorescence") and dataset.label_names == {0: "background", 1: "cell"}
    validate_dataset(dataset)
    image, label = load_case(dataset.cases[1])
    assert image.array.shape == (2, *SHAPE) and label.array.shape == SHAPE
    np.testing.assert_array_equal(image.array[1], _rgb(1)[..., 1])
    swapped = load_msd_dataset(root, mask_values=(1, 0))  # mask_values applies to nnU-Net's label files too
    np.testing.assert_array_equal(load_case(swapped.cases[1])[1].array, 1 - _mask(1, (0, 1)))
    assert load_dataset(dataset, mask_values=[1, 0]).cases[0].mask_values == (1, 0)


def test_nnunet_v2_dataset_of_rgb_pictures_and_16_bit_tiffs(tmp_path):
    """nnU-Net's natural-image layout: one RGB file (case_0000.png) holds the three channels R, G, B."""
    root = tmp_path / "Dataset121_Road"
    root.mkdir()
    description = {"channel_names": {"0": "R", "1": "G", "2": "B"}, "labels": {"background": 0, "road": 1},
                   "numTraining": 2, "file_ending": ".png"}  # fmt: skip
    (root / "dataset.json").write_text(json.dumps(description))
    for index in range(2):
        _save(_rgb(index), root / "imagesTr" / f"road_{index}_0000.png")
        _save(_mask(index, (0, 1)), root / "labelsTr" / f"road_{index}.png")
    validate_dataset(load_msd_dataset(root))
    tiffs = tmp_path / "tiffs"
    for index in range(2):
        (tiffs / "images").mkdir(parents=True, exist_ok=True)
        (tiffs / "masks").mkdir(exist_ok=True)
        tifffile.imwrite(tiffs / "images" / f"t{index}.tif", (_rgb(index)[..., 0].astype(np.uint16) * 257))
        tifffile.imwrite(tiffs / "masks" / f"t{index}.tif", _mask(index, (0, 1)))
    image, label = load_case(load_dataset(tiffs).cases[1])
    np.testing.assert_array_equal(image.array[0], _rgb(1)[..., 0].astype(np.float32) * 257)
    np.testing.assert_array_equal(label.array, _mask(1, (0, 1)))


def test_msd_style_folder_of_2d_files(tmp_path):
    root = tmp_path / "msd"
    training = []
    for index in range(2):
        _save(_rgb(index)[..., 0], root / "imagesTr" / f"x{index}.png")
        _save(_mask(index, (0, 1)), root / "labelsTr" / f"x{index}.png")
        training.append({"image": f"./imagesTr/x{index}.png", "label": f"./labelsTr/x{index}.png"})
    description = {"name": "X", "modality": {"0": "ultrasound"}, "labels": {"0": "background", "1": "lesion"}}
    (root / "dataset.json").write_text(json.dumps({**description, "training": training}))
    dataset = load_dataset(root)
    validate_dataset(dataset)
    image, _label = load_case(dataset.cases[0])
    assert dataset.channel_names == ("ultrasound",) and image.spatial_dims == 2 and image.array.shape == (1, *SHAPE)


def test_a_dataset_mixing_2d_pictures_and_3d_volumes_is_refused(tmp_path):
    root = _folder_pair(tmp_path, count=1)
    volume = Image.from_array(np.zeros((2, *SHAPE), np.float32))
    write_image(volume, root / "images" / "vol.nii.gz")
    write_image(volume.with_array(np.zeros((2, *SHAPE), np.uint8)), root / "masks" / "vol.nii.gz")
    dataset = load_dataset(root)
    with pytest.raises(InputError, match=r"mixes 2D images \(case0\) and 3D volumes \(vol\); a dataset holds one kind"):
        validate_dataset(dataset)
    with pytest.raises(InputError, match="mixes 2D images"):
        dataset_fingerprint(dataset)


def test_in_memory_2d_images_with_mask_values(tmp_path):
    image = Image.from_array(np.moveaxis(_rgb(0), -1, 0), spacing=(0.5, 0.25))
    mask = Image.from_array(_mask(0, (0, 7, 9)), spacing=(0.5, 0.25))
    dataset = dataset_from_pairs([(image, mask)], mask_values=(0, 9, 7), channel_names=("red", "green", "blue"))
    assert dataset.label_names == {0: "background", 1: "label_1", 2: "label_2"}
    _image, label = load_case(dataset.cases[0])
    expected = np.choose(np.searchsorted([0, 7, 9], _mask(0, (0, 7, 9))), [0, 2, 1])  # 9 -> 1, 7 -> 2
    np.testing.assert_array_equal(label.array, expected)
    assert label.spacing == (0.5, 0.25)
