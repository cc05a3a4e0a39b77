"""Annotation projects through the Python API, on the bundled Hippocampus cases and model (learning off here:
the background learner has its own tests in test_learning.py)."""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest
from annotation_support import CASES, reference

from MedSegCNNLib import read_image, write_image
from MedSegCNNLib.annotation import AnnotationProject, CaseState
from MedSegCNNLib.annotation.project_file import FORMAT_VERSION, PROJECT_FILE
from MedSegCNNLib.errors import InputError
from MedSegCNNLib.image.geometry import Grid


@pytest.fixture
def project(tmp_path, images, labels):
    """A project of the 12 cases, 3 of them labelled, starting from the bundled model, learning off."""
    with AnnotationProject.create(
        tmp_path / "project", images, labels=labels, model="hippocampus-tiny", learning=False
    ) as opened:
        yield opened


def test_create_records_cases_labels_and_the_initial_model(project, labels):
    state = project.project_file
    data = json.loads((project.folder / PROJECT_FILE).read_text())
    assert data["format"] == "medsegcnn-annotation-project" and data["format_version"] == FORMAT_VERSION
    assert [case.id for case in state.cases] == CASES
    assert state.labels == {0: "background", 1: "Anterior", 2: "Posterior"}  # from the model
    assert state.dims == 3 and len(state.channels) == 1
    accepted = [case for case in state.cases if case.state is CaseState.ACCEPTED]
    assert [case.id for case in accepted] == CASES[:3]
    for case in accepted:  # stored as a revision with the reference's voxels, and paths relative to the project
        stored = read_image(project.folder / case.revisions[0])
        assert np.array_equal(stored.array, read_image(labels / f"{case.id}.nii.gz").array)
        assert all(not path.startswith("/") for path in (*case.images, *case.revisions))
    assert (project.folder / "models" / "v0000" / "model.json").is_file()
    assert (project.folder / "models" / "latest").resolve() == (project.folder / "models" / "v0000").resolve()
    assert project.status().to_dict()["cases"] == {"unlabelled": 9, "predicted": 0, "accepted": 3, "skipped": 0}


def test_next_case_predicts_on_the_image_grid_and_is_stable(project):
    first = project.next_case()
    assert first.case not in CASES[:3] and first.model_version == 0 and first.prediction.is_file()
    prediction, image = read_image(first.prediction), read_image(first.images[0])
    assert Grid.of(prediction) == Grid.of(image)
    assert set(np.unique(prediction.array)) <= {0, 1, 2} and prediction.array.any()
    assert project.project_file.case(first.case).state is CaseState.PREDICTED
    again = project.next_case()  # not accepted yet: the same case, its prediction reused
    assert (again.case, again.prediction, again.seconds) == (first.case, first.prediction, 0.0)
    chosen = project.next_case(case=CASES[0])  # any case on request, an accepted one too
    assert chosen.case == CASES[0] and project.project_file.case(CASES[0]).state is CaseState.ACCEPTED


def test_accept_stores_a_revision_and_logs_the_effort(project):
    case = project.next_case()
    result = project.accept(case.case, case.prediction)  # the prediction accepted as it is
    assert result.revision == 1 and result.learning == "off"
    assert result.round.mean_dice == 1.0 and result.round.voxels_changed == 0 and result.round.model_version == 0
    assert np.array_equal(read_image(result.file).array, read_image(case.prediction).array)
    corrected = reference(case.case)
    second = project.accept(case.case, corrected)  # re-accepting keeps the first revision
    truth = read_image(corrected).array
    predicted = read_image(case.prediction).array
    assert second.revision == 2 and result.file.is_file() and second.file != result.file
    assert second.round.voxels_changed == int(np.count_nonzero(truth != predicted))
    assert second.round.voxels_to_paint == int(np.count_nonzero(truth))
    anterior = 2 * np.sum((truth == 1) & (predicted == 1)) / (np.sum(truth == 1) + np.sum(predicted == 1))
    assert second.round.dice["Anterior"] == pytest.approx(anterior, abs=1e-4)
    record = project.project_file.case(case.case)
    assert record.state is CaseState.ACCEPTED and len(record.revisions) == 2
    assert [entry["round"] for entry in project.status().to_dict()["rounds"]] == [1, 2]
    assert project.next_case().case != case.case  # accepted cases leave the random order


def test_skip_and_the_strategies(project):
    first = project.next_case()
    project.skip(first.case)
    assert project.project_file.case(first.case).state is CaseState.SKIPPED
    assert project.next_case().case != first.case
    with pytest.raises(InputError, match="is accepted; its segmentation stays"):
        project.skip(CASES[0])
    ranked = project.next_case(strategy="entropy")
    assert ranked.uncertainty is not None and ranked.uncertainty > 0 and ranked.prediction.is_file()
    with pytest.raises(InputError, match="Unknown strategy 'largest'"):
        project.next_case(strategy="largest")


def test_refused_segmentations_leave_the_project_as_it_was(project, tmp_path, caplog):
    case = project.next_case().case
    truth = read_image(reference(case))
    before = (project.folder / PROJECT_FILE).read_bytes()
    listing = sorted(project.folder.rglob("*"))
    shifted = truth.__class__(truth.array, truth.spacing, tuple(o + 3.0 for o in truth.origin), truth.direction)
    write_image(shifted, tmp_path / "shifted.nii.gz")
    with pytest.raises(InputError, match=r"its image: label vs image: origin 5.2 mm apart \(.*\) mm\)"):
        project.accept(case, tmp_path / "shifted.nii.gz")
    extra = truth.with_array(np.where(truth.array == 2, 5, truth.array).astype(np.uint8))
    write_image(extra, tmp_path / "extra.nii.gz")
    with pytest.raises(InputError, match=r"label value\(s\) \[5\] that this project does not have"):
        project.accept(case, tmp_path / "extra.nii.gz")
    with pytest.raises(InputError, match="does not exist"):
        project.accept(case, tmp_path / "missing.nii.gz")
    with pytest.raises(InputError, match="has no case 'nope'"):
        project.accept("nope", reference(case))
    assert (project.folder / PROJECT_FILE).read_bytes() == before
    assert sorted(project.folder.rglob("*")) == listing
    empty = truth.with_array(np.zeros_like(truth.array))
    with caplog.at_level(logging.WARNING):
        result = project.accept(case, empty)  # a case may truly hold nothing: accepted, with a warning
    assert result.empty and "empty segmentation" in caplog.text


def test_one_driver_at_a_time(project):
    with pytest.raises(InputError, match=r"is in use by process \d+ \(a Python script on .* since"):
        AnnotationProject.open(project.folder)
    project.close()
    with AnnotationProject.open(project.folder, holder="3D Slicer") as reopened:
        with pytest.raises(InputError, match=r"in use by process \d+ \(3D Slicer on"):
            AnnotationProject.open(project.folder)
        assert reopened.next_case().model_version == 0
    with pytest.raises(InputError, match="is closed"):
        project.next_case()


def test_a_moved_project_keeps_its_cases_and_missing_images_are_named(project, tmp_path):
    project.accept(CASES[5], reference(CASES[5]))
    project.close()
    moved = tmp_path / "moved"
    moved.mkdir()
    shutil.move(project.folder, moved / "project")
    shutil.move(tmp_path / "images", moved / "images")
    with AnnotationProject.open(moved / "project") as reopened:
        assert reopened.project_file.case(CASES[5]).state is CaseState.ACCEPTED
        assert reopened.next_case().prediction.is_file()
        vanished = moved / "images" / f"{CASES[6]}.nii.gz"
        vanished.unlink()
        assert reopened.status().missing_images == {CASES[6]: [str(vanished)]}
        with pytest.raises(InputError, match=f"images of case {CASES[6]} moved or vanished"):
            reopened.next_case(case=CASES[6])


def test_create_refuses_what_it_cannot_use(tmp_path, images, labels):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="already exists and is not empty"):
        AnnotationProject.create(tmp_path / "busy", images)
    with pytest.raises(InputError, match="Name the labels to segment"):
        AnnotationProject.create(tmp_path / "new", images)
    assert not (tmp_path / "new").exists()
    shutil.copy(labels / f"{CASES[0]}.nii.gz", labels / "stranger.nii.gz")
    with pytest.raises(InputError, match=r"Label file\(s\) stranger.nii.gz .* match no image"):
        AnnotationProject.create(tmp_path / "new", images, labels=labels)
    assert not (tmp_path / "new").exists()
    with AnnotationProject.create(
        tmp_path / "named", images, label_names={1: "head", 2: "tail"}, learning=False
    ) as named:
        assert named.project_file.labels == {0: "background", 1: "head", 2: "tail"}
        assert named.next_case().prediction is None  # no model yet: painted by hand


def test_a_corrupt_project_file_is_refused_and_kept(project):
    project.close()
    path = project.folder / PROJECT_FILE
    path.write_text(path.read_text()[:200])
    before = path.read_bytes()
    with pytest.raises(InputError, match=f"The project file {path} is corrupt"):
        AnnotationProject.open(project.folder)
    assert path.read_bytes() == before
