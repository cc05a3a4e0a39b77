"""The panel's Annotate section driven by its widgets as a user clicks (panel_harness.py): the annotation loop of
issue 22 on a real MRML scene, with the real logic and MedSegCNNLib's annotation projects.

Projects are made from the bundled hippocampus cases (copied into the test's folder). Learning does not run, except
in the one test of the learning progress: projects are created in the panel with a model but no accepted case
(nothing to learn yet), or made by the library with learning off and opened in the panel; an autouse fixture kills
any learner a test leaves.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("slicer")
pytest.importorskip("PySide6")

from annotation_support import kill_learners
from cli_support import SAMPLE
from slicer_module.panel_harness import TASK_DEADLINE_S, Panel, open_panel
from slicer_module.pythonqt import unwrap
from slicer_module.test_panel import LABELS, MODEL, nodes_of_class, segment_names, state

PROJECT_CASES = 12


@pytest.fixture(autouse=True)
def _no_learner_outlives_its_test(tmp_path: Path) -> Iterator[None]:
    yield
    kill_learners(tmp_path)


@pytest.fixture
def panel(scene: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Panel]:
    """The panel with the Annotate section expanded and one slice view (a slice composite node, as Slicer's view
    layout makes)."""
    scene.AddNewNodeByClass("vtkMRMLSliceCompositeNode")
    with open_panel(monkeypatch, scene) as opened:
        opened.ui.annotateCollapsibleButton.collapsed = False
        yield opened
        assert opened.slotErrors == [], "an exception escaped a slot of the panel"


@pytest.fixture
def images(tmp_path: Path) -> Path:
    """The bundled hippocampus images in a folder of their own."""
    folder = tmp_path / "images"
    shutil.copytree(SAMPLE / "imagesTr", folder)
    return folder


@pytest.fixture
def made_project(tmp_path: Path, images: Path) -> Path:
    """A project of the bundled cases made by the library: the bundled model as version 0, learning off, a 90 s
    learning budget; closed again (the panel opens it)."""
    from MedSegCNNLib.annotation import AnnotationProject

    folder = tmp_path / "made"
    AnnotationProject.create(folder, images, model=MODEL, learning=False, learn_budget_s=90.0).close()
    return folder


def layer_voxels(segmentation: Any) -> np.ndarray:
    """The segmentation's shared labelmap layer as a writable (z, y, x) view: painting it is what the Segment
    Editor's effects do."""
    from vtk.util import numpy_support

    layer = segmentation.GetSegmentation().GetNthSegment(0).GetRepresentation("Binary labelmap")
    x0, x1, y0, y1, z0, z1 = layer.GetExtent()
    assert (x0, y0, z0) == (0, 0, 0)
    return numpy_support.vtk_to_numpy(layer.GetPointData().GetScalars()).reshape(z1 + 1, y1 + 1, x1 + 1)


def paint_block(segmentation: Any, value: int) -> np.ndarray:
    """Paints a 3-voxel cube of label ``value`` in a corner; returns the edited label map (z, y, x)."""
    voxels = layer_voxels(segmentation)
    voxels[0:3, 0:3, 0:3] = value
    segmentation.GetSegmentation().GetNthSegment(0).GetRepresentation("Binary labelmap").Modified()
    return voxels.copy()


def background_volume(scene: Any) -> Any:
    composite = nodes_of_class(scene, "vtkMRMLSliceCompositeNode")[0]
    return scene.GetNodeByID(composite.GetBackgroundVolumeID() or "")


def open_in_panel(panel: Panel, folder: Path) -> None:
    shown = len(panel.dialogs.shown)
    panel.typePath("annotateProjectPathLineEdit", folder)
    assert panel.ui.annotateOpenButton.enabled, panel.ui.annotateOpenButton.toolTip
    panel.ui.annotateOpenButton.click()
    assert panel.dialogs.shown[shown:] == []
    assert panel.status == f"Opened the annotation project {folder}."


# ----- the loop -------------------------------------------------------------------------------------------------


def test_create_a_project_from_the_selected_model_show_a_case_in_the_segment_editor_skip_and_close(
    panel, tmp_path, images
):
    from MedSegCNNLib.annotation import AnnotationProject
    from MedSegCNNLib.errors import InputError

    ui = panel.ui
    assert not ui.annotateCreateButton.enabled and ui.annotateCreateButton.toolTip == "Choose the project folder."
    project = tmp_path / "project"
    panel.typePath("annotateProjectPathLineEdit", project)
    assert not ui.annotateCreateButton.enabled
    assert ui.annotateCreateButton.toolTip == "Choose the folder of images to annotate."
    panel.typePath("annotateImagesPathLineEdit", images)
    assert ui.annotateFromModelCheckBox.checked and ui.modelComboBox.currentText == MODEL
    ui.annotateLearnBudgetSpinBox.setValue(600.0)
    assert not ui.annotateNextButton.enabled and not ui.annotateAcceptButton.enabled
    assert ui.annotateCreateButton.enabled, ui.annotateCreateButton.toolTip

    ui.annotateCreateButton.click()
    assert panel.dialogs.shown == []
    assert panel.status == f"Created the annotation project {project}."
    assert (project / "project.json").is_file() and (project / "models" / "v0000" / "model.json").is_file()
    assert ui.annotateStatusLabel.text == (
        f"Model: version 0. Accepted: 0 of {PROJECT_CASES} cases. Last round's Dice before correction: -."
    )
    assert ui.annotateProgressBar.format == "idle"
    assert not ui.annotateCreateButton.enabled and not ui.annotateOpenButton.enabled
    assert ui.annotateCloseButton.enabled and ui.annotateNextButton.enabled and not ui.annotateAcceptButton.enabled
    assert panel.widget._annotateTimer.isActive()
    with pytest.raises(InputError, match=r"in use by .*3D Slicer"):
        AnnotationProject.open(project)  # this panel drives it
    assert panel.widget.logic.projectStatus().learning["budget_per_round_s"] == 600.0

    # a learning round that failed (as the learner reports it): the bar and the status line say why
    from MedSegCNNLib.annotation.learner import LearningState, learning_folder, write_learning_state

    learning_folder(project).mkdir(exist_ok=True)
    write_learning_state(project, LearningState("failed", message="the loss diverged (not finite at step 7)"))
    panel.widget.refreshAnnotation()  # as the section's timer does
    assert ui.annotateProgressBar.format == "failed"
    assert ui.annotateProgressBar.toolTip == "the loss diverged (not finite at step 7)"
    assert ui.annotateStatusLabel.text.endswith(" Learning failed: the loss diverged (not finite at step 7)")

    panel.chooseItem("annotateStrategyComboBox", "entropy")
    assert panel.widget.logic.getParameterNode().annotateStrategy == "entropy"
    ui.annotateNextButton.click()
    assert panel.dialogs.shown == []
    volumes = nodes_of_class(panel.scene, "vtkMRMLScalarVolumeNode")
    segmentations = nodes_of_class(panel.scene, "vtkMRMLSegmentationNode")
    assert len(volumes) == 1 and len(segmentations) == 1
    volume, segmentation = volumes[0], segmentations[0]
    case = volume.GetName()
    assert segmentation.GetName() == f"{case} segmentation" and segment_names(segmentation) == LABELS
    assert {1, 2} <= set(np.unique(layer_voxels(segmentation)).tolist())  # the model's prediction
    editor = ui.annotateSegmentEditorWidget
    assert editor.segmentationNode() is segmentation and editor.sourceVolumeNode() is volume
    assert unwrap(editor)._observingViews  # the effects get the slice views' events
    editor_node = editor.mrmlSegmentEditorNode()
    assert panel.scene.IsNodePresent(editor_node) and editor_node.GetSegmentationNode() is segmentation
    assert editor_node.GetSourceVolumeNode() is volume
    assert background_volume(panel.scene) is volume
    assert panel.status.startswith(f'Case "{case}": correct its segmentation')
    assert ui.annotateAcceptButton.enabled and ui.annotateSkipButton.enabled

    ui.annotateSkipButton.click()
    assert panel.status == f"Skipped case {case}; Next case loads another."
    assert panel.widget.logic.projectStatus().cases["skipped"] == [case]
    assert not ui.annotateAcceptButton.enabled and not ui.annotateSkipButton.enabled
    assert ui.annotateAcceptButton.toolTip == "Load a case with Next case first."

    ui.annotateNextButton.click()  # the skipped case's nodes go, the next case comes
    assert not panel.scene.IsNodePresent(volume) and not panel.scene.IsNodePresent(segmentation)
    (following,) = nodes_of_class(panel.scene, "vtkMRMLScalarVolumeNode")
    assert following.GetName() != case and editor.sourceVolumeNode() is following
    assert nodes_of_class(panel.scene, "vtkMRMLSegmentEditorNode") == [editor_node]  # one, reused

    ui.annotateCloseButton.click()
    assert panel.status == f"Closed the annotation project {project}; its cases' nodes stay."
    assert ui.annotateStatusLabel.text == "No project is open." and not panel.widget._annotateTimer.isActive()
    assert panel.scene.IsNodePresent(following)
    assert not ui.annotateNextButton.enabled and not ui.annotateCloseButton.enabled
    assert ui.annotateOpenButton.enabled and not ui.annotateAcceptButton.enabled
    AnnotationProject.open(project).close()  # closing released the lock
    assert panel.dialogs.shown == []


def test_open_a_project_correct_a_case_accept_and_see_the_round_in_the_status_and_the_curve(panel, made_project):
    from MedSegCNNLib.image.io import read_image
    from MedSegCNNLib.mrml.annotation_curves import ROUNDS_TABLE

    ui = panel.ui
    ui.annotateLearnBudgetSpinBox.setValue(20.0)
    open_in_panel(panel, made_project)
    assert panel.status == f"Opened the annotation project {made_project}."
    assert ui.annotateLearnBudgetSpinBox.value == 90.0  # the project's own budget
    assert ui.annotateProgressBar.format == "off"  # made with learning off
    assert ui.annotatePlotWidget.mrmlPlotViewNode() is None  # no round yet: no curve

    ui.annotateNextButton.click()
    (segmentation,) = nodes_of_class(panel.scene, "vtkMRMLSegmentationNode")
    case = segmentation.GetName().removesuffix(" segmentation")
    edited = paint_block(segmentation, 2)
    before = state(panel.scene)

    ui.annotateAcceptButton.click()
    assert panel.dialogs.shown == []
    status = panel.widget.logic.projectStatus()
    assert status.cases["accepted"] == [case]
    (round_,) = status.rounds
    stored = read_image(made_project / "labels" / f"{case}.r001.nii.gz")
    np.testing.assert_array_equal(stored.array, edited)  # the edited voxels, on the case's grid
    dice = round_["mean_dice"]
    assert 0.0 < dice < 1.0 and round_["voxels_changed"] > 0
    assert panel.status == f"Accepted case {case} (revision 1; Dice before correction {dice:.3f}); learning: off."
    assert ui.annotateStatusLabel.text == (
        f"Model: version 0. Accepted: 1 of {PROJECT_CASES} cases. Last round's Dice before correction: {dice:.3f}."
    )
    # the Dice curve: a table with one point per round, drawn by a chart in the section's plot widget
    view = ui.annotatePlotWidget.mrmlPlotViewNode()
    assert view is not None and panel.scene.IsNodePresent(view)
    (table,) = [node for node in nodes_of_class(panel.scene, "vtkMRMLTableNode") if node.GetName() == ROUNDS_TABLE]
    assert table.GetNumberOfRows() == 1
    assert table.GetTable().GetValue(0, 0).ToDouble() == 1.0
    assert table.GetTable().GetValue(0, 1).ToDouble() == pytest.approx(dice)
    chart = panel.scene.GetNodeByID(view.GetPlotChartNodeID())
    series = panel.scene.GetNodeByID(chart.GetPlotSeriesNodeID())
    assert series.GetTableNodeID() == table.GetID()
    added = state(panel.scene)[0] - before[0]
    assert added == len([table, chart, series, view])  # accepting adds the curve's nodes only

    # accepting again keeps the first revision; the curve gets a second point; polling changes nothing
    ui.annotateAcceptButton.click()
    assert (made_project / "labels" / f"{case}.r002.nii.gz").is_file()
    assert (made_project / "labels" / f"{case}.r001.nii.gz").is_file()
    assert table.GetNumberOfRows() == 2 and ui.annotatePlotWidget.mrmlPlotViewNode() is view
    after = state(panel.scene)
    panel.widget.refreshAnnotation()  # as the timer does
    assert state(panel.scene) == after and table.GetNumberOfRows() == 2

    ui.annotateNextButton.click()  # the accepted case's nodes go
    assert not panel.scene.IsNodePresent(segmentation)
    assert [node.GetName() for node in nodes_of_class(panel.scene, "vtkMRMLSegmentationNode")] != [
        f"{case} segmentation"
    ]


def test_the_learning_progress_follows_the_background_learner(panel, tmp_path, images):
    """The one test with a real learner: a project created from a labels folder of three cases (enough for a first
    round without a model) starts learning at once; the progress bar shows its steps. It is killed afterwards."""
    from MedSegCNNLib.mrml.annotation import project_summary

    labels = tmp_path / "labels"
    labels.mkdir()
    for case in ("hippocampus_004", "hippocampus_006", "hippocampus_007"):
        shutil.copy(SAMPLE / "labelsTr" / f"{case}.nii.gz", labels)
    ui = panel.ui
    ui.annotateFromModelCheckBox.click()  # no model: painted cases are the start
    assert not panel.widget.logic.getParameterNode().annotateFromModel
    panel.typePath("annotateProjectPathLineEdit", tmp_path / "project")
    panel.typePath("annotateImagesPathLineEdit", images)
    panel.typePath("annotateLabelsPathLineEdit", labels)
    ui.annotateLabelNamesLineEdit.setText("Anterior, Posterior")
    ui.annotateLearnBudgetSpinBox.setValue(300.0)
    ui.annotateCreateButton.click()
    assert panel.dialogs.shown == []
    assert ui.annotateStatusLabel.text.startswith(f"Model: none yet. Accepted: 3 of {PROJECT_CASES} cases.")
    assert ui.annotateProgressBar.format in ("learning: starting", "learning: step %v of %m")

    summary = project_summary(panel.widget.logic.projectStatus())
    deadline = time.monotonic() + TASK_DEADLINE_S  # the harness's limit for background work, not a test of speed
    while summary.learning == "starting" or (summary.learning == "running" and summary.total_steps == 0):
        if time.monotonic() > deadline:
            raise TimeoutError((tmp_path / "project" / "learning" / "learner.log").read_text(errors="replace"))
        time.sleep(0.2)
        panel.widget.refreshAnnotation()  # as the section's timer does, until the learner has planned its round
        summary = project_summary(panel.widget.logic.projectStatus())
    assert summary.learning == "running", summary.message
    panel.widget.refreshAnnotation()
    bar = unwrap(ui.annotateProgressBar)
    assert bar.maximum() == summary.total_steps > 0 and ui.annotateProgressBar.format == "learning: step %v of %m"
    assert 0 <= bar.value() <= bar.maximum()


def test_closing_the_scene_keeps_the_project_open_and_the_next_case_comes_into_the_new_scene(panel, made_project):
    open_in_panel(panel, made_project)
    panel.ui.annotateNextButton.click()
    (first,) = nodes_of_class(panel.scene, "vtkMRMLSegmentationNode")
    editor = panel.ui.annotateSegmentEditorWidget

    panel.scene.Clear(0)  # File > Close Scene: the case's nodes go, the project stays open
    assert not panel.scene.IsNodePresent(first)
    assert not panel.ui.annotateAcceptButton.enabled and panel.ui.annotateNextButton.enabled
    panel.widget.onAcceptCase()  # what the disabled button would do: nothing is stored
    assert len(panel.dialogs.texts()) == 1 and "is no longer in the scene" in panel.dialogs.texts()[0]
    assert panel.widget.logic.projectStatus().rounds == []

    panel.ui.annotateNextButton.click()
    (segmentation,) = nodes_of_class(panel.scene, "vtkMRMLSegmentationNode")
    assert editor.segmentationNode() is segmentation and panel.scene.IsNodePresent(editor.mrmlSegmentEditorNode())
    panel.ui.annotateAcceptButton.click()
    assert len(panel.dialogs.texts()) == 1
    assert panel.widget.logic.projectStatus().cases["accepted"] == [
        segmentation.GetName().removesuffix(" segmentation")
    ]


# ----- bad input ------------------------------------------------------------------------------------------------


def test_without_a_project_or_a_case_the_buttons_are_off_and_the_actions_say_why(panel, made_project):
    ui = panel.ui
    assert not any(button.enabled for button in (ui.annotateNextButton, ui.annotateAcceptButton,
                                                 ui.annotateSkipButton, ui.annotateCloseButton))  # fmt: skip
    assert ui.annotateNextButton.toolTip == "Create or open a project first."
    before = state(panel.scene)
    panel.widget.onNextCase()  # what the disabled button would do
    assert panel.dialogs.texts() == [
        "No annotation project is open; create one (createProject) or open one (openProject)."
    ]
    assert state(panel.scene) == before

    open_in_panel(panel, made_project)
    assert ui.annotateNextButton.enabled and not ui.annotateAcceptButton.enabled
    panel.widget.onAcceptCase()
    assert panel.dialogs.texts()[1:] == ["No case is loaded; load one with Next case (nextCase) first."]
    panel.widget.onSkipCase()
    assert len(panel.dialogs.texts()) == 3 and panel.dialogs.texts()[2].startswith("No case is loaded")
    assert state(panel.scene) == before
    assert panel.widget.logic.projectStatus().rounds == []


def test_a_segment_named_after_no_label_is_refused_with_one_message_and_nothing_stored(panel, made_project):
    open_in_panel(panel, made_project)
    panel.ui.annotateNextButton.click()
    (segmentation,) = nodes_of_class(panel.scene, "vtkMRMLSegmentationNode")
    segmentation.GetSegmentation().GetNthSegment(1).SetName("Tumour")
    before = state(panel.scene)

    panel.ui.annotateAcceptButton.click()
    errors = panel.dialogs.texts()
    assert len(errors) == 1 and errors[0].startswith("Segment 'Tumour' of ") and "Nothing was stored." in errors[0]
    assert panel.status == errors[0]
    assert state(panel.scene) == before
    assert panel.widget.logic.projectStatus().cases["accepted"] == []
    assert not (made_project / "labels").exists()
    assert panel.ui.annotateAcceptButton.enabled  # rename the segment and accept again


def test_a_project_in_use_elsewhere_or_no_project_at_all_is_refused_with_one_message(panel, made_project, tmp_path,
                                                                                     images):  # fmt: skip
    from MedSegCNNLib.annotation import AnnotationProject

    before = state(panel.scene)
    held = AnnotationProject.open(made_project, holder="a Python script")
    try:
        panel.typePath("annotateProjectPathLineEdit", made_project)
        panel.ui.annotateOpenButton.click()
    finally:
        held.close()
    errors = panel.dialogs.texts()
    assert len(errors) == 1 and "in use by" in errors[0] and "a Python script" in errors[0], errors
    assert panel.widget.logic.projectFolder() is None and panel.ui.annotateOpenButton.enabled
    assert panel.ui.annotateStatusLabel.text == "No project is open."

    not_a_project = tmp_path / "not-a-project"
    not_a_project.mkdir()
    (not_a_project / "notes.txt").write_text("mine")
    panel.typePath("annotateProjectPathLineEdit", not_a_project)
    panel.ui.annotateOpenButton.click()
    panel.typePath("annotateImagesPathLineEdit", images)
    panel.ui.annotateCreateButton.click()  # a folder that is not empty: refused, nothing of it touched
    errors = panel.dialogs.texts()
    assert len(errors) == 3 and "already exists and is not empty" in errors[2], errors
    assert sorted(path.name for path in not_a_project.iterdir()) == ["notes.txt"]
    assert panel.widget.logic.projectFolder() is None
    assert state(panel.scene) == before
