"""predict_folder(): a folder of images into a folder of label maps with the bundled tiny model, in process: what
it returns, the model loaded once, failed cases recorded while the others go on, existing outputs refused or
skipped (the partial and truncated cases redone); and the command's one error line after the other cases are
written."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from cli_support import ROOT, SAMPLE

import MedSegCNNLib
from MedSegCNNLib import FolderOptions, PredictOptions, predict_folder, read_image
from MedSegCNNLib.cli.main import main
from MedSegCNNLib.errors import InputError, OutputExistsError, WriteError
from MedSegCNNLib.image import io
from MedSegCNNLib.inference import folder
from MedSegCNNLib.inference.model import load_segmentation_model
from MedSegCNNLib.runtime import resolve_device

MODEL = ROOT / "Resources" / "Models" / "hippocampus-tiny"
CASES = ("hippocampus_004", "hippocampus_006", "hippocampus_007")
CPU = PredictOptions(device="cpu", precision="fp32")
OLD = 1_000_000_000.0
"""The modification time (2001) given to earlier outputs, so that a file written again shows."""


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """A folder of the three sample images of CASES."""
    folder = tmp_path_factory.mktemp("cohort") / "images"
    folder.mkdir()
    for case in CASES:
        shutil.copyfile(SAMPLE / "imagesTr" / f"{case}.nii.gz", folder / f"{case}.nii.gz")
    return folder


@pytest.fixture(scope="module")
def model():
    """The tiny model, loaded once for the runs that pass it in."""
    return load_segmentation_model(MODEL, resolve_device("cpu"))


@pytest.fixture(scope="module")
def run(images, tmp_path_factory) -> tuple[MedSegCNNLib.FolderResult, Path, int]:
    """``(result, output folder, model loads)`` of a run over ``images`` from the model folder."""
    output = tmp_path_factory.mktemp("run") / "labels"
    loads = []

    def counted(*args, **kwargs):
        loads.append(args)
        return load_segmentation_model(*args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(folder, "load_segmentation_model", counted)
        result = predict_folder(MODEL, images, output, CPU)
    return result, output, len(loads)


def test_every_case_is_written_and_returned_with_the_model_loaded_once(run, images):
    result, output, loads = run
    assert loads == 1
    assert [(case.case, case.status, case.error) for case in result.cases] == [(c, "written", None) for c in CASES]
    assert [case.outputs for case in result.written] == [(output / f"{case}.nii.gz",) for case in CASES]
    assert sorted(path.name for path in output.iterdir()) == [f"{case}.nii.gz" for case in CASES]
    for case in result.cases:
        labels, image = read_image(case.label_map), read_image(images / f"{case.case}.nii.gz")
        assert labels.same_grid(image) and case.sources == (images / f"{case.case}.nii.gz",)
    assert [info.name for info in result.model_labels] == ["Anterior", "Posterior"]
    assert result.failed == () and result.skipped == ()


def test_existing_outputs_are_refused_and_left_as_they_are(run, images, model):
    _, output, _ = run
    before = {path: path.stat().st_mtime_ns for path in output.iterdir()}
    with pytest.raises(OutputExistsError, match="3 output file\\(s\\) exist already"):
        predict_folder(model, images, output, CPU)
    assert {path: path.stat().st_mtime_ns for path in output.iterdir()} == before


def test_skip_keeps_the_complete_cases_and_redoes_the_missing_and_truncated_ones(run, images, model, tmp_path, caplog):
    _, done, _ = run
    output = tmp_path / "labels"
    shutil.copytree(done, output)
    (output / f"{CASES[1]}.nii.gz").unlink()
    truncated = output / f"{CASES[2]}.nii.gz"
    truncated.write_bytes(truncated.read_bytes()[:200])
    for path in output.iterdir():
        os.utime(path, (OLD, OLD))
    with caplog.at_level(logging.WARNING):
        result = predict_folder(model, images, output, CPU, FolderOptions(existing="skip"))
    assert [(case.case, case.status) for case in result.cases] == [
        (CASES[0], "skipped"), (CASES[1], "written"), (CASES[2], "written")
    ]  # fmt: skip
    assert f"Case {CASES[2]} is not complete" in caplog.text
    assert (output / f"{CASES[0]}.nii.gz").stat().st_mtime == OLD
    for case in CASES:
        assert np.array_equal(read_image(output / f"{case}.nii.gz").array, read_image(done / f"{case}.nii.gz").array)


@pytest.fixture
def broken(images, tmp_path) -> Path:
    """The images with the second one truncated."""
    copy = tmp_path / "broken"
    shutil.copytree(images, copy)
    bad = copy / f"{CASES[1]}.nii.gz"
    bad.write_bytes(bad.read_bytes()[:3000])
    return copy


def test_a_bad_input_stops_the_run_before_anything_is_written(broken, model, tmp_path):
    output = tmp_path / "out" / "labels"
    with pytest.raises(InputError, match=f"{CASES[1]}.nii.gz is truncated or corrupt"):
        predict_folder(model, broken, output, CPU)
    assert not (tmp_path / "out").exists()


def test_without_the_check_a_bad_input_is_a_failed_case_and_the_others_go_on(broken, model, tmp_path, caplog):
    output = tmp_path / "labels"
    with caplog.at_level(logging.WARNING):
        result = predict_folder(model, broken, output, CPU, FolderOptions(check_inputs=False))
    assert [case.case for case in result.written] == [CASES[0], CASES[2]]
    (failed,) = result.failed
    assert failed.case == CASES[1] and "is truncated or corrupt" in failed.error
    assert f"Case {CASES[1]} failed, the others go on" in caplog.text
    assert sorted(path.name for path in output.iterdir()) == [f"{CASES[0]}.nii.gz", f"{CASES[2]}.nii.gz"]


def fail_writes(monkeypatch: pytest.MonkeyPatch, case: str) -> None:
    """Make the verified writes of ``case``'s outputs fail as on a full disk."""
    real_write = io.write_image

    def write(image, path, **kwargs):
        if Path(path).name.startswith(case):
            raise WriteError(f"Could not write {path}: no space left on the device.")
        return real_write(image, path, **kwargs)

    monkeypatch.setattr(io, "write_image", write)


def test_a_failed_write_is_recorded_and_the_others_go_on(images, model, tmp_path, monkeypatch):
    fail_writes(monkeypatch, CASES[0])
    output = tmp_path / "labels"
    result = predict_folder(model, images, output, CPU)
    assert [(case.case, case.status) for case in result.cases] == [
        (CASES[0], "failed"), (CASES[1], "written"), (CASES[2], "written")
    ]  # fmt: skip
    assert result.failed[0].error == f"Could not write {output / CASES[0]}.nii.gz: no space left on the device."


def test_the_command_writes_the_other_cases_and_ends_with_one_line_naming_the_failed_one(
    images, tmp_path, monkeypatch, capsys
):
    fail_writes(monkeypatch, CASES[1])
    logger = logging.getLogger("MedSegCNNLib")
    state = logger.handlers[:], logger.propagate, logger.level
    try:
        status = main(["predict", "--model", str(MODEL), "--input", str(images), "--output", str(tmp_path / "out"),
                       "--device", "cpu", "--precision", "fp32", "--progress", "none"])  # fmt: skip
    finally:
        logger.handlers[:], logger.propagate, logger.level = state
    out, err = capsys.readouterr()
    assert status == 1 and "Segmented 2 image(s)" in out
    assert f"medsegcnn: WARNING: Case {CASES[1]} failed, the others go on: Could not write" in err
    (line,) = [line for line in err.splitlines() if line.startswith("medsegcnn: error: ")]
    assert line == (
        f"medsegcnn: error: 1 of 3 case(s) failed ({CASES[1]}; see the warnings above), the others were written. "
        "Rerun with --skip-existing to segment only the cases not complete."
    )
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == [f"{CASES[0]}.nii.gz", f"{CASES[2]}.nii.gz"]


def test_folder_options_are_checked():
    with pytest.raises(InputError, match="existing must be one of refuse, overwrite, skip"):
        FolderOptions(existing="replace")
    with pytest.raises(InputError, match="pages must be one of single, stack"):
        FolderOptions(pages="all")
