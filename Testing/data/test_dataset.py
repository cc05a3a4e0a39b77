"""Datasets: MSD, nnU-Net v2, two-folder and in-memory layouts; loading cases; validation of bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from MedSegCNNLib import Image, LabelInfo, write_image
from MedSegCNNLib.data.dataset import (
    CaseSource,
    Dataset,
    dataset_from_folders,
    dataset_from_pairs,
    load_case,
    load_dataset,
    load_msd_dataset,
    validate_dataset,
)
from MedSegCNNLib.errors import InputError

SAMPLE = Path(__file__).resolve().parents[2] / "Resources" / "SampleData" / "Hippocampus"
SHAPE = (4, 5, 6)


def _image(seed: int = 0, *, shape=SHAPE, spacing=(0.7, 1.3, 2.9), origin=(-10.0, 5.0, 2.5), channels=None) -> Image:
    rng = np.random.default_rng(seed)
    array = rng.normal(100, 20, size=shape if channels is None else (channels, *shape)).astype(np.float32)
    return Image(array, spacing, origin, np.eye(3))


def _label(image: Image, values=(0, 1, 2), *, dtype=np.uint8, seed: int = 0) -> Image:
    rng = np.random.default_rng(seed)
    array = rng.choice(np.asarray(values), size=image.shape).astype(dtype)
    array.flat[: len(values)] = values  # every value present
    return Image(array, image.spacing, image.origin, image.direction)


def _write_pair(folder: Path, name: str, *, seed: int = 0, channels: int = 1, suffix: bool = False) -> None:
    (folder / "imagesTr").mkdir(parents=True, exist_ok=True)
    (folder / "labelsTr").mkdir(parents=True, exist_ok=True)
    base = _image(seed)
    for channel in range(channels):
        file = f"{name}_{channel:04d}.nii.gz" if suffix else f"{name}.nii.gz"
        write_image(_image(seed * 10 + channel), folder / "imagesTr" / file)
    write_image(_label(base, seed=seed), folder / "labelsTr" / f"{name}.nii.gz")


# ----- MSD -----------------------------------------------------------------------------------------------


def test_bundled_msd_dataset_loads_and_validates():
    dataset = load_msd_dataset(SAMPLE)
    assert dataset.name == "Hippocampus"
    assert dataset.channel_names == ("MRI",)
    assert dataset.label_names == {0: "background", 1: "Anterior", 2: "Posterior"}
    assert len(dataset.cases) == 12
    assert dataset.cases[0].name == "hippocampus_004"
    assert dataset.cases[0].images == (SAMPLE / "imagesTr" / "hippocampus_004.nii.gz",)
    validate_dataset(dataset, in_channels=1)
    image, label = load_case(dataset.cases[0])
    assert image.array.dtype == np.float32 and image.array.shape == (1, 38, 52, 36)
    assert label.array.dtype == np.uint8 and set(np.unique(label.array)) == {0, 1, 2}
    assert label.same_grid(image)
    card = json.loads(json.dumps(dataset.to_dict()))
    assert card["label_names"] == {"0": "background", "1": "Anterior", "2": "Posterior"}
    assert card["cases"][0]["images"] == [str(SAMPLE / "imagesTr" / "hippocampus_004.nii.gz")]


def test_load_dataset_dispatch(tmp_path):
    dataset = load_dataset(SAMPLE)
    assert load_dataset(dataset) is dataset
    assert len(load_dataset(SAMPLE / "dataset.json").cases) == 12
    _write_pair(tmp_path / "plain", "a")
    assert [case.name for case in load_dataset(tmp_path / "plain").cases] == ["a"]
    with pytest.raises(InputError, match="not a dataset folder"):
        load_dataset(tmp_path)


def test_float_label_is_cast_and_fractional_label_refused(tmp_path):
    image = _image()
    write_image(image, tmp_path / "img.nii.gz")
    label = _label(image, dtype=np.float32)
    write_image(label, tmp_path / "lab.nii.gz")
    _, loaded = load_case(CaseSource("c", (tmp_path / "img.nii.gz",), tmp_path / "lab.nii.gz"))
    assert loaded.array.dtype == np.uint8
    np.testing.assert_array_equal(loaded.array, label.array.astype(np.uint8))
    fractional = label.with_array(label.array + 0.5)
    with pytest.raises(InputError, match="non-integer"):
        load_case(CaseSource("c", (image,), fractional))


def test_msd_four_dimensional_image(tmp_path):
    image = _image(channels=2)
    (tmp_path / "imagesTr").mkdir()
    (tmp_path / "labelsTr").mkdir()
    write_image(image, tmp_path / "imagesTr" / "brain_1.nii.gz")
    write_image(_label(image), tmp_path / "labelsTr" / "brain_1.nii.gz")
    description = {
        "name": "Brain",
        "modality": {"0": "T1", "1": "FLAIR"},
        "labels": {"0": "background", "1": "edema", "2": "tumour"},
        "training": [{"image": "./imagesTr/brain_1.nii.gz", "label": "./labelsTr/brain_1.nii.gz"}],
    }
    (tmp_path / "dataset.json").write_text(json.dumps(description))
    dataset = load_msd_dataset(tmp_path)
    assert dataset.channel_names == ("T1", "FLAIR")
    assert len(dataset.cases[0].images) == 1
    validate_dataset(dataset, in_channels=2)
    loaded, _ = load_case(dataset.cases[0])
    np.testing.assert_allclose(loaded.array, image.array)
    with pytest.raises(InputError, match="takes 1 input channel"):
        validate_dataset(dataset, in_channels=1)
    description["modality"]["2"] = "T2"
    (tmp_path / "dataset.json").write_text(json.dumps(description))
    with pytest.raises(InputError, match=r"other than 3: brain_1 \(2\)"):
        validate_dataset(load_msd_dataset(tmp_path))


def test_msd_entry_stored_as_channel_files(tmp_path):
    _write_pair(tmp_path, "la_003", channels=2, suffix=True)
    description = {
        "modality": {"0": "A", "1": "B"},
        "labels": {"0": "background", "1": "x", "2": "y"},
        "training": [{"image": "./imagesTr/la_003.nii.gz", "label": "./labelsTr/la_003.nii.gz"}],
    }
    (tmp_path / "dataset.json").write_text(json.dumps(description))
    case = load_msd_dataset(tmp_path).cases[0]
    assert [path.name for path in case.images] == ["la_003_0000.nii.gz", "la_003_0001.nii.gz"]
    assert load_case(case)[0].array.shape == (2, *SHAPE)


def test_msd_missing_files_are_listed(tmp_path):
    description = {
        "labels": {"0": "bg"},
        "training": [{"image": "./imagesTr/x.nii.gz", "label": "./labelsTr/x.nii.gz"}],
    }
    (tmp_path / "dataset.json").write_text(json.dumps(description))
    with pytest.raises(InputError, match=r"do not exist: .*x\.nii\.gz"):
        load_msd_dataset(tmp_path)


def test_nnunet_v2_layout(tmp_path):
    for index, name in enumerate(["case_a", "case_b"]):
        _write_pair(tmp_path, name, seed=index, channels=2, suffix=True)
    description = {
        "channel_names": {"0": "CT", "1": "PET"},
        "labels": {"background": 0, "lesion": 1, "organ": 2},
        "numTraining": 2,
        "file_ending": ".nii.gz",
    }
    (tmp_path / "dataset.json").write_text(json.dumps(description))
    dataset = load_dataset(tmp_path)
    assert dataset.channel_names == ("CT", "PET")
    assert dataset.label_names == {0: "background", 1: "lesion", 2: "organ"}
    assert [case.name for case in dataset.cases] == ["case_a", "case_b"]
    assert [path.name for path in dataset.cases[1].images] == ["case_b_0000.nii.gz", "case_b_0001.nii.gz"]
    validate_dataset(dataset, in_channels=2)


# ----- folders and pairs -----------------------------------------------------------------------------


def test_two_folders_plain_and_channel_suffix(tmp_path):
    _write_pair(tmp_path / "plain", "liver_0001")
    _write_pair(tmp_path / "plain", "liver_0002", seed=1)
    plain = dataset_from_folders(tmp_path / "plain" / "imagesTr", tmp_path / "plain" / "labelsTr")
    assert [case.name for case in plain.cases] == ["liver_0001", "liver_0002"]
    assert plain.channel_names == ("channel_0",)
    assert plain.label_names == {0: "background", 1: "label_1", 2: "label_2"}
    for index in range(2):
        _write_pair(tmp_path / "suffix", f"c{index}", seed=index, channels=3, suffix=True)
    grouped = dataset_from_folders(tmp_path / "suffix" / "imagesTr", tmp_path / "suffix" / "labelsTr")
    assert [case.name for case in grouped.cases] == ["c0", "c1"]
    assert grouped.channel_names == ("channel_0", "channel_1", "channel_2")
    assert load_case(grouped.cases[0])[0].array.shape == (3, *SHAPE)
    unlabelled = dataset_from_folders(tmp_path / "suffix" / "imagesTr", None)
    assert [case.name for case in unlabelled.cases] == ["c0", "c1"] and unlabelled.cases[0].label is None


def test_two_folders_label_names_from_dataset_json(tmp_path):
    _write_pair(tmp_path, "a")
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": {"0": "bg", "1": "liver", "2": "tumour"}}))
    dataset = dataset_from_folders(tmp_path / "imagesTr", tmp_path / "labelsTr", channel_names=["CT"])
    assert dataset.label_names == {0: "bg", 1: "liver", 2: "tumour"}
    assert dataset.channel_names == ("CT",)


def test_unmatched_folders_are_listed(tmp_path):
    _write_pair(tmp_path, "a")
    _write_pair(tmp_path, "b")
    (tmp_path / "labelsTr" / "b.nii.gz").rename(tmp_path / "labelsTr" / "c.nii.gz")
    with pytest.raises(InputError, match=r"no label for b; no image for c"):
        dataset_from_folders(tmp_path / "imagesTr", tmp_path / "labelsTr")


def test_pairs_in_memory_and_on_disk(tmp_path):
    image = _image()
    label = _label(image).with_labels([LabelInfo(1, "liver"), LabelInfo(2, "spleen")])
    dataset = dataset_from_pairs([([image, _image(1)], label), (_image(2), _label(image, values=(0, 1)))])
    assert [case.name for case in dataset.cases] == ["case_000", "case_001"]
    assert dataset.label_names == {0: "background", 1: "liver", 2: "spleen"}
    assert dataset.to_dict()["cases"] == [{"name": "case_000"}, {"name": "case_001"}]
    with pytest.raises(InputError, match="number of input channels"):
        validate_dataset(dataset)
    write_image(image, tmp_path / "p1.nrrd")
    write_image(label, tmp_path / "p1_label.nrrd")
    on_disk = dataset_from_pairs(
        [(tmp_path / "p1.nrrd", str(tmp_path / "p1_label.nrrd"))], label_names={1: "a", 2: "b"}
    )
    assert on_disk.cases[0].name == "p1" and on_disk.cases[0].label == tmp_path / "p1_label.nrrd"
    validate_dataset(on_disk, in_channels=1)
    with pytest.raises(InputError, match=r"\(image, label\)"):
        dataset_from_pairs([(image,)])


def test_extra_channel_on_another_grid_is_resampled_onto_the_first():
    first = _image(spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0))
    ramp = np.broadcast_to(np.arange(12, dtype=np.float32), (4, 5, 12)).copy()  # along x
    fine = Image(ramp, (0.5, 1.0, 1.0), (0.0, 0.0, 0.0), np.eye(3))  # x at 0, 0.5, ..., 5.5 mm
    image, _ = load_case(CaseSource("c", (first, fine)))
    assert image.array.shape == (2, *SHAPE)
    np.testing.assert_allclose(image.array[1, 0, 0], [0, 2, 4, 6, 8, 10], atol=1e-5)  # value = 2 * x (mm)
    far = Image(ramp, (0.5, 1.0, 1.0), (500.0, 0.0, 0.0), np.eye(3))
    with pytest.raises(InputError, match="does not overlap"):
        load_case(CaseSource("c", (first, far)))


# ----- bad input -----------------------------------------------------------------------------------------


def test_empty_dataset_is_refused():
    with pytest.raises(InputError, match="no cases"):
        validate_dataset(Dataset("empty", ("MRI",), {0: "background"}, ()))


def test_undeclared_label_values_are_named():
    image = _image()
    dataset = dataset_from_pairs(
        [(image, _label(image, values=(0, 1, 3))), (_image(1), _label(image))], label_names={1: "a", 2: "b"}
    )
    with pytest.raises(InputError, match=r"not declared .*case_000 \(3\)"):
        validate_dataset(dataset)


def test_label_geometry_mismatch():
    image = _image()
    shifted = Image(_label(image).array, image.spacing, (-10.0, 5.0, 7.5), np.eye(3))
    with pytest.raises(
        InputError,
        match=r"label and image geometry differ for case c: label vs image: origin 5 mm apart \(\(-10, 5, 7.5\) vs",
    ):
        load_case(CaseSource("c", (image,), shifted))
    other_size = Image(np.zeros((4, 5, 7), np.uint8), image.spacing, image.origin, np.eye(3))
    with pytest.raises(
        InputError, match=r"label and image geometry differ for case c: label vs image: size \(7, 5, 4\) vs"
    ):
        load_case(CaseSource("c", (image,), other_size))
    with pytest.raises(InputError, match="geometry differ for case_000: label vs image: origin"):
        validate_dataset(dataset_from_pairs([(image, shifted)], label_names={1: "a", 2: "b"}))


def test_slightly_different_label_header_adopts_the_image_grid():
    image = _image()
    label = _label(image)
    nudged = Image(label.array, (0.7000004, 1.3, 2.9), (-10.00001, 5.0, 2.5), np.eye(3))
    _, loaded = load_case(CaseSource("c", (image,), nudged))
    assert loaded.spacing == image.spacing and loaded.origin == image.origin
    np.testing.assert_array_equal(loaded.array, label.array)


def test_bad_case_sources():
    with pytest.raises(InputError, match="no image"):
        CaseSource("c", ())
    with pytest.raises(InputError, match="non-empty name"):
        CaseSource("", (_image(),))
    with pytest.raises(InputError, match="unique"):
        Dataset("d", ("x",), {}, (CaseSource("c", (_image(),)), CaseSource("c", (_image(),))))
    with pytest.raises(InputError, match="has 2 channels"):
        load_case(CaseSource("c", (_image(),), _image(channels=2)))


def test_an_image_with_nan_is_refused_for_training_naming_the_case_and_file(tmp_path):
    image = _image()
    array = image.array.astype(np.float32)
    array[0, 0, :2] = [np.nan, np.inf]
    path = tmp_path / "c.nii.gz"
    write_image(image.with_array(array), path)
    case = CaseSource("c", (path,), _label(image))
    with pytest.raises(InputError, match=rf"^Case c: image {path} has 2 non-finite voxel\(s\) \(NaN or infinite\)"):
        load_case(case)
    loaded, _ = load_case(case, allow_non_finite=True)  # prediction replaces them itself
    assert np.count_nonzero(np.isnan(loaded.array)) == 1 and np.count_nonzero(np.isinf(loaded.array)) == 1


def test_a_label_map_with_nan_is_refused_naming_the_case_and_file(tmp_path):
    image = _image()
    labels = _label(image).array.astype(np.float32)
    labels[1, 1, 1] = np.nan
    path = tmp_path / "c_label.nii"
    write_image(image.with_array(labels), path)
    with pytest.raises(InputError, match=rf"^Case c: label map {path} has 1 non-finite voxel\(s\)"):
        load_case(CaseSource("c", (image,), path))
