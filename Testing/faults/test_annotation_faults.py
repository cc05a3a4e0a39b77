"""Faults of the annotation loop through the command line: a second driver, a corrupt project file, a full disk,
kill -9 during accept and during learning, a learning round that cannot run, segmentations that do not fit, images
that moved. Each gives one clear line (or a warning where accepting is right) and loses nothing already stored."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from annotation_support import CASES, kill_learners, reference, sample_images, sample_labels
from cli_support import ROOT, medsegcnn
from fault_support import assert_unchanged, error_line, fill, leftovers, mounted_tmpfs, snapshot

from MedSegCNNLib import read_image, write_image
from MedSegCNNLib.annotation import AnnotationProject, CaseState
from MedSegCNNLib.annotation.learner import LEARNER_LOCK, learning_folder, read_learning_state
from MedSegCNNLib.annotation.project_file import PROJECT_FILE
from MedSegCNNLib.annotation.versions import read_versions
from MedSegCNNLib.checkpoint import read_model_card


@pytest.fixture
def images(tmp_path):
    return sample_images(tmp_path)


@pytest.fixture
def labels(tmp_path):
    return sample_labels(tmp_path)


@pytest.fixture(autouse=True)
def _no_learner_outlives_its_test(tmp_path):
    yield
    kill_learners(tmp_path)


@pytest.fixture
def project(tmp_path, images):
    """A project of the 12 sample cases starting from the bundled model, learning off, closed again."""
    folder = tmp_path / "project"
    AnnotationProject.create(folder, images, model="hippocampus-tiny", learning=False).close()
    return folder


def test_a_second_driver_is_refused_naming_the_holder(project):
    before = snapshot(project)
    with AnnotationProject.open(project, holder="3D Slicer"):
        for args in (("next", project), ("accept", project, CASES[0], reference(CASES[0])), ("status", project)):
            result = medsegcnn("project", *args)
            assert result.returncode == 1, result.stderr
            line = error_line(result)
            holder = f"in use by process {os.getpid()} (3D Slicer on "
            assert line.startswith(f"The annotation project {project} is {holder}")
            assert line.endswith("; close it there (or wait for that command to end) and try again.")
    assert_unchanged(before)


def test_a_corrupt_project_file_is_refused_with_its_path_and_kept(project):
    path = project / PROJECT_FILE
    path.write_bytes(path.read_bytes()[:-40])
    before = snapshot(project)
    result = medsegcnn("project", "status", project)
    assert result.returncode == 1
    assert error_line(result).startswith(f"The project file {path} is corrupt (")
    assert error_line(result).endswith("restore it from a backup. It was not changed.")
    assert_unchanged(before)


def test_segmentations_that_do_not_fit_are_refused_and_an_empty_one_is_accepted(project, tmp_path):
    case = CASES[3]
    truth = read_image(reference(case))
    other_grid = truth.__class__(truth.array, truth.spacing, truth.origin, truth.direction @ np.diag([1, -1, -1]))
    write_image(other_grid, tmp_path / "turned.nii.gz")
    write_image(truth.with_array(np.where(truth.array > 0, 7, 0).astype(np.uint8)), tmp_path / "seven.nii.gz")
    write_image(truth.with_array(np.zeros_like(truth.array)), tmp_path / "empty.nii.gz")
    before = snapshot(project)
    turned = medsegcnn("project", "accept", project, case, tmp_path / "turned.nii.gz")
    assert turned.returncode == 1 and "label vs image: direction: axes turned by up to 180°" in error_line(turned)
    seven = medsegcnn("project", "accept", project, case, tmp_path / "seven.nii.gz")
    assert seven.returncode == 1
    assert error_line(seven) == (
        f"The segmentation of case {case} holds label value(s) [7] that this project does not have (its labels: "
        "0 background, 1 Anterior, 2 Posterior); relabel them. Nothing was stored."
    )
    assert_unchanged(before)
    assert leftovers(project) == []
    empty = medsegcnn("project", "accept", project, case, tmp_path / "empty.nii.gz")
    assert empty.returncode == 0, empty.stderr
    assert f"medsegcnn: WARNING: Case {case} was accepted with an empty segmentation" in empty.stderr


def test_moved_images_are_named_by_status_and_passed_over_by_next(project, images):
    gone = images / f"{CASES[0]}.nii.gz"
    gone.unlink()
    status = medsegcnn("project", "status", project)
    assert status.returncode == 0, status.stderr
    assert f"case {CASES[0]}: image(s) moved or vanished: {gone}" in status.stdout
    picked = medsegcnn("project", "next", project, "--case", CASES[0])
    assert picked.returncode == 1 and error_line(picked).startswith(f"The images of case {CASES[0]} moved or vanished")


def test_a_full_disk_during_accept_keeps_the_project(tmp_path, images):
    with mounted_tmpfs(tmp_path / "disk", "size=1m") as disk:
        folder = disk / "project"
        AnnotationProject.create(folder, images, label_names={1: "anterior", 2: "posterior"}, learning=False).close()
        fill(disk)
        before = snapshot(folder)
        result = medsegcnn("project", "accept", folder, CASES[1], reference(CASES[1]))
        assert result.returncode == 1
        target = folder / "labels" / f"{CASES[1]}.r001.nii.gz"
        assert error_line(result) == (
            f"Could not write {target}: no space left on the device; free some space or write elsewhere."
        )
        assert_unchanged(before)
        assert leftovers(folder) == [] and not target.exists()
        for filler in ("filler", "filler-tail"):
            (disk / filler).unlink()
        accepted = medsegcnn("project", "accept", folder, CASES[1], reference(CASES[1]))
        assert accepted.returncode == 0, accepted.stderr


@pytest.mark.skipif(os.name != "posix", reason="SIGKILL")
def test_kill_9_during_accept_stores_the_case_whole_or_not_at_all(project):
    """Accepts killed at spread-out moments: each time the project file reads, and the case is either accepted
    with a complete revision or not accepted; the next accept always works."""
    case = CASES[7]
    outcomes = []
    for delay in (0.3, 0.6, 0.9, 1.2, 1.5, 1.8, 2.2, 3.0):
        process = subprocess.Popen(
            [sys.executable, "-m", "MedSegCNNLib", "project", "accept", str(project), case, str(reference(case))],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        process.wait()
        with AnnotationProject.open(project) as opened:
            record = opened.project_file.case(case)
            for revision in record.revisions:
                assert np.array_equal(read_image(project / revision).array, read_image(reference(case)).array)
            outcomes.append(record.state is CaseState.ACCEPTED)
    finished = medsegcnn("project", "accept", project, case, reference(case), "--json")
    assert finished.returncode == 0, finished.stderr
    assert json.loads(finished.stdout)["revision"] == sum(outcomes) + 1
    assert leftovers(project) == []


# ----- the background learner, for real ----------------------------------------------------------------------

BUDGET_S = "25"
"""Short: where loading, planning and the planner's 50 steps need more, the round stretches to fit them (up to 3x,
see :data:`MedSegCNNLib.annotation.learner.STRETCH_LIMIT`), as on a fresh cache or busy cores."""


def wait_until(condition, timeout_s: float = 300.0, what: str = "the condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def run_json(*args: str | os.PathLike[str]) -> dict:
    result = medsegcnn("project", *args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.skipif(os.name != "posix", reason="kills the learner's process group with SIGKILL")
def test_the_loop_in_processes_survives_a_killed_learner(tmp_path, images, labels):
    folder = tmp_path / "project"
    init = run_json("init", folder, "--images", images, "--labels", labels, "--learn-budget", BUDGET_S)
    assert init["cases"] == {"unlabelled": 9, "predicted": 0, "accepted": 3, "skipped": 0}
    wait_until(lambda: read_learning_state(folder).state == "running", what="the learner to start")
    pid = int((learning_folder(folder) / LEARNER_LOCK).read_text().splitlines()[0])
    os.killpg(pid, signal.SIGKILL)  # kill -9 during learning
    wait_until(lambda: run_json("status", folder)["learning"]["state"] == "stopped", what="the stopped learner")
    status = run_json("status", folder)
    assert status["versions"] == [] and "the next accept learns again" in status["learning"]["message"]
    shown = run_json("next", folder)
    assert shown["prediction"] is None and shown["model_version"] is None  # nothing half-learned is used
    accepted = run_json("accept", folder, shown["case"], reference(shown["case"]), "--wait")
    assert accepted["learning"] == "started" and accepted["version"] == 1
    assert accepted["round"]["model_version"] is None and accepted["round"]["voxels_to_paint"] > 0
    newest = read_versions(folder).newest
    assert newest.cases == {**{name: 1 for name in CASES[:3]}, shown["case"]: 1} and newest.steps > 0
    card = read_model_card(folder / "models" / "latest", require_weights=True)
    assert [label.name for label in card.labels] == ["background", "label_1", "label_2"]
    assert not (learning_folder(folder) / "run").exists()  # the round's working folder is gone
    following = run_json("next", folder)
    assert following["model_version"] == 1 and following["case"] != shown["case"]
    assert read_image(following["prediction"]).size == read_image(following["images"][0]).size
    final = run_json("status", folder)
    assert final["learning"]["state"] == "idle" and final["latest_model"].endswith("v0001")


def test_a_round_that_cannot_run_keeps_the_previous_version_and_says_why(tmp_path, images):
    folder = tmp_path / "project"
    with AnnotationProject.create(folder, images, model="hippocampus-tiny", learn_budget_s=float(BUDGET_S)) as project:
        case = project.next_case().case
        result = project.accept(case, reference(case))
        assert result.learning == "started"
        (images / f"{case}.nii.gz").rename(tmp_path / f"{case}.nii.gz")  # before the learner reads it
        with pytest.raises(Exception, match="no accepted case has its image files"):
            project.wait_for(case, 1, timeout_s=120)
        state = project.status().to_dict()
        assert state["learning"]["state"] == "failed"
        assert state["learning"]["message"] == (
            "Learning round 1 failed: no accepted case has its image files (moved or deleted?); version 0 is kept. "
            "The next accept learns again."
        )
        assert state["failures"][-1]["reason"] == "no accepted case has its image files (moved or deleted?)"
        assert [version["version"] for version in state["versions"]] == [0]
        assert state["missing_images"] == {case: [str(images / f"{case}.nii.gz")]}
        assert project.next_case().model_version == 0  # the kept version still predicts
