"""The ``medsegcnn`` command line, run as a subprocess (``python -m MedSegCNNLib``)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from cli_support import PRED, REF, assert_clean_failure, medsegcnn

from MedSegCNNLib import Image, write_image


def test_help_and_version():
    result = medsegcnn("--help")
    assert result.returncode == 0 and "evaluate" in result.stdout and "info" in result.stdout
    result = medsegcnn("evaluate", "--help")
    assert result.returncode == 0 and "--nsd-tolerance" in result.stdout
    assert medsegcnn("--version").stdout.startswith("medsegcnn ")


def test_info_reports_versions_and_devices():
    result = medsegcnn("info", "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["versions"]["SimpleITK"] and info["versions"]["numpy"]
    assert info["devices"]["cpu"]["logical_cores"] >= 1
    assert isinstance(info["devices"]["cuda"]["available"], bool)
    text = medsegcnn("info")
    assert text.returncode == 0 and "Devices:" in text.stdout and "cuda" in text.stdout
    expect_note = info["devices"]["cuda"]["torch_cuda_version"] is not None and not info["devices"]["cuda"]["available"]
    assert ("note" in info["devices"]["cuda"]) == expect_note


def test_info_notes_a_cuda_build_without_a_gpu():
    """A CUDA build where no GPU is usable gets the CPU build's install line; a CPU build or a usable GPU none."""
    from MedSegCNNLib.cli.info_command import cuda_build_note

    note = cuda_build_note("12.8", cuda_available=False)
    assert note is not None and "CUDA 12.8 build" in note and "download.pytorch.org/whl/cpu" in note
    assert cuda_build_note(None, cuda_available=False) is None
    assert cuda_build_note("12.8", cuda_available=True) is None


def test_evaluate_one_pair_prints_a_table():
    result = medsegcnn("evaluate", "--pred", PRED / "hippocampus_004.nii.gz", "--ref", REF / "hippocampus_004.nii.gz")
    assert result.returncode == 0, result.stderr
    assert "Dice" in result.stdout and "HD95" in result.stdout and "label_1" in result.stdout


def test_evaluate_folders_json_and_csv(tmp_path):
    csv_path = tmp_path / "metrics.csv"
    result = medsegcnn("evaluate", "--pred", PRED, "--ref", REF, "--json", "--csv", csv_path)
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)  # stdout holds only the JSON object
    assert len(payload["rows"]) == 24 and set(payload["summary"]) == {"1", "2"}
    assert payload["summary"]["2"]["n_pred_empty"] == 1 and payload["summary"]["2"]["hd"]["max"] == "inf"
    assert len(csv_path.read_text().splitlines()) == 25


def test_evaluate_labels_option_and_summary_table():
    result = medsegcnn("evaluate", "--pred", PRED, "--ref", REF, "--labels", "2", "--no-surface")
    assert result.returncode == 0, result.stderr
    assert "Mean over 12 cases" in result.stdout and "Posterior" in result.stdout and "Anterior" not in result.stdout


def test_label_names_from_msd_dataset_json_or_option():
    result = medsegcnn("evaluate", "--pred", PRED, "--ref", REF, "--no-surface", "--json")
    names = {row["label"]: row["name"] for row in json.loads(result.stdout)["rows"]}
    assert names == {1: "Anterior", 2: "Posterior"}  # from the dataset.json beside labelsTr
    result = medsegcnn("evaluate", "--pred", PRED, "--ref", REF, "--no-surface", "--json", "--label-names", "2=Tail")
    names = {row["label"]: row["name"] for row in json.loads(result.stdout)["rows"]}
    assert names == {1: "label_1", 2: "Tail"}
    assert_clean_failure(
        medsegcnn("evaluate", "--pred", PRED, "--ref", REF, "--label-names", "x=Tail"), "--label-names", status=2
    )


def test_existing_csv_is_not_touched_without_overwrite(tmp_path):
    csv_path = tmp_path / "metrics.csv"
    csv_path.write_text("keep me")
    args = ("evaluate", "--pred", PRED, "--ref", REF, "--no-surface", "--csv", csv_path)
    assert_clean_failure(medsegcnn(*args), "--overwrite")
    assert csv_path.read_text() == "keep me"
    assert medsegcnn(*args, "--overwrite").returncode == 0
    assert csv_path.read_text().startswith("case,label,name,dice")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.csv"]


def test_missing_file():
    assert_clean_failure(
        medsegcnn("evaluate", "--pred", "nope.nii.gz", "--ref", REF / "hippocampus_004.nii.gz"), "nope.nii.gz"
    )


def test_unreadable_file(tmp_path):
    garbage = tmp_path / "broken.nii.gz"
    garbage.write_bytes(b"this is not a NIfTI file" * 10)
    assert_clean_failure(
        medsegcnn("evaluate", "--pred", garbage, "--ref", REF / "hippocampus_004.nii.gz"), "broken.nii.gz"
    )


def test_folder_without_volumes(tmp_path):
    (tmp_path / "empty").mkdir()
    assert_clean_failure(medsegcnn("evaluate", "--pred", tmp_path / "empty", "--ref", REF), "No volumes")


def test_mismatched_folders(tmp_path):
    pred_dir = tmp_path / "pred"
    pred_dir.mkdir()
    for name in ("hippocampus_004", "not_a_case"):
        (pred_dir / f"{name}.nii.gz").write_bytes((PRED / "hippocampus_004.nii.gz").read_bytes())
    assert_clean_failure(medsegcnn("evaluate", "--pred", pred_dir, "--ref", REF), "not_a_case")


@pytest.mark.parametrize("labels", ["a,b", "-1", "1.5"])
def test_bad_labels_option_is_a_usage_error(labels):
    result = medsegcnn("evaluate", "--pred", PRED, "--ref", REF, "--labels", labels)
    assert_clean_failure(result, "--labels", status=2)


def test_label_map_with_negative_values(tmp_path):
    bad = tmp_path / "negative.nii.gz"
    write_image(Image.from_array(np.full((4, 5, 6), -3, dtype=np.int16)), bad)
    good = tmp_path / "good.nii.gz"
    write_image(Image.from_array(np.zeros((4, 5, 6), dtype=np.int16)), good)
    assert_clean_failure(medsegcnn("evaluate", "--pred", bad, "--ref", good), "negative")


def test_label_map_with_non_integer_values(tmp_path):
    probabilities = tmp_path / "probabilities.nii.gz"
    write_image(Image.from_array(np.full((4, 5, 6), 0.25, dtype=np.float32)), probabilities)
    good = tmp_path / "good.nii.gz"
    write_image(Image.from_array(np.zeros((4, 5, 6), dtype=np.uint8)), good)
    assert_clean_failure(medsegcnn("evaluate", "--pred", probabilities, "--ref", good), "non-integer")


def test_four_dimensional_label_map(tmp_path):
    four_d = tmp_path / "four_d.nii.gz"
    write_image(Image.from_array(np.zeros((2, 4, 5, 6), dtype=np.uint8), spatial_dims=3), four_d)
    good = tmp_path / "good.nii.gz"
    write_image(Image.from_array(np.zeros((4, 5, 6), dtype=np.uint8)), good)
    assert_clean_failure(medsegcnn("evaluate", "--pred", four_d, "--ref", good), "single 2D or 3D volume")


def test_csv_in_missing_folder(tmp_path):
    result = medsegcnn("evaluate", "--pred", PRED, "--ref", REF, "--csv", tmp_path / "no" / "such" / "m.csv")
    assert_clean_failure(result, "does not exist")


def test_debug_shows_the_traceback():
    result = medsegcnn("--debug", "evaluate", "--pred", "nope.nii.gz", "--ref", "nope2.nii.gz")
    assert result.returncode != 0 and "Traceback" in result.stderr
