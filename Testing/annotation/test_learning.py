"""The background learner for real, driven through the command line (each step a process of its own): a round
fine-tunes on the accepted cases and publishes a version; a learner killed mid-round loses only its round; a round
that cannot run keeps the previous version and says why."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest
from annotation_support import CASES, reference
from cli_support import medsegcnn

from MedSegCNNLib import read_image
from MedSegCNNLib.annotation import AnnotationProject
from MedSegCNNLib.annotation.learner import LEARNER_LOCK, learning_folder, read_learning_state
from MedSegCNNLib.annotation.versions import read_versions
from MedSegCNNLib.checkpoint import read_model_card

BUDGET_S = "45"
"""Enough for the planner's 50 steps after it measures the step time on a fresh cache, on 2 busy cores."""


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
