"""Fault class 5 (inputs): ``--overwrite`` never replaces a file that the same command reads.

Each case asks a command to write onto one of its own inputs (the same path, a symbolic link to it, a hard link
of it, an input folder used as the output folder, an extra output whose name is an input's) and expects a
refusal before anything is computed: exit 1, one exact line, every file as it was, nothing temporary left.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from cli_support import PRED, REF, ROOT, SAMPLE, medsegcnn
from fault_support import assert_unchanged, error_line, leftovers, snapshot

MODEL = ROOT / "Resources" / "Models" / "hippocampus-tiny"
CASE = "hippocampus_004.nii.gz"


def refusal(output: Path, source: Path) -> str:
    return (
        f"Output {output} is the input {source} this command reads; choose another output name or folder "
        "(--overwrite never replaces an input)."
    )


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    for image in sorted((SAMPLE / "imagesTr").iterdir())[:2]:
        shutil.copy(image, folder / image.name)
    return folder


def predict(source: Path, output: Path, *extra: str):
    return medsegcnn("predict", "--model", MODEL, "--input", source, "--output", output, "--overwrite", *extra)


def check_refused(result, message: str, before: dict, root: Path) -> None:
    assert result.returncode == 1, result.stderr
    assert error_line(result) == message
    assert_unchanged(before)
    assert leftovers(root) == []


def test_predict_onto_its_input_file(tmp_path, inputs):
    image = inputs / CASE
    before = snapshot(tmp_path)
    check_refused(predict(image, image), refusal(image, image), before, tmp_path)


def test_predict_onto_a_link_to_its_input(tmp_path, inputs):
    image = inputs / CASE
    symbolic, hard = tmp_path / "symbolic.nii.gz", tmp_path / "hard.nii.gz"
    symbolic.symlink_to(image)
    os.link(image, hard)
    before = snapshot(tmp_path)
    check_refused(predict(image, symbolic), refusal(symbolic, image), before, tmp_path)
    check_refused(predict(image, hard), refusal(hard, image), before, tmp_path)


def test_predict_into_its_input_folder(tmp_path, inputs):
    before = snapshot(tmp_path)
    first = sorted(inputs.iterdir())[0]
    check_refused(predict(inputs, inputs, "--format", ".nii.gz"), refusal(first, first), before, tmp_path)


def test_predict_extra_output_named_like_its_input(tmp_path, inputs):
    """``--probabilities`` writes ``<output stem>_probabilities.nii.gz``: here that is the input."""
    image = inputs / "case_probabilities.nii.gz"
    shutil.copy(inputs / CASE, image)
    before = snapshot(tmp_path)
    output = inputs / "case.nii.gz"
    check_refused(predict(image, output, "--probabilities"), refusal(image, image), before, tmp_path)


def test_predict_onto_its_reference(tmp_path, inputs):
    reference = tmp_path / "reference.nii.gz"
    shutil.copy(REF / CASE, reference)
    before = snapshot(tmp_path)
    result = predict(inputs / CASE, reference, "--ref", reference)
    check_refused(result, refusal(reference, reference), before, tmp_path)


def test_evaluate_csv_onto_its_reference(tmp_path):
    reference = tmp_path / "reference.nii.gz"
    shutil.copy(REF / CASE, reference)
    before = snapshot(tmp_path)
    result = medsegcnn("evaluate", "--pred", PRED / CASE, "--ref", reference, "--csv", reference, "--overwrite")
    check_refused(result, refusal(reference, reference), before, tmp_path)


def test_train_overwrite_keeps_the_weights_it_starts_from(tmp_path):
    """``train --overwrite`` replaces the run files of its output folder; the weights it starts from are there."""
    output = tmp_path / "run"
    shutil.copytree(MODEL, output / "model")
    before = snapshot(tmp_path)
    start = output / "model"
    result = medsegcnn("train", "--data", SAMPLE, "--output", output, "--overwrite", "--init-from", start)
    message = (
        f"{start} lies in {start.resolve()}, which a new run in {output} replaces; copy it elsewhere first or choose "
        "another output folder (--overwrite never replaces an input)."
    )
    check_refused(result, message, before, tmp_path)
