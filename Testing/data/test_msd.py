"""MSD dataset.json label names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from MedSegCNNLib.data.msd import (
    find_dataset_json,
    is_nnunet_v2,
    read_channel_names,
    read_description,
    read_label_names,
    read_training_cases,
)
from MedSegCNNLib.errors import InputError

SAMPLE = Path(__file__).resolve().parents[2] / "Resources" / "SampleData" / "Hippocampus"


def test_bundled_dataset_names():
    assert read_label_names(SAMPLE / "dataset.json") == {0: "background", 1: "Anterior", 2: "Posterior"}
    assert find_dataset_json(SAMPLE / "labelsTr") == SAMPLE / "dataset.json"
    assert find_dataset_json(SAMPLE / "labelsTr" / "missing") is None


def test_nnunet_v2_orientation(tmp_path):
    path = tmp_path / "dataset.json"
    path.write_text(json.dumps({"labels": {"background": 0, "liver": 1, "tumour": 2}}))
    assert read_label_names(path) == {0: "background", 1: "liver", 2: "tumour"}


@pytest.mark.parametrize(
    ("content", "message"),
    [("{not json", "as JSON"), ('{"name": "x"}', 'no "labels"'), ('{"labels": {"1": "a", "b": "c"}}', "not a value")],
)
def test_bad_dataset_json(tmp_path, content, message):
    path = tmp_path / "dataset.json"
    path.write_text(content)
    with pytest.raises(InputError, match=message):
        read_label_names(path)


def test_missing_dataset_json(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read_label_names(tmp_path / "dataset.json")


def test_channel_names_and_layout_detection(tmp_path):
    path = tmp_path / "dataset.json"
    assert read_channel_names({"modality": {"1": "T2", "0": "T1"}}, path) == ("T1", "T2")
    assert read_channel_names({"channel_names": {"0": "CT"}, "modality": {"0": "x"}}, path) == ("CT",)
    assert read_channel_names({"labels": {}}, path) is None
    with pytest.raises(InputError, match="without gaps"):
        read_channel_names({"modality": {"0": "a", "2": "b"}}, path)
    with pytest.raises(InputError, match="channel indices"):
        read_channel_names({"modality": {"zero": "a"}}, path)
    assert is_nnunet_v2({"channel_names": {"0": "CT"}, "file_ending": ".nii.gz"})
    assert not is_nnunet_v2(json.loads((SAMPLE / "dataset.json").read_text()))


def test_training_cases_of_the_bundled_dataset():
    description = read_description(SAMPLE / "dataset.json")
    cases = read_training_cases(description, SAMPLE)
    assert len(cases) == 12
    assert cases[0] == (
        "hippocampus_004",
        (SAMPLE / "imagesTr" / "hippocampus_004.nii.gz",),
        SAMPLE / "labelsTr" / "hippocampus_004.nii.gz",
    )
    with pytest.raises(InputError, match='needs a "label"'):
        read_training_cases({"training": [{"image": "./imagesTr/x.nii.gz"}]}, SAMPLE)
    with pytest.raises(InputError, match="must be a list"):
        read_training_cases({"training": {}}, SAMPLE)


def test_read_description_errors(tmp_path):
    path = tmp_path / "dataset.json"
    path.write_text("[1, 2]")
    with pytest.raises(InputError, match="JSON object"):
        read_description(path)
    with pytest.raises(InputError, match="does not exist"):
        read_description(tmp_path / "missing.json")
