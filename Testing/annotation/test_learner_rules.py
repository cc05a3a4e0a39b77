"""The learner's rules without a training run: when a round is due, how a diverging round is stopped, what a
killed or just-started learner reads as."""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import replace

import pytest
import torch

from MedSegCNNLib.annotation import AnnotationProject
from MedSegCNNLib.annotation.learner import (
    LEARNING_FOLDER,
    STATE_FILE,
    LearningState,
    _check_finite,
    _DivergedError,
    _RoundWatch,
    pending_cases,
    read_learning_state,
    write_learning_state,
)
from MedSegCNNLib.annotation.versions import Versions, new_version, read_versions, write_versions
from MedSegCNNLib.progress import Event


@pytest.fixture
def project(tmp_path, images, labels):
    with AnnotationProject.create(tmp_path / "project", images, labels=labels, learning=False) as opened:
        yield opened


def test_a_round_is_due_for_new_accepted_cases_only(project):
    state = project.project_file
    assert pending_cases(state, project.folder) == {}  # learning off
    learning = replace(state, learning=True)
    accepted = {case.id: 1 for case in state.cases if case.revisions}
    assert pending_cases(learning, project.folder) == accepted  # 3 cases, no version yet: a first round is due
    write_versions(project.folder, Versions((new_version(1, cases=accepted),)))
    assert pending_cases(learning, project.folder) == {}  # the newest version learned exactly these
    write_versions(project.folder, Versions((new_version(1, cases={**accepted, "other": 1}),)))
    assert pending_cases(learning, project.folder) == accepted  # a case was dropped (re-accepted elsewhere): due
    assert read_versions(project.folder).newest.version == 1


def test_a_diverging_loss_stops_the_round(tmp_path):
    (tmp_path / LEARNING_FOLDER).mkdir()
    watch = _RoundWatch(tmp_path, LearningState("running", version=2))
    watch(Event("start", {"total_steps": 10}))
    watch(Event("step", {"step": 1, "total_steps": 10, "loss": 0.7}))
    assert watch.state.step == 1 and watch.state.total_steps == 10
    for loss in (math.nan, math.inf):
        with pytest.raises(_DivergedError, match="the loss diverged \\(not finite at step 2\\)"):
            watch(Event("step", {"step": 2, "total_steps": 10, "loss": loss}))
    network = torch.nn.Conv3d(1, 2, 3)
    _check_finite(network)
    with torch.no_grad():
        network.weight[0, 0, 0, 0, 0] = math.nan
    with pytest.raises(_DivergedError, match="the trained weights are not finite \\(weight\\)"):
        _check_finite(network)


def test_a_killed_or_just_started_learner_reads_as_such(tmp_path):
    (tmp_path / LEARNING_FOLDER).mkdir()
    assert read_learning_state(tmp_path).state == "idle"  # never started
    write_learning_state(tmp_path, LearningState("running", version=3, pid=os.getpid()))
    stopped = read_learning_state(tmp_path)  # says running, but no learner holds the lock
    assert stopped.state == "stopped" and "next accept learns again" in stopped.message and stopped.version == 3
    write_learning_state(tmp_path, LearningState("starting", started=time.time(), pid=os.getpid()))
    assert read_learning_state(tmp_path).state == "starting"  # not yet locked: still starting
    write_learning_state(tmp_path, LearningState("starting", started=time.time() - 3600, pid=os.getpid()))
    assert read_learning_state(tmp_path).state == "stopped"  # it never took the lock
    (tmp_path / LEARNING_FOLDER / STATE_FILE).write_text("{not json")
    assert "unreadable" in read_learning_state(tmp_path).message
    assert json.loads(json.dumps(LearningState("idle").to_dict()))["state"] == "idle"
