"""``medsegcnn predict`` and ``medsegcnn demo --quick`` as subprocesses."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from cli_support import REF, SAMPLE, assert_clean_failure, medsegcnn
from model_support import save_tiny_model

from MedSegCNNLib import read_image

IMAGES = SAMPLE / "imagesTr"


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory) -> Path:
    """An untrained tiny 3D U-Net saved as a model folder: enough to test the plumbing of predict."""
    return save_tiny_model(tmp_path_factory.mktemp("models") / "tiny")


def test_predict_one_file_with_all_outputs(tmp_path, model_folder):
    output = tmp_path / "case.seg.nrrd"
    source = IMAGES / "hippocampus_004.nii.gz"
    result = medsegcnn("predict", "--model", model_folder, "--input", source, "--output", output, "--tta",
                       "--probabilities", "--uncertainty", "--overlay", "--keep-largest",
                       "--ref", REF / "hippocampus_004.nii.gz")  # fmt: skip
    assert result.returncode == 0, result.stderr
    labels, image = read_image(output), read_image(source)
    assert labels.same_grid(image) and [info.name for info in labels.labels] == ["ant", "post"]
    assert read_image(tmp_path / "case_probabilities.nii.gz").num_channels == 3
    assert read_image(tmp_path / "case_uncertainty.nii.gz").same_grid(image)
    assert (tmp_path / "case_overlay.png").read_bytes()[:4] == b"\x89PNG"
    assert "Dice" in result.stdout and "ant" in result.stdout


def test_predict_a_folder_with_json_progress_and_refuse_to_overwrite(tmp_path, model_folder):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in ("hippocampus_004", "hippocampus_006"):
        (inputs / f"{name}.nii.gz").write_bytes((IMAGES / f"{name}.nii.gz").read_bytes())
    output = tmp_path / "out"
    args = ("predict", "--model", model_folder, "--input", inputs, "--output", output, "--progress", "json")
    result = medsegcnn(*args, "--ref", REF)
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert [e["event"] for e in events if e["event"] != "progress"] == ["case", "case", "metrics"]
    assert {row["case"] for row in events[-1]["rows"]} == {"hippocampus_004", "hippocampus_006"}
    assert sorted(p.name for p in output.iterdir()) == ["hippocampus_004.nii.gz", "hippocampus_006.nii.gz"]
    before = (output / "hippocampus_004.nii.gz").read_bytes()
    assert_clean_failure(medsegcnn(*args), "--overwrite")
    assert (output / "hippocampus_004.nii.gz").read_bytes() == before


def test_predict_bad_inputs(tmp_path, model_folder):
    source = IMAGES / "hippocampus_004.nii.gz"
    assert_clean_failure(medsegcnn("predict", "--model", model_folder, "--input", tmp_path / "missing.nii.gz",
                                   "--output", tmp_path / "o.nii.gz"), "does not exist")  # fmt: skip
    assert_clean_failure(medsegcnn("predict", "--model", model_folder, "--input", source,
                                   "--output", tmp_path / "o.txt"), "must be a file ending")  # fmt: skip
    weights = model_folder / "model.safetensors"
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model.json").write_bytes((model_folder / "model.json").read_bytes())
    (broken / "model.safetensors").write_bytes(weights.read_bytes()[:-100])
    assert_clean_failure(medsegcnn("predict", "--model", broken, "--input", source,
                                   "--output", tmp_path / "o.nii.gz"), "")  # fmt: skip
    assert not (tmp_path / "o.nii.gz").exists()


def test_demo_quick_writes_every_output(tmp_path):
    output = tmp_path / "demo"
    result = medsegcnn("demo", "--quick", "--output", output, "--device", "cpu", "--progress", "none")
    assert result.returncode == 0, result.stderr
    assert "Dice" in result.stdout and "Anterior" in result.stdout
    segmentations = sorted(p.name for p in (output / "segmentations").iterdir())
    assert segmentations and all(name.endswith((".nii.gz", ".seg.nrrd")) for name in segmentations)
    cases = {name.split(".")[0] for name in segmentations}
    assert sorted(p.stem for p in (output / "overlays").iterdir()) == sorted(cases)
    assert (output / "model_run" / "model" / "model.json").is_file()
    assert (output / "metrics.csv").read_text().startswith("case,label,name,dice")
    assert "Mean Dice" in (output / "report.md").read_text()
    labels = read_image(output / "segmentations" / f"{sorted(cases)[0]}.seg.nrrd")
    assert [info.name for info in labels.labels] == ["Anterior", "Posterior"]
    assert np.isin(labels.array, [0, 1, 2]).all()
    assert_clean_failure(medsegcnn("demo", "--quick", "--output", output), "--overwrite")
