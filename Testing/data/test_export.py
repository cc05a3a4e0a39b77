"""Training data export: the folder loads with the real dataset reader; bad input is refused before writing."""

from __future__ import annotations

import json

import numpy as np
import pytest

from MedSegCNNLib import Image, read_image
from MedSegCNNLib.data.dataset import load_case, load_dataset, validate_dataset
from MedSegCNNLib.data.export import write_training_folder
from MedSegCNNLib.errors import InputError, OutputExistsError

LABELS = {1: "liver", 2: "tumour", 3: "vessel", 4: "cyst"}


@pytest.fixture
def pairs(make_image):
    """Two cases: 2-channel float images on oblique grids and label maps (values 0..4) on the same grids."""
    result = []
    for seed in (0, 1):
        image = make_image((4, 5, 6), dtype=np.float32, channels=2, seed=seed)
        label = make_image((4, 5, 6), dtype=np.int16, seed=seed + 10)
        result.append((image, Image(label.array, image.spacing, image.origin, image.direction)))
    return result


def _siblings(folder):
    return sorted(path.name for path in folder.parent.iterdir() if path != folder)


def test_exported_folder_loads_with_the_dataset_reader(tmp_path, pairs):
    folder = write_training_folder(
        pairs, tmp_path / "data", labels=LABELS, channel_names=("T1", "T2"), case_names=["MR Head 1", "b/2"]
    )
    description = json.loads((folder / "dataset.json").read_text())
    assert description["labels"] == {"background": 0, "liver": 1, "tumour": 2, "vessel": 3, "cyst": 4}
    assert description["numTraining"] == 2 and description["channel_names"] == {"0": "T1", "1": "T2"}
    assert sorted(p.name for p in (folder / "imagesTr").iterdir()) == [
        "MR_Head_1_0000.nii.gz", "MR_Head_1_0001.nii.gz", "b_2_0000.nii.gz", "b_2_0001.nii.gz",
    ]  # fmt: skip
    dataset = load_dataset(folder)
    validate_dataset(dataset, in_channels=2)
    assert dataset.channel_names == ("T1", "T2")
    assert dataset.label_names == {0: "background", **LABELS}
    assert [case.name for case in dataset.cases] == ["MR_Head_1", "b_2"]
    for case, (image, label) in zip(dataset.cases, pairs, strict=True):
        loaded_image, loaded_label = load_case(case)
        assert loaded_image.same_grid(image)
        np.testing.assert_array_equal(loaded_image.array, image.array)
        np.testing.assert_array_equal(loaded_label.array, label.array)
    assert read_image(folder / "labelsTr" / "b_2.nii.gz").array.dtype == np.uint8  # smallest integer type
    assert _siblings(folder) == []  # no temporary folder left


def test_single_channel_2d_pairs_with_default_names(tmp_path, make_image):
    image = make_image((5, 6), dtype=np.float32, direction="flipped")
    label = Image((image.array > 0).astype(np.uint8), image.spacing, image.origin, image.direction)
    folder = write_training_folder([(image, label)], tmp_path / "data", labels={1: "lesion"})
    dataset = load_dataset(folder)
    assert dataset.channel_names == ("image",) and [case.name for case in dataset.cases] == ["case_000"]
    loaded_image, loaded_label = load_case(dataset.cases[0])
    assert loaded_image.spatial_dims == 2 and loaded_image.same_grid(image)
    np.testing.assert_array_equal(loaded_label.array, label.array)


def test_bad_pairs_are_refused_before_anything_is_written(tmp_path, pairs, make_image):
    image, label = pairs[0]
    shifted = Image(label.array, label.spacing, (0.0, 0.0, 0.0), label.direction)
    cases = {
        "at least one": [],
        "differs from the image's": [(image, shifted)],
        "label value(s) 4 have no name": [(image, label)],
        "but 1 channel name(s)": [(image, label)],
        "has 2 channels": [(image, Image(np.zeros((2, 4, 5, 6), np.uint8), image.spacing, image.origin, np.eye(3)))],
        "must be (image, label map)": [(image.array, label)],
    }
    for fragment, bad in cases.items():
        labels = {1: "a", 2: "b", 3: "c"} if fragment.startswith("label value") else LABELS
        channels = ("T1",) if fragment.startswith("but 1") else ("T1", "T2")
        with pytest.raises(InputError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
            write_training_folder(bad, tmp_path / "data", labels=labels, channel_names=channels)
    for labels, fragment in (({1: "a", 2: "a"}, "unique"), ({1: "7"}, "plain number"), ({-1: "x"}, ">= 0")):
        with pytest.raises(InputError, match=fragment):
            write_training_folder(pairs, tmp_path / "data", labels=labels, channel_names=("T1", "T2"))
    for names, fragment in ((["x"], "one name per pair"), (["a b", "a/b"], "unique as file names"), ("ab", "list")):
        with pytest.raises(InputError, match=fragment):
            write_training_folder(pairs, tmp_path / "data", labels=LABELS, channel_names=("a", "b"), case_names=names)
    assert list(tmp_path.iterdir()) == []


def test_existing_folders(tmp_path, pairs):
    options = {"labels": LABELS, "channel_names": ("T1", "T2")}
    folder = tmp_path / "data"
    folder.mkdir()  # an empty folder is used
    write_training_folder(pairs, folder, **options)
    before = (folder / "dataset.json").read_text()
    with pytest.raises(OutputExistsError, match="overwrite"):
        write_training_folder(pairs[:1], folder, **options)
    assert (folder / "dataset.json").read_text() == before
    write_training_folder(pairs[:1], folder, overwrite=True, **options)  # a previous export is replaced
    assert json.loads((folder / "dataset.json").read_text())["numTraining"] == 1
    assert len(list((folder / "labelsTr").iterdir())) == 1 and _siblings(folder) == []
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match=r"other files than training data \(e.g. notes.txt\)"):
        write_training_folder(pairs, folder, overwrite=True, **options)
    assert (folder / "notes.txt").read_text() == "mine"
    with pytest.raises(InputError, match="is a file"):
        write_training_folder(pairs, folder / "notes.txt", **options)
    with pytest.raises(InputError, match="does not exist"):
        write_training_folder(pairs, tmp_path / "missing" / "data", **options)
