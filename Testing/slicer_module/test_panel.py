"""The module's panel (MedSegCNN/MedSegCNNModule/widget.py) driven by its widgets as a user clicks, on a real MRML
scene (slicer-core), with the real logic, MedSegCNNLib and background processes (panel_harness.py).

Volumes are loaded from the bundled sample cases (Resources/SampleData/Hippocampus) by Slicer's volumes logic, as
Slicer's Add Data does. Each test checks the nodes that appear in the scene, what the panel showed (status line,
message boxes) and that no exception escaped a slot.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("slicer")
pytest.importorskip("PySide6")

from cli_support import PRED, SAMPLE
from slicer_module.panel_harness import Panel, open_panel
from slicer_module.pythonqt import unwrap

MODEL = "hippocampus-tiny"
LABELS = ["Anterior", "Posterior"]
CASE = "hippocampus_020"  # held out when the bundled model was trained


@pytest.fixture
def panel(scene: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Panel]:
    with open_panel(monkeypatch, scene) as opened:
        yield opened
        assert opened.slotErrors == [], "an exception escaped a slot of the panel"


def state(scene: Any) -> tuple[int, int]:
    """Number of nodes and of subject-hierarchy items: what an error must leave unchanged."""
    import slicer

    return scene.GetNumberOfNodes(), slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(
        scene
    ).GetNumberOfItems()


def load_volume(scene: Any, path: Path, name: str, *, label: bool = False) -> Any:
    """A volume node read from ``path`` by Slicer's volumes logic (a label map volume with ``label``)."""
    import slicer

    logic = next(logic for logic in scene.logics if isinstance(logic, slicer.vtkSlicerVolumesLogic))
    node = logic.AddArchetypeVolume(str(path), name, 1 if label else 0)
    assert node is not None, path
    return node


def segmentation_of(scene: Any, label_node: Any, name: str) -> Any:
    """A segmentation node made from a label map volume, its segments named after the model's labels."""
    import slicer

    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    assert slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(label_node, segmentation)
    for index, label in enumerate(LABELS):
        segmentation.GetSegmentation().GetNthSegment(index).SetName(label)
    return segmentation


def segment_names(segmentation: Any) -> list[str]:
    segments = segmentation.GetSegmentation()
    return [segments.GetNthSegment(i).GetName() for i in range(segments.GetNumberOfSegments())]


def nodes_of_class(scene: Any, class_name: str) -> list[Any]:
    collection = scene.GetNodesByClass(class_name)
    return [collection.GetItemAsObject(i) for i in range(collection.GetNumberOfItems())]


# ----- opening --------------------------------------------------------------------------------------------------


def test_the_panel_opens_with_the_bundled_model_and_says_what_is_missing(panel):
    ui = panel.ui
    assert ui.modelComboBox.itemText(0) == MODEL
    assert ui.modelComboBox.currentText == MODEL
    assert not ui.modelPathLineEdit.visible  # shown for "Model folder..." only
    card = ui.modelCardTextBrowser.toPlainText()
    assert all(label in card for label in LABELS), card
    assert "Licence" in card and "unknown (the card names none; check the terms of the model's source" in card, card
    assert [ui.deviceComboBox.itemText(i) for i in range(ui.deviceComboBox.count)] == ["auto", "cpu", "cuda", "mps"]
    # no volume in the scene: Segment is off and says why; the other buttons are off too
    assert not ui.applyButton.enabled and ui.applyButton.toolTip == "Select the input volume."
    assert not ui.trainButton.enabled and ui.trainButton.toolTip == "Add training pairs, or choose a data folder."
    assert not ui.computeButton.enabled and not ui.exportCsvButton.enabled and not ui.cancelButton.enabled
    parameter_nodes = nodes_of_class(panel.scene, "vtkMRMLScriptedModuleNode")
    assert [node.GetAttribute("ModuleName") for node in parameter_nodes] == ["MedSegCNN"]
    assert panel.dialogs.shown == []


def test_a_loaded_volume_is_offered_and_options_go_into_the_parameter_node(panel):
    volume = load_volume(panel.scene, SAMPLE / "imagesTr" / f"{CASE}.nii.gz", CASE)
    load_volume(panel.scene, SAMPLE / "labelsTr" / f"{CASE}.nii.gz", "reference", label=True)
    ui = panel.ui
    # the first volume is selected (the selector has no "none"); a label map is not an input volume
    assert ui.inputVolumeSelector0.currentNode() is volume
    assert unwrap(ui.inputVolumeSelector0).nodeCount() == 1
    assert ui.applyButton.enabled, ui.applyButton.toolTip
    ui.keepLargestCheckBox.click()
    ui.ttaCheckBox.click()
    panel.chooseItem("backendComboBox", "torch")
    ui.minSizeSpinBox.setValue(12.5)
    parameters = panel.widget.logic.getParameterNode()
    assert (parameters.keepLargest, parameters.tta, parameters.backend, parameters.minSizeMm3) == (
        True, True, "torch", 12.5)  # fmt: skip
    options = panel.widget.predictOptions()
    assert (options.keep_largest, options.tta, options.backend, options.min_size_mm3) == (True, True, "torch", 12.5)
    # and back: the parameter node drives the widgets
    parameters.fillHoles = True
    assert ui.fillHolesCheckBox.checked


# ----- segment --------------------------------------------------------------------------------------------------


def test_segment_a_bundled_case_into_segments_named_after_the_models_labels(panel):
    from MedSegCNNLib.mrml import labels_from_segmentation

    volume = load_volume(panel.scene, SAMPLE / "imagesTr" / f"{CASE}.nii.gz", CASE)
    ui = panel.ui
    panel.choose("inputVolumeSelector0", volume)
    panel.chooseItem("deviceComboBox", "cpu")
    ui.keepLargestCheckBox.click()
    ui.probabilitiesCheckBox.click()
    before = {node.GetID() for node in nodes_of_class(panel.scene, "vtkMRMLNode")}

    ui.applyButton.click()
    assert panel.status == "Segmentation running..."
    assert ui.cancelButton.enabled and not ui.applyButton.enabled and not ui.trainButton.enabled
    status = panel.waitForTask()

    segmentations = nodes_of_class(panel.scene, "vtkMRMLSegmentationNode")
    assert len(segmentations) == 1
    segmentation = segmentations[0]
    assert segment_names(segmentation) == LABELS
    assert status == f'Segmented: 2 segments in "{segmentation.GetName()}" and 2 map volumes.'
    labels = labels_from_segmentation(segmentation, volume)
    assert {int(value) for value in set(labels.array.ravel())} == {0, 1, 2}
    added = [node for node in nodes_of_class(panel.scene, "vtkMRMLNode") if node.GetID() not in before]
    maps = [node.GetName() for node in added if node.IsA("vtkMRMLScalarVolumeNode")]
    assert sorted(maps) == [f"{CASE} probability {label}" for label in LABELS]
    # ready to be evaluated; the buttons are back; nothing was shown
    assert panel.widget.logic.getParameterNode().evalPrediction is segmentation
    assert ui.evalPredictionSelector.currentNode() is segmentation
    assert ui.applyButton.enabled and not ui.cancelButton.enabled
    assert ui.progressBar.value == 0 and ui.progressLabel.text == ""
    assert panel.dialogs.shown == []
    assert "Predicting with" in ui.logTextEdit.toPlainText()  # the background process's log


def test_an_output_segmentation_with_segments_is_refused_with_one_message_and_the_scene_unchanged(panel):
    volume = load_volume(panel.scene, SAMPLE / "imagesTr" / f"{CASE}.nii.gz", CASE)
    edited = panel.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "my edits")
    edited.GetSegmentation().AddEmptySegment("mine", "mine")
    panel.choose("inputVolumeSelector0", volume)
    panel.choose("outputSegmentationSelector", edited)
    before = state(panel.scene)

    panel.ui.applyButton.click()
    errors = panel.dialogs.texts("error")
    assert len(errors) == 1 and "already has 1 segment" in errors[0], panel.dialogs.shown
    assert panel.status == errors[0]
    assert state(panel.scene) == before
    assert segment_names(edited) == ["mine"]
    assert panel.widget._task is None and panel.ui.applyButton.enabled

    # ticking "Replace existing segments" is what would let it through
    panel.ui.replaceSegmentsCheckBox.click()
    assert panel.widget.logic.getParameterNode().replaceSegments


def test_without_an_input_volume_segment_cannot_be_clicked_and_nothing_happens(panel):
    before = state(panel.scene)
    panel.ui.applyButton.click()  # disabled: Qt ignores the click
    assert panel.dialogs.shown == [] and panel.widget._task is None
    assert state(panel.scene) == before
    assert panel.ui.applyButton.toolTip == "Select the input volume."
    # a model folder that is not a model: the card says why, Segment stays off
    panel.chooseItem("modelComboBox", "Model folder...")
    assert panel.ui.modelPathLineEdit.visible
    panel.typePath("modelPathLineEdit", SAMPLE)
    assert panel.widget.logic.getParameterNode().model == str(SAMPLE)
    assert not panel.ui.applyButton.enabled
    assert panel.ui.applyButton.toolTip == "Choose a usable model (see the model card)."
    card = panel.ui.modelCardTextBrowser.toPlainText()
    assert card == f"{SAMPLE} is not a MedSegCNN model folder: it holds no model.json."
    assert state(panel.scene) == before and panel.dialogs.shown == []


# ----- cancel ---------------------------------------------------------------------------------------------------


def test_cancel_a_segmentation_adds_nothing_to_the_scene(panel):
    volume = load_volume(panel.scene, SAMPLE / "imagesTr" / f"{CASE}.nii.gz", CASE)
    panel.choose("inputVolumeSelector0", volume)
    panel.ui.ttaCheckBox.click()
    before = state(panel.scene)

    panel.ui.applyButton.click()
    assert panel.widget._task is not None and panel.ui.cancelButton.enabled
    panel.ui.cancelButton.click()
    assert panel.widget._task is None
    assert panel.status == "Segmentation cancelled; nothing was added to the scene."
    assert state(panel.scene) == before
    assert nodes_of_class(panel.scene, "vtkMRMLSegmentationNode") == []
    assert panel.dialogs.shown == []
    assert panel.ui.applyButton.enabled and not panel.ui.cancelButton.enabled
    assert not panel.widget._pollTimer.isActive()


# ----- train ----------------------------------------------------------------------------------------------------


def tiny_case(tmp_path: Path, case: str) -> tuple[Path, Path]:
    """A 20-voxel cube of a bundled case around its hippocampus, image and labels (fast to train on)."""
    import numpy as np
    import SimpleITK as sitk

    image = sitk.ReadImage(str(SAMPLE / "imagesTr" / f"{case}.nii.gz"))
    labels = sitk.ReadImage(str(SAMPLE / "labelsTr" / f"{case}.nii.gz"))
    z, y, x = (int(axis.mean()) for axis in np.nonzero(sitk.GetArrayFromImage(labels)))
    start = [max(0, x - 10), max(0, y - 10), max(0, z - 10)]
    paths = tmp_path / f"{case}.nii.gz", tmp_path / f"{case}_labels.nii.gz"
    for source, path in zip((image, labels), paths, strict=True):
        sitk.WriteImage(sitk.RegionOfInterest(source, [20, 20, 20], start), str(path))
    return paths


def test_train_on_pairs_in_the_scene_plots_the_curves_and_selects_the_new_model(panel, tmp_path):
    ui = panel.ui
    ui.trainCollapsibleButton.collapsed = False
    for case in ("hippocampus_007", "hippocampus_020", "hippocampus_006"):
        image_path, labels_path = tiny_case(tmp_path, case)
        volume = load_volume(panel.scene, image_path, case)
        segmentation = segmentation_of(panel.scene, load_volume(panel.scene, labels_path, f"{case} labels", label=True),
                                       f"{case} segmentation")  # fmt: skip
        panel.choose("inputVolumeSelector0", volume)
        panel.choose("trainSegmentationSelector", segmentation)
        assert ui.addPairButton.enabled
        ui.addPairButton.click()
    assert ui.trainPairsListWidget.count == 3
    assert ui.trainPairsListWidget.item(0).text() == "hippocampus_007  \u2192  hippocampus_007 segmentation"
    ui.addPairButton.click()  # the same pair again
    assert ui.trainPairsListWidget.count == 3 and panel.status == "This training pair is in the list already."
    assert not ui.trainButton.enabled and ui.trainButton.toolTip == "Choose an output folder for the training run."

    panel.chooseItem("trainDimsComboBox", "2D")
    panel.chooseItem("trainDeviceComboBox", "cpu")
    ui.trainEpochsSpinBox.setValue(1)
    run = tmp_path / "run"
    panel.typePath("trainOutputPathLineEdit", run)
    config = panel.widget.trainingConfig()
    assert (config.spatial_dims, config.epochs, config.device, config.init_from) == (2, 1, "cpu", None)
    assert ui.trainButton.enabled, ui.trainButton.toolTip

    ui.trainButton.click()
    assert panel.status == "Training running..." and ui.cancelButton.enabled
    status = panel.waitForTask()

    model = Path(panel.widget.logic.getParameterNode().model)
    assert status == f"Trained model saved in {model}."
    assert model.parent == run and (model / "model.json").is_file()
    card = json.loads((model / "model.json").read_text())
    assert [card["labels"][key]["name"] for key in ("1", "2")] == LABELS
    # the new model is selected, as a model folder, and described
    assert ui.modelComboBox.currentText == "Model folder..." and ui.modelPathLineEdit.currentPath == str(model)
    assert ui.modelPathLineEdit.visible and ui.applyButton.enabled
    # the live curves: a plot view node shown in the panel, over the loss table filled from the run's steps
    view = ui.trainPlotWidget.mrmlPlotViewNode()
    assert view is not None and panel.scene.IsNodePresent(view)
    loss = next(node for node in nodes_of_class(panel.scene, "vtkMRMLTableNode") if node.GetName().endswith("loss"))
    assert loss.GetNumberOfRows() > 0
    assert panel.dialogs.shown == []


def test_train_refuses_an_output_folder_that_is_not_empty_with_one_message(panel, tmp_path):
    volume = load_volume(panel.scene, SAMPLE / "imagesTr" / f"{CASE}.nii.gz", CASE)
    labels = load_volume(panel.scene, SAMPLE / "labelsTr" / f"{CASE}.nii.gz", "labels", label=True)
    segmentation = segmentation_of(panel.scene, labels, "segmentation")
    panel.choose("inputVolumeSelector0", volume)
    panel.choose("trainSegmentationSelector", segmentation)
    panel.ui.addPairButton.click()
    used = tmp_path / "used"
    used.mkdir()
    (used / "mine.txt").write_text("keep me")
    panel.typePath("trainOutputPathLineEdit", used)
    before = state(panel.scene)

    panel.ui.trainButton.click()
    errors = panel.dialogs.texts("error")
    assert len(errors) == 1 and "is not empty" in errors[0], panel.dialogs.shown
    assert panel.widget._task is None and panel.ui.trainButton.enabled
    assert state(panel.scene) == before
    assert sorted(path.name for path in used.iterdir()) == ["mine.txt"]


# ----- evaluate -------------------------------------------------------------------------------------------------


def test_evaluate_into_a_table_and_export_it_as_csv(panel, tmp_path):
    volume = load_volume(panel.scene, SAMPLE / "imagesTr" / f"{CASE}.nii.gz", CASE)
    prediction = segmentation_of(panel.scene, load_volume(panel.scene, PRED / f"{CASE}.nii.gz", "prediction",
                                                          label=True), "prediction")  # fmt: skip
    prediction.SetReferenceImageGeometryParameterFromVolumeNode(volume)
    prediction.SetNodeReferenceID(prediction.GetReferenceImageGeometryReferenceRole(), volume.GetID())
    reference = load_volume(panel.scene, SAMPLE / "labelsTr" / f"{CASE}.nii.gz", "reference", label=True)
    ui = panel.ui
    assert not ui.computeButton.enabled
    panel.choose("evalPredictionSelector", prediction)
    panel.choose("evalReferenceSelector", reference)
    assert ui.computeButton.enabled and not ui.exportCsvButton.enabled
    tables_before = nodes_of_class(panel.scene, "vtkMRMLTableNode")

    ui.computeButton.click()
    tables = [node for node in nodes_of_class(panel.scene, "vtkMRMLTableNode") if node not in tables_before]
    assert len(tables) == 1
    table = tables[0]
    assert table.GetNumberOfRows() == 2
    assert ui.evalTableSelector.currentNode() is table and ui.evalTableView.mrmlTableNode() is table
    assert unwrap(ui.evalTableView).model().rowCount() == 2
    assert panel.status.startswith("Evaluated 2 labels (mean Dice 0.") and panel.status.endswith(
        f'"{table.GetName()}".'
    )
    assert ui.exportCsvButton.enabled

    # Compute again: the same table node is filled again, not a new one
    ui.computeButton.click()
    assert [node for node in nodes_of_class(panel.scene, "vtkMRMLTableNode") if node not in tables_before] == [table]

    csv_path = tmp_path / "metrics.csv"
    panel.dialogs.saveFiles.append(str(csv_path))
    ui.exportCsvButton.click()
    assert panel.status == f"Saved {csv_path}."
    with csv_path.open(newline="") as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == 2 and {"dice"} <= set(rows[0])
    assert [kind for kind, _ in panel.dialogs.shown] == ["save dialog"]

    # the save dialog cancelled: nothing written, nothing said
    csv_path.unlink()
    ui.exportCsvButton.click()
    assert not csv_path.exists() and [kind for kind, _ in panel.dialogs.shown] == ["save dialog", "save dialog"]


def test_evaluating_a_segmentation_without_a_reference_volume_shows_one_message(panel):
    prediction = panel.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "no geometry")
    reference = load_volume(panel.scene, SAMPLE / "labelsTr" / f"{CASE}.nii.gz", "reference", label=True)
    panel.choose("evalPredictionSelector", prediction)
    panel.choose("evalReferenceSelector", reference)
    before = state(panel.scene)
    panel.ui.computeButton.click()
    errors = panel.dialogs.texts("error")
    assert errors == ["'no geometry' has no reference volume; choose the volume to evaluate on."]
    assert state(panel.scene) == before and not panel.ui.exportCsvButton.enabled


# ----- import an nnU-Net model ----------------------------------------------------------------------------------


def test_importing_a_folder_that_is_not_nnunet_results_shows_one_message_and_changes_nothing(panel, tmp_path):
    from MedSegCNNLib.registry import user_models_folder

    folder = tmp_path / "not-nnunet"
    folder.mkdir()
    (folder / "notes.txt").write_text("not a model")
    before = state(panel.scene)
    models_before = sorted(user_models_folder().glob("*")) if user_models_folder().is_dir() else []
    panel.dialogs.directories.append(str(folder))

    panel.chooseItem("modelComboBox", "Import nnU-Net model...")
    assert [kind for kind, _ in panel.dialogs.shown] == ["directory dialog", "error"]
    assert panel.dialogs.texts("error") == [
        f"{folder} is not an nnU-Net results folder: it has no plans.json (trained configurations inside: none); "
        "give the <Trainer>__<Plans>__<configuration> folder."
    ]
    assert panel.status == panel.dialogs.texts("error")[0]
    # the selection is back on the model used before, and nothing was imported
    assert panel.widget.logic.getParameterNode().model == MODEL
    assert panel.ui.modelComboBox.currentText == MODEL
    assert (sorted(user_models_folder().glob("*")) if user_models_folder().is_dir() else []) == models_before
    assert state(panel.scene) == before


def test_cancelling_the_nnunet_folder_dialog_keeps_the_model(panel):
    panel.chooseItem("modelComboBox", "Import nnU-Net model...")
    assert [kind for kind, _ in panel.dialogs.shown] == ["directory dialog"]
    assert panel.ui.modelComboBox.currentText == MODEL
    assert panel.widget.logic.getParameterNode().model == MODEL


def add_tiny_pair(panel: Panel, tmp_path: Path, case: str) -> None:
    """Loads a tiny case and its segmentation and adds them to the training pairs with the panel's buttons."""
    image_path, labels_path = tiny_case(tmp_path, case)
    volume = load_volume(panel.scene, image_path, case)
    labels = load_volume(panel.scene, labels_path, f"{case} labels", label=True)
    panel.choose("inputVolumeSelector0", volume)
    panel.choose("trainSegmentationSelector", segmentation_of(panel.scene, labels, f"{case} segmentation"))
    panel.ui.addPairButton.click()


def test_cancel_a_training_makes_no_model_and_adds_only_the_live_curves(panel, tmp_path):
    """The live plot's nodes (two tables, their series, a chart and a plot view) are made when a training starts
    and stay (emptied and reused by the next run); nothing else is added."""
    from MedSegCNNLib.mrml.training_curves import DICE_TABLE, LOSS_TABLE

    add_tiny_pair(panel, tmp_path, "hippocampus_007")
    run = tmp_path / "run"
    panel.typePath("trainOutputPathLineEdit", run)
    before = {node.GetID() for node in nodes_of_class(panel.scene, "vtkMRMLNode")}

    panel.ui.trainButton.click()
    assert panel.widget._task is not None
    panel.ui.cancelButton.click()
    assert panel.widget._task is None
    assert panel.status == "Training cancelled; nothing was added to the scene."
    added = sorted(
        node.GetClassName() + ": " + node.GetName()
        for node in nodes_of_class(panel.scene, "vtkMRMLNode")
        if node.GetID() not in before
    )
    assert added == [
        "vtkMRMLPlotChartNode: MedSegCNN training",
        "vtkMRMLPlotSeriesNode: MedSegCNN loss",
        "vtkMRMLPlotSeriesNode: MedSegCNN mean Dice",
        "vtkMRMLPlotViewNode: MedSegCNN training view",
        *sorted(f"vtkMRMLTableNode: {name}" for name in (LOSS_TABLE, DICE_TABLE)),
    ]
    assert not (run / "model").exists()
    assert panel.widget.logic.getParameterNode().model == MODEL  # the selected model is kept
    assert panel.dialogs.shown == [] and panel.ui.trainButton.enabled

    # a second run reuses the curves
    after_first = state(panel.scene)
    panel.ui.trainButton.click()
    panel.ui.cancelButton.click()
    assert state(panel.scene) == after_first


def test_closing_the_scene_cancels_the_running_segmentation_and_forgets_the_training_pairs(panel, tmp_path):
    add_tiny_pair(panel, tmp_path, "hippocampus_007")
    assert panel.ui.trainPairsListWidget.count == 1
    panel.ui.applyButton.click()
    assert panel.widget._task is not None

    panel.scene.Clear(0)  # File > Close Scene
    assert panel.widget._task is None
    assert panel.status == "Segmentation cancelled; nothing was added to the scene."
    assert nodes_of_class(panel.scene, "vtkMRMLSegmentationNode") == []
    assert panel.ui.trainPairsListWidget.count == 0 and not panel.ui.removePairButton.enabled
    # the panel is bound to the new scene's parameter node
    parameters = nodes_of_class(panel.scene, "vtkMRMLScriptedModuleNode")
    assert [node.GetAttribute("ModuleName") for node in parameters] == ["MedSegCNN"]
    panel.ui.ttaCheckBox.click()
    assert panel.widget.logic.getParameterNode().tta
    assert panel.dialogs.shown == []


# ----- the harness's own rules ----------------------------------------------------------------------------------


def test_qt_properties_are_attributes_as_in_pythonqt(panel):
    combo = panel.ui.modelComboBox
    assert combo.count == 3 and isinstance(combo.count, int)  # the property, not the method
    with pytest.raises(AttributeError, match="count is read-only"):
        combo.count = 5
    combo.somethingOfMine = 1  # not a Qt property: a Python attribute of the wrapper, as in PythonQt
    assert combo.somethingOfMine == 1 and unwrap(combo).property("somethingOfMine") is None
    with pytest.raises(AttributeError):
        _ = panel.ui.applyButton.noSuchProperty


def test_the_parameter_node_refuses_values_its_annotations_do_not_allow(panel):
    parameters = panel.widget.logic.getParameterNode()
    node = parameters.parameterNode
    with pytest.raises(ValueError, match="must be in one of the following"):
        parameters.device = "tpu"
    with pytest.raises(TypeError):
        parameters.inputVolume0 = panel.scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    with pytest.raises(ValueError, match="within range"):
        parameters.minSizeMm3 = -1.0
    assert (node.GetParameter("device"), node.GetParameter("minSizeMm3")) == ("auto", "0.0")
    assert panel.ui.deviceComboBox.currentText == "auto"


def test_a_removed_volume_leaves_the_selector_and_the_parameter(panel):
    volume = load_volume(panel.scene, SAMPLE / "imagesTr" / f"{CASE}.nii.gz", CASE)
    assert panel.widget.logic.getParameterNode().inputVolume0 is volume and panel.ui.applyButton.enabled
    panel.scene.RemoveNode(volume)
    assert panel.ui.inputVolumeSelector0.currentNode() is None
    assert panel.widget.logic.getParameterNode().inputVolume0 is None
    assert not panel.ui.applyButton.enabled and panel.ui.applyButton.toolTip == "Select the input volume."


def test_a_closed_panel_leaves_the_stand_in_classes_usable(scene, monkeypatch):
    """The next test's panel (and the .ui loader checks) read the stand-ins' meta-objects (see
    pythonqt.meta_object)."""
    import gc

    from slicer_module.qt_standins import STANDINS

    with open_panel(monkeypatch, scene) as opened:
        load_volume(scene, SAMPLE / "imagesTr" / f"{CASE}.nii.gz", CASE)
        assert opened.ui.modelPathLineEdit.currentPath == "" and opened.ui.inputVolumeSelector0.currentNode()
        opened.ui.evalTableView.setMRMLTableNode(None)
    del opened
    gc.collect()
    for standin in STANDINS.values():
        assert standin.staticMetaObject.propertyCount() > 0


def test_fine_tune_options_and_removing_training_pairs(panel, tmp_path):
    ui = panel.ui
    ui.trainCollapsibleButton.collapsed = False
    for case in ("hippocampus_007", "hippocampus_020"):
        add_tiny_pair(panel, tmp_path, case)
    assert ui.trainPairsListWidget.count == 2 and ui.removePairButton.enabled
    ui.removePairButton.click()  # no row selected: the last pair goes
    assert [ui.trainPairsListWidget.item(i).text() for i in range(ui.trainPairsListWidget.count)] == [
        "hippocampus_007  \u2192  hippocampus_007 segmentation"
    ]
    assert not ui.trainFreezeEncoderCheckBox.enabled  # only with fine-tuning
    ui.trainFineTuneCheckBox.click()
    assert ui.trainFreezeEncoderCheckBox.enabled
    ui.trainFreezeEncoderCheckBox.click()
    ui.trainTimeBudgetSpinBox.setValue(2.5)
    config = panel.widget.trainingConfig()
    assert (config.init_from, config.freeze_encoder, config.time_budget_minutes, config.epochs) == (
        MODEL, True, 2.5, None)  # fmt: skip
    ui.trainFineTuneCheckBox.click()  # off again: the frozen encoder goes with it
    config = panel.widget.trainingConfig()
    assert (config.init_from, config.freeze_encoder) == (None, False) and not ui.trainFreezeEncoderCheckBox.enabled
    ui.removePairButton.click()
    assert ui.trainPairsListWidget.count == 0 and not ui.removePairButton.enabled and not ui.trainButton.enabled
    assert panel.dialogs.shown == []
