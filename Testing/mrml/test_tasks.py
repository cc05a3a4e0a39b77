"""Segment, train and evaluate with MRML nodes through real background processes (``MedSegCNNLib.mrml.tasks``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from cli_support import SAMPLE

from MedSegCNNLib.errors import InputError
from MedSegCNNLib.image.io import read_image
from MedSegCNNLib.inference.options import PredictOptions
from MedSegCNNLib.mrml import image_from_volume_node, labels_from_segmentation
from MedSegCNNLib.mrml.tasks import SegmentationTask, TrainingTask, evaluate_nodes
from MedSegCNNLib.training.config import TrainingConfig

pytest.importorskip("slicer")

MODEL = "hippocampus-tiny"
TIMEOUT_S = 240


def load_case(build, case: str = "hippocampus_020", *, transform=None):
    image = read_image(SAMPLE / "imagesTr" / f"{case}.nii.gz")
    reference = read_image(SAMPLE / "labelsTr" / f"{case}.nii.gz")
    volume = build.volume(image, name=case, transform=transform)
    label_node = build.volume(reference, name=f"{case} reference", node_class="vtkMRMLLabelMapVolumeNode")
    return volume, label_node, reference


def test_segment_a_volume_into_a_segmentation_node_with_maps_and_evaluate_it(build, scene):
    volume, reference_node, reference = load_case(build)
    study = build.study(volume)
    task = SegmentationTask(scene, volume, MODEL, PredictOptions(device="cpu", probabilities=True, uncertainty=True))
    assert task.start().wait(TIMEOUT_S) == "completed", task.log
    assert task.progress.fraction == 1.0
    outputs = task.finish()

    segmentation = outputs.segmentation_node
    names = [segmentation.GetSegmentation().GetNthSegment(i).GetName() for i in range(2)]
    assert names == ["Anterior", "Posterior"]
    assert build.parent_item(segmentation) == study
    labels = labels_from_segmentation(segmentation, volume)
    assert labels.array.shape == reference.array.shape
    assert {int(v) for v in np.unique(labels.array)} == {0, 1, 2}

    probability_names = [node.GetName() for node in outputs.probability_nodes]
    assert probability_names == ["hippocampus_020 probability Anterior", "hippocampus_020 probability Posterior"]
    anterior = image_from_volume_node(outputs.probability_nodes[0]).array
    assert anterior.min() >= 0 and anterior.max() <= 1
    assert anterior[labels.array == 1].mean() > anterior[labels.array == 0].mean()
    assert outputs.uncertainty_node is not None and image_from_volume_node(outputs.uncertainty_node).array.min() >= 0

    result, table = evaluate_nodes(scene, segmentation, reference_node, volume)
    summary = result.summary()
    assert sorted(summary) == [1, 2] and all(summary[label]["dice"]["mean"] > 0.6 for label in summary)
    assert table.GetNumberOfRows() == 2 and table.GetName().endswith("metrics")


def test_segmentation_lands_on_a_transformed_volume_where_the_library_puts_it(build, scene):
    transform = build.linear_transform(build.rigid((0.1, -0.2, 0.3), (5.0, -3.0, 12.0)))
    volume, _, _ = load_case(build, "hippocampus_006", transform=transform)
    task = SegmentationTask(scene, [volume], MODEL, PredictOptions(device="cpu"))
    assert task.start().wait(TIMEOUT_S) == "completed", task.log
    segmentation = task.finish().segmentation_node
    from MedSegCNNLib import segment

    expected = segment(image_from_volume_node(volume), MODEL_PATH(), PredictOptions(device="cpu"))
    got = labels_from_segmentation(segmentation, volume)
    assert got.same_grid(expected.labels) and (got.array > 0).any()
    np.testing.assert_array_equal(got.array, expected.labels.array)


def MODEL_PATH() -> Path:
    from MedSegCNNLib.registry import resolve_model

    return resolve_model(MODEL)


def test_cancel_leaves_the_scene_and_the_disk_as_they_were(build, scene):
    volume, _, _ = load_case(build)
    before = build.state()
    task = SegmentationTask(scene, volume, MODEL, PredictOptions(device="cpu", tta=True))
    workdir = task._workdir
    assert workdir.is_dir()
    task.start()
    assert task.cancel() == "cancelled"
    assert not workdir.exists() and build.state() == before
    with pytest.raises(InputError, match="cancelled"):
        task.finish()
    assert build.state() == before


def test_bad_inputs_are_refused_with_the_scene_unchanged(build, scene, tmp_path):
    volume, _, _ = load_case(build)
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "edited")
    segmentation.GetSegmentation().AddEmptySegment("mine")
    one_slice = build.volume(read_image(SAMPLE / "imagesTr" / "hippocampus_020.nii.gz").with_array(
        np.zeros((1, 4, 5), np.float32)), name="slice")  # fmt: skip
    before = build.state()
    cases = [
        (lambda: SegmentationTask(scene, [], MODEL), "No input volume"),
        (lambda: SegmentationTask(scene, [volume, volume], MODEL), r"give 2 channel\(s\) \(image0, image1\) but model"),
        (lambda: SegmentationTask(scene, volume, "no-such-model"), "No model named 'no-such-model'"),
        (lambda: SegmentationTask(scene, volume, tmp_path / "missing"), "missing"),
        (lambda: SegmentationTask(scene, volume, MODEL, segmentation_node=segmentation), "already has 1 segment"),
        (lambda: SegmentationTask(scene, one_slice, MODEL), "single slice"),
        (lambda: TrainingTask(scene, [], tmp_path / "run"), "No training data"),
    ]
    for make, message in cases:
        with pytest.raises(InputError, match=message):
            make()
        assert build.state() == before


def test_corrupted_model_fails_with_the_cli_message_and_adds_nothing(build, scene, tmp_path):
    import shutil

    model = tmp_path / "broken"
    shutil.copytree(MODEL_PATH(), model)
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)
    volume, _, _ = load_case(build)
    before = build.state()
    task = SegmentationTask(scene, volume, model, PredictOptions(device="cpu"))
    assert task.start().wait(TIMEOUT_S) == "failed"
    assert "do not match the model card" in task.error, task.error
    with pytest.raises(InputError, match="failed"):
        task.finish()
    assert build.state() == before


def test_train_from_segmentations_and_label_maps_in_the_scene(build, scene, tmp_path):
    """Three cases (fewer than 5 folds need): one validation fold per case; a label map matches by value."""
    import slicer

    pairs = []
    for case in ("hippocampus_007", "hippocampus_020", "hippocampus_006"):
        volume, label_node, _ = load_case(build, case)
        if case == "hippocampus_006":
            pairs.append(([volume], label_node))
            continue
        segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", f"{case} segmentation")
        slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(label_node, segmentation)
        for index, name in enumerate(("Anterior", "Posterior")):
            segmentation.GetSegmentation().GetNthSegment(index).SetName(name)
        pairs.append(([volume], segmentation))
    config = TrainingConfig(
        network={"name": "unet", "features": [4, 8, 16]}, batch_size=1, epochs=1, device="cpu",
        steps_per_epoch=2, patch_size=(16, 16, 16),
    )  # fmt: skip
    task = TrainingTask(scene, pairs, tmp_path / "run", config)
    assert task.start().wait(TIMEOUT_S) == "completed", task.log
    events = task.poll()
    kinds = [event.kind for event in events]
    assert kinds.count("step") == 2 and "validation" in kinds
    start = next(event.data for event in events if event.kind == "start")
    assert start["train_cases"] == 2 and start["val_cases"] == 1
    model = task.finish()
    card = json.loads((model / "model.json").read_text())
    assert [card["labels"][key]["name"] for key in ("1", "2")] == ["Anterior", "Posterior"]
    assert task._workdir is not None and not task._workdir.exists()
