"""MSD dataset.json label names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from MedSegCNNLib.data.msd import find_dataset_json, read_label_names
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
