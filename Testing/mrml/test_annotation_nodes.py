"""The annotation loop in a real ``slicer-core`` scene: cases in as nodes, edited segmentations out as accepted
revisions (``MedSegCNNLib.mrml.annotation``), and the module logic's console API over it.

Projects are made from the bundled hippocampus cases, with the bundled model as version 0 where a prediction is
needed. Learning is off (or has too few cases) so that no background learner runs.
"""

from __future__ import annotations

import importlib.util
import logging
import shutil
import sys
import types
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cli_support import SAMPLE

from MedSegCNNLib.annotation import AnnotationProject
from MedSegCNNLib.errors import InputError
from MedSegCNNLib.image.core import LabelInfo
from MedSegCNNLib.image.io import read_image
from MedSegCNNLib.image.seg_nrrd import default_label_info
from MedSegCNNLib.mrml import labels_from_segmentation, segmentation_from_labels, volume_node_from_image
from MedSegCNNLib.mrml.annotation import AnnotationSession

pytest.importorskip("slicer")

IMAGES = SAMPLE / "imagesTr"
MODULE_PACKAGE = Path(__file__).resolve().parents[2] / "MedSegCNN" / "MedSegCNNModule"
NAMES = ["Anterior", "Posterior"]


@pytest.fixture
def session(scene, tmp_path) -> Any:
    """A project of the 12 sample cases with the bundled model as version 0, learning off, driven from ``scene``."""
    opened = AnnotationSession.create(scene, tmp_path / "project", IMAGES, model="hippocampus-tiny", learning=False)
    yield opened
    opened.close()


@pytest.fixture
def logic(scene, monkeypatch) -> Any:
    """The module's ``MedSegCNNLogic`` on ``scene``: logic.py loaded with stand-ins for the parts of Slicer's
    application shell that slicer-core lacks (``slicer.i18n``, ``ScriptedLoadableModuleLogic``, the parameter node
    wrapper); the scene, MRML and the library are real."""
    import slicer

    monkeypatch.setattr(slicer, "mrmlScene", scene, raising=False)
    i18n = types.ModuleType("slicer.i18n")
    i18n.tr = lambda text: text
    scripted = types.ModuleType("slicer.ScriptedLoadableModule")
    scripted.ScriptedLoadableModuleLogic = type("ScriptedLoadableModuleLogic", (), {})
    package = types.ModuleType("MedSegCNNModule")
    package.__path__ = [str(MODULE_PACKAGE)]
    parameters = types.ModuleType("MedSegCNNModule.parameters")
    parameters.DEFAULT_MODEL = "hippocampus-tiny"
    parameters.MedSegCNNParameterNode = object
    for name, module in [
        ("slicer.i18n", i18n),
        ("slicer.ScriptedLoadableModule", scripted),
        ("MedSegCNNModule", package),
        ("MedSegCNNModule.parameters", parameters),
    ]:
        monkeypatch.setitem(sys.modules, name, module)
    spec = importlib.util.spec_from_file_location("MedSegCNNModule.logic", MODULE_PACKAGE / "logic.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    instance = module.MedSegCNNLogic()
    yield instance
    instance.closeProject()


def segment_names(segmentation_node: Any) -> list[str]:
    segmentation = segmentation_node.GetSegmentation()
    return [segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())]


def layer_voxels(segmentation_node: Any) -> np.ndarray:
    """The shared binary-labelmap layer's voxels as a writable (z, y, x) view (as the Segment Editor paints)."""
    from vtk.util import numpy_support

    layer = segmentation_node.GetSegmentation().GetNthSegment(0).GetRepresentation("Binary labelmap")
    x0, x1, y0, y1, z0, z1 = layer.GetExtent()
    assert (x0, y0, z0) == (0, 0, 0)
    return numpy_support.vtk_to_numpy(layer.GetPointData().GetScalars()).reshape(z1 + 1, y1 + 1, x1 + 1)


def paint(segmentation_node: Any, edit) -> None:
    """Change the segmentation's voxels in place with ``edit(array)`` and tell VTK."""
    edit(layer_voxels(segmentation_node))
    segmentation_node.GetSegmentation().GetNthSegment(0).GetRepresentation("Binary labelmap").Modified()


def reference_volume(segmentation_node: Any) -> Any:
    import slicer

    return segmentation_node.GetNodeReference(slicer.vtkMRMLSegmentationNode.GetReferenceImageGeometryReferenceRole())


def node_names(scene: Any, node_class: str) -> list[str]:
    return [scene.GetNthNodeByClass(i, node_class).GetName() for i in range(scene.GetNumberOfNodesByClass(node_class))]


# ----- loading a case ---------------------------------------------------------------------------------------


def test_next_case_loads_the_volume_and_its_prediction_voxel_exact(session, scene, build):
    before = build.state()
    nodes = session.next_case()
    case = nodes.case
    assert nodes.model_version == 0 and nodes.prediction is not None and nodes.prediction.is_file()

    (volume,) = nodes.volume_nodes
    assert volume.GetName() == case and volume.IsA("vtkMRMLScalarVolumeNode")
    segmentation = nodes.segmentation_node
    assert segmentation.GetName() == f"{case} segmentation"
    assert scene.GetNumberOfNodes() - before[0] == 2 + 2  # the two nodes and their display nodes
    assert reference_volume(segmentation) is volume
    assert segment_names(segmentation) == NAMES
    colours = [segmentation.GetSegmentation().GetNthSegment(i).GetColor() for i in range(2)]
    for colour, value in zip(colours, (1, 2), strict=True):
        assert colour == pytest.approx(default_label_info(value).color)

    image = read_image(IMAGES / f"{case}.nii.gz")
    prediction = read_image(nodes.prediction)
    np.testing.assert_array_equal(layer_voxels(segmentation), prediction.array)  # on the volume's IJK grid
    from MedSegCNNLib.mrml import image_from_volume_node

    loaded = image_from_volume_node(volume)
    assert loaded.same_grid(image)
    np.testing.assert_array_equal(loaded.array, image.array)
    read_back = labels_from_segmentation(segmentation, volume)
    assert read_back.same_grid(prediction) and {1, 2} <= set(np.unique(read_back.array).tolist())
    np.testing.assert_array_equal(read_back.array, prediction.array)


def test_before_the_first_model_each_label_has_an_empty_segment_to_paint(scene, tmp_path):
    labels = tmp_path / "labels"
    labels.mkdir()
    labelled = ["hippocampus_004", "hippocampus_008"]
    for case in labelled:
        shutil.copy(SAMPLE / "labelsTr" / f"{case}.nii.gz", labels)
    shutil.copy(SAMPLE / "dataset.json", labels)  # the label names
    opened = AnnotationSession.create(scene, tmp_path / "project", IMAGES, labels=labels, learning=False)
    try:
        assert opened.labels == {0: "background", 1: "Anterior", 2: "Posterior"}
        assert opened.status().cases["accepted"] == labelled
        nodes = opened.next_case()
        assert nodes.case not in labelled
        assert nodes.prediction is None and nodes.model_version is None
        assert [node.GetName() for node in nodes.volume_nodes] == [nodes.case]
        assert segment_names(nodes.segmentation_node) == NAMES
        assert not layer_voxels(nodes.segmentation_node).any()
        assert reference_volume(nodes.segmentation_node) is nodes.volume_nodes[0]
    finally:
        opened.close()


def test_a_case_of_several_channel_files_gives_one_volume_per_channel(scene, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for case in ("hippocampus_006", "hippocampus_007"):
        for channel in ("0000", "0001"):
            shutil.copy(IMAGES / f"{case}.nii.gz", images / f"{case}_{channel}.nii.gz")
    opened = AnnotationSession.create(scene, tmp_path / "project", images, label_names=NAMES, learning=False)
    try:
        nodes = opened.next_case(case="hippocampus_007")
        names = [node.GetName() for node in nodes.volume_nodes]
        assert names == ["hippocampus_007 channel_0", "hippocampus_007 channel_1"]
        assert reference_volume(nodes.segmentation_node) is nodes.volume_nodes[0]
        assert nodes.segmentation_node.GetName() == "hippocampus_007 segmentation"
    finally:
        opened.close()


# ----- accepting, skipping, and what stays in the scene ----------------------------------------------------


def test_accept_stores_the_edited_voxels_and_logs_the_round(session, scene, build):
    nodes = session.next_case()
    predicted = read_image(nodes.prediction).array
    edited = predicted.copy()
    edited[predicted == 2] = 0  # erase Posterior...
    edited[0:2, 0:3, 0:4] = 1  # ...and paint a block of Anterior
    changed = int(np.count_nonzero(edited != predicted))
    assert changed > 0
    paint(nodes.segmentation_node, lambda voxels: np.copyto(voxels, edited))
    before = build.state()

    result = session.accept()
    assert build.state() == before  # accepting changes nothing in the scene
    assert result.case == nodes.case and result.revision == 1 and result.learning == "off" and not result.empty
    stored = read_image(result.file)
    assert stored.same_grid(read_image(IMAGES / f"{nodes.case}.nii.gz"))
    np.testing.assert_array_equal(stored.array, edited)
    assert result.round.voxels_changed == changed and result.round.model_version == 0

    status = session.status()
    assert status.cases["accepted"] == [nodes.case]
    assert [(entry["case"], entry["voxels_changed"]) for entry in status.rounds] == [(nodes.case, changed)]

    second = session.accept()  # accepting again keeps the first revision
    assert second.revision == 2 and result.file.is_file() and second.file != result.file


def test_next_case_removes_what_is_stored_and_keeps_unaccepted_edits(session, scene, caplog):
    first = session.next_case(case="hippocampus_004")
    second = session.next_case(case="hippocampus_006")  # the first was not changed: its prediction is stored
    assert not any(scene.IsNodePresent(node) for node in first.nodes)

    paint(second.segmentation_node, lambda voxels: voxels.__setitem__((slice(0, 2), 0, 0), 1))
    with caplog.at_level(logging.WARNING):
        third = session.next_case(case="hippocampus_007")  # the edit was not accepted: it stays
    assert all(scene.IsNodePresent(node) for node in second.nodes)
    assert f"'{second.case} segmentation'" in caplog.text
    paint(third.segmentation_node, lambda voxels: voxels.__setitem__((0, 0, 0), 2))

    again = session.next_case(case=second.case)  # an edited case once more: its nodes, not a second copy
    assert again is second and session.current is second
    assert node_names(scene, "vtkMRMLSegmentationNode") == [f"{second.case} segmentation", f"{third.case} segmentation"]
    result = session.accept()
    assert result.case == second.case
    assert read_image(result.file).array[0:2, 0, 0].tolist() == [1, 1]

    assert session.next_case(case=third.case) is third  # the accepted one goes, the edited one is current
    assert not any(scene.IsNodePresent(node) for node in second.nodes)
    assert session.skip() == third.case  # skipping gives up the edit
    fourth = session.next_case()
    assert not any(scene.IsNodePresent(node) for node in third.nodes)
    assert node_names(scene, "vtkMRMLSegmentationNode") == [f"{fourth.case} segmentation"]
    status = session.status()
    assert status.cases["accepted"] == [second.case] and status.cases["skipped"] == [third.case]


def test_a_kept_case_is_accepted_by_its_own_segmentation(session, scene):
    kept = session.next_case(case="hippocampus_006")
    paint(kept.segmentation_node, lambda voxels: voxels.__setitem__((0, 0, slice(0, 3)), 2))
    current = session.next_case(case="hippocampus_007")
    result = session.accept(kept.segmentation_node)  # not the current case: the one it was made on
    assert result.case == "hippocampus_006" and session.current is current
    assert read_image(result.file).array[0, 0, 0:3].tolist() == [2, 2, 2]


# ----- bad input ------------------------------------------------------------------------------------------------


def test_a_segment_named_after_no_label_is_refused_and_nothing_changes(session, build):
    nodes = session.next_case()
    nodes.segmentation_node.GetSegmentation().GetNthSegment(1).SetName("Tumour")
    before = build.state()
    with pytest.raises(InputError, match=r"Segment 'Tumour' .* no label .*1 'Anterior', 2 'Posterior'"):
        session.accept()
    assert build.state() == before
    assert session.status().cases["accepted"] == [] and not (session.project.folder / "labels").exists()


def test_a_segmentation_of_another_volume_or_grid_is_refused(session, scene, build):
    nodes = session.next_case(case="hippocampus_006")
    other_image = read_image(IMAGES / "hippocampus_007.nii.gz")
    other_label = read_image(SAMPLE / "labelsTr" / "hippocampus_007.nii.gz").with_labels(
        [LabelInfo(value, name) for value, name in enumerate(NAMES, start=1)]
    )
    other = segmentation_from_labels(scene, other_label, volume_node_from_image(scene, other_image, "hippocampus_007"))
    coarse_volume = volume_node_from_image(scene, replace(other_image, spacing=(2.0, 2.0, 2.0)), "coarse")
    coarse = segmentation_from_labels(scene, replace(other_label, spacing=(2.0, 2.0, 2.0)), coarse_volume)
    coarse.SetNodeReferenceID(coarse.GetReferenceImageGeometryReferenceRole(), nodes.reference_volume.GetID())
    before = build.state()

    with pytest.raises(InputError, match=r"made on volume 'hippocampus_007', not on case hippocampus_006's volume"):
        session.accept(other)
    with pytest.raises(InputError, match=r"on another voxel grid \(spacing 2, 2, 2 mm\) than case hippocampus_006's"):
        session.accept(coarse)  # claims the case's volume, but its voxels are on another grid
    assert build.state() == before
    assert session.status().cases["accepted"] == []


def test_a_case_that_cannot_be_loaded_leaves_the_scene_and_the_current_case_as_they_were(session, scene, build):
    from MedSegCNNLib.annotation import NextCase
    from MedSegCNNLib.mrml.annotation import load_case

    current = session.next_case(case="hippocampus_006")
    before = build.state()
    with pytest.raises(InputError):
        session.next_case(case="no_such_case")
    other_grid = SAMPLE / "labelsTr" / "hippocampus_007.nii.gz"
    wrong = NextCase("hippocampus_006", (IMAGES / "hippocampus_006.nii.gz",), other_grid, 0, 0.0, "random")
    with pytest.raises(InputError, match=r"not on the grid of case hippocampus_006's image"):
        load_case(scene, wrong, session.labels)
    assert build.state() == before
    assert session.current is current and all(scene.IsNodePresent(node) for node in current.nodes)


def test_a_case_whose_nodes_were_removed_is_not_accepted(session, scene):
    from MedSegCNNLib.mrml.scene_cleanup import remove_added_node

    nodes = session.next_case(case="hippocampus_006")
    remove_added_node(scene, nodes.segmentation_node)
    with pytest.raises(InputError, match=r"'hippocampus_006 segmentation' of case hippocampus_006 is no longer in"):
        session.accept()
    assert session.status().cases["accepted"] == []


def test_an_empty_segmentation_is_accepted(session):
    nodes = session.next_case()
    paint(nodes.segmentation_node, lambda voxels: voxels.fill(0))
    result = session.accept()
    assert result.empty and not read_image(result.file).array.any()


def test_a_second_driver_is_refused_naming_3d_slicer(session):
    with pytest.raises(InputError, match=r"in use by .*3D Slicer"):
        AnnotationProject.open(session.project.folder)


# ----- what the panel shows ---------------------------------------------------------------------------------


def test_the_round_dice_curve_has_a_point_per_scored_round_and_is_remade_when_its_nodes_go(scene):
    from MedSegCNNLib.mrml.annotation_curves import RoundDiceCurve

    curve = RoundDiceCurve(scene)
    rounds = [{"round": 1, "mean_dice": None}, {"round": 2, "mean_dice": 0.5}, {"round": 3, "mean_dice": 0.75}]
    view = curve.show(rounds)
    assert curve.points() == [(2, 0.5), (3, 0.75)]  # a round before the first model has no Dice
    chart = scene.GetNodeByID(view.GetPlotChartNodeID())
    series = scene.GetNodeByID(chart.GetPlotSeriesNodeID())
    assert (series.GetXColumnName(), series.GetYColumnName()) == ("round", "mean Dice")
    assert series.GetTableNodeID() == curve.table.GetID()
    modified = curve.table.GetMTime()
    assert curve.show(rounds) is view and curve.table.GetMTime() == modified  # the same points: not rewritten
    nodes = scene.GetNumberOfNodes()
    scene.RemoveNode(curve.table)
    remade = curve.show([*rounds, {"round": 4, "mean_dice": 0.8}])
    assert remade is not view and curve.points() == [(2, 0.5), (3, 0.75), (4, 0.8)]
    assert scene.GetNumberOfNodes() == nodes - 1 + 4  # new table, chart, series and view


def test_the_project_summary_counts_cases_and_gives_the_last_rounds_dice(session):
    from MedSegCNNLib.mrml.annotation import project_summary

    summary = project_summary(session.status())
    assert (summary.newest_version, summary.accepted, summary.total, summary.rounds) == (0, 0, 12, 0)
    assert summary.last_dice is None and summary.learning == "off"
    nodes = session.next_case(case="hippocampus_006")
    paint(nodes.segmentation_node, lambda voxels: voxels.__setitem__((slice(0, 3), slice(0, 3), slice(0, 3)), 2))
    result = session.accept()
    summary = project_summary(session.status())
    assert (summary.accepted, summary.rounds) == (1, 1)
    assert summary.last_dice == pytest.approx(result.round.mean_dice) and 0 < summary.last_dice < 1


# ----- the console API --------------------------------------------------------------------------------------


def test_the_console_api_runs_the_loop(logic, scene, tmp_path, build):
    before = build.state()
    with pytest.raises(InputError, match="No annotation project is open"):
        logic.nextCase()
    with pytest.raises(InputError, match="No annotation project is open"):
        logic.acceptCase()
    assert build.state() == before

    with pytest.raises(InputError):
        logic.openProject(tmp_path)  # no project there
    with pytest.raises(InputError, match="learning budget"):
        logic.createProject(tmp_path / "project", IMAGES, labelNames=NAMES, learnBudgetS=0)
    assert build.state() == before and not (tmp_path / "project").exists()
    status = logic.createProject(tmp_path / "project", IMAGES, labelNames=NAMES, learnBudgetS=20)
    assert status.cases["unlabelled"] and status.latest_model is None
    with pytest.raises(InputError, match="is open; close it first"):
        logic.openProject(tmp_path / "project")
    with pytest.raises(InputError, match=r"in use by .*3D Slicer"):
        AnnotationProject.open(tmp_path / "project")

    volumes, segmentation = logic.nextCase(case="hippocampus_006")
    assert [node.GetName() for node in volumes] == ["hippocampus_006"]
    assert segment_names(segmentation) == NAMES and not layer_voxels(segmentation).any()
    paint(segmentation, lambda voxels: voxels.__setitem__((slice(10, 14), slice(10, 14), slice(10, 14)), 2))
    result = logic.acceptCase()
    assert result.case == "hippocampus_006" and result.learning == "waiting"  # one case: too few to learn from
    assert int(np.count_nonzero(read_image(result.file).array == 2)) == 4 * 4 * 4

    _, following = logic.nextCase()
    skipped = logic.skipCase()
    assert skipped == following.GetName().removesuffix(" segmentation")
    assert logic.projectStatus().cases["skipped"] == [skipped]

    logic.closeProject()
    with pytest.raises(InputError, match="No annotation project is open"):
        logic.projectStatus()
    AnnotationProject.open(tmp_path / "project").close()  # closing released the lock
    status = logic.openProject(tmp_path / "project")
    assert status.cases["accepted"] == ["hippocampus_006"]


def test_a_project_from_the_bundled_model_predicts_at_once(logic, tmp_path):
    status = logic.createProject(tmp_path / "project", IMAGES, model="hippocampus-tiny")
    assert [entry["version"] for entry in status.versions] == [0] and status.learning["state"] == "idle"
    volumes, segmentation = logic.nextCase()
    assert segment_names(segmentation) == NAMES and layer_voxels(segmentation).any()
    assert reference_volume(segmentation) is volumes[0]


def test_a_picture_case_is_a_one_slice_volume_and_its_segmentation_is_stored_as_2d(scene, tmp_path):
    from MedSegCNNLib.image.core import Image
    from MedSegCNNLib.image.io import write_image

    images = tmp_path / "pictures"
    images.mkdir()
    rng = np.random.default_rng(0)
    for case in ("cells_1", "cells_2"):
        pixels = rng.integers(0, 255, (12, 17), dtype=np.uint8)
        write_image(Image(pixels, (1.0, 1.0), (0.0, 0.0), np.eye(2)), images / f"{case}.png")
    opened = AnnotationSession.create(scene, tmp_path / "project", images, label_names=["cell"], learning=False)
    try:
        nodes = opened.next_case(case="cells_2")
        assert nodes.spatial_dims == 2 and segment_names(nodes.segmentation_node) == ["cell"]
        assert layer_voxels(nodes.segmentation_node).shape == (1, 12, 17)
        paint(nodes.segmentation_node, lambda voxels: voxels.__setitem__((0, slice(2, 5), slice(3, 9)), 1))
        result = opened.accept()
        stored = read_image(result.file)
        picture = read_image(images / "cells_2.png")
        assert stored.spatial_dims == 2 and stored.same_grid(picture)
        expected = np.zeros((12, 17), np.uint8)
        expected[2:5, 3:9] = 1
        np.testing.assert_array_equal(stored.array, expected)
    finally:
        opened.close()


def test_a_learning_round_that_fails_after_accept_wait_still_counts_the_case_as_stored(scene, tmp_path):
    """The one test that starts the real background learner: a budget far too short for a round, so it fails fast
    and says why; the accepted segmentation is stored all the same, and its nodes go with the next case."""
    learning = AnnotationSession.create(
        scene, tmp_path / "project", IMAGES, model="hippocampus-tiny", learn_budget_s=1.0
    )
    try:
        nodes = learning.next_case(case="hippocampus_006")
        paint(nodes.segmentation_node, lambda voxels: voxels.__setitem__((0, 0, 0), 1))
        refused = r"a round needs at least \d+ s on this machine .* give a longer learning budget"
        with pytest.raises(InputError, match=refused):
            learning.accept(wait=True)
        status = learning.status()
        assert status.cases["accepted"] == ["hippocampus_006"] and [v["version"] for v in status.versions] == [0]
        learning.next_case(case="hippocampus_007")
        assert not any(scene.IsNodePresent(node) for node in nodes.nodes)
    finally:
        learning.close()
