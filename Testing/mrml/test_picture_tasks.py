"""Segment and train on colour pictures in the scene (single-slice vector volumes) with 2D models, through real
background processes (``MedSegCNNLib.mrml.tasks``).

The picture volumes are built with the IJK-to-RAS matrix Slicer gives a loaded PNG (``diag(-sx, -sy, 1)``: LPS
identity, origin 0; ``test_vector_volumes.py`` checks it against Slicer's own reader).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from MedSegCNNLib import segment
from MedSegCNNLib.checkpoint import save_model
from MedSegCNNLib.data.preprocessing import NormalizationSpec, PreprocessingPlan
from MedSegCNNLib.errors import InputError
from MedSegCNNLib.image.core import Image
from MedSegCNNLib.inference.options import PredictOptions
from MedSegCNNLib.mrml import image_from_volume_node, labels_from_segmentation
from MedSegCNNLib.mrml.geometry import slice_as_2d
from MedSegCNNLib.mrml.tasks import SegmentationTask, TrainingTask, evaluate_nodes
from MedSegCNNLib.networks import build_network
from MedSegCNNLib.training.config import TrainingConfig

pytest.importorskip("slicer")

TIMEOUT_S = 240
#: Deterministic and the same in the background process and here.
OPTIONS = PredictOptions(device="cpu", backend="torch", precision="fp32")


def save_tiny_rgb_model(folder: Path) -> Path:
    """An untrained 2D U-Net [4, 8] (patch 16², 1 mm, z-score) taking a picture's red, green and blue channels, with
    labels background and "disc"; its weights are seeded, so its (arbitrary) output is the same on every run."""
    import torch

    torch.manual_seed(0)
    network = build_network({"name": "unet", "spatial_dims": 2, "in_channels": 3, "out_channels": 2,
                             "features": [4, 8]})  # fmt: skip
    plan = PreprocessingPlan(
        target_spacing=(1.0, 1.0),
        crop_to_nonzero=False,
        normalization=(NormalizationSpec(scheme="zscore"),) * 3,
        spatial_dims=2,
    )
    card = {
        "network": network.config,
        "spatial_dims": 2,
        "patch_size": [16, 16],
        "channels": ["red", "green", "blue"],
        "labels": {"0": {"name": "background"}, "1": {"name": "disc", "color": [1.0, 0.8, 0.0]}},
        "preprocessing": plan.to_dict(),
    }
    save_model(folder, network, card)
    return folder


@pytest.fixture(scope="module")
def rgb_model(tmp_path_factory) -> Path:
    return save_tiny_rgb_model(tmp_path_factory.mktemp("models") / "rgb-tiny")


def phantom(seed: int, size: tuple[int, int] = (40, 48)) -> tuple[np.ndarray, np.ndarray]:
    """An RGB picture ``(3, rows, columns)`` uint8 of a bright orange disc on a dark red noisy background, and its
    disc mask ``(rows, columns)``."""
    rng = np.random.default_rng(seed)
    rows, columns = np.indices(size)
    centre = rng.uniform(12, 28, 2)
    disc = (rows - centre[0]) ** 2 + (columns - centre[1]) ** 2 < rng.uniform(7, 10) ** 2
    colour = np.where(disc, np.array([230, 160, 40])[:, None, None], np.array([90, 20, 10])[:, None, None])
    noisy = colour + rng.normal(0, 12, (3, *size))
    return np.clip(noisy, 0, 255).astype(np.uint8), disc


def picture_volume(build, pixels: np.ndarray, name: str, spacing: float = 0.5):
    """A single-slice RGB vector volume of ``pixels`` (3, rows, columns), ``spacing`` mm per pixel."""
    return build.vector_volume(Image(pixels[:, None], (spacing, spacing, 1.0), (0.0, 0.0, 0.0), np.eye(3)), name)


def test_a_colour_picture_segments_voxel_for_voxel_onto_its_volume(build, scene, rgb_model):
    import vtk

    pixels, _ = phantom(1)
    volume = picture_volume(build, pixels, "fundus")
    study = build.study(volume)
    task = SegmentationTask(scene, volume, rgb_model, dataclasses.replace(OPTIONS, probabilities=True))
    assert task.start().wait(TIMEOUT_S) == "completed", task.log
    outputs = task.finish()

    segmentation = outputs.segmentation_node
    assert build.parent_item(segmentation) == study
    assert segmentation.GetSegmentation().GetNthSegment(0).GetName() == "disc"
    layer = segmentation.GetSegmentation().GetNthSegment(0).GetRepresentation("Binary labelmap")
    assert layer.GetExtent() == volume.GetImageData().GetExtent() == (0, 47, 0, 39, 0, 0)
    matrix = vtk.vtkMatrix4x4()
    layer.GetImageToWorldMatrix(matrix)
    np.testing.assert_allclose(build.numpy_matrix(matrix), build.ijk_to_ras(volume), atol=1e-12)
    np.testing.assert_allclose(build.ijk_to_ras(volume), np.diag([-0.5, -0.5, 1.0, 1.0]))

    # The same labels as the library gives the picture as a 2D image, pixel for pixel.
    expected = segment(slice_as_2d(image_from_volume_node(volume), 0), rgb_model, OPTIONS).labels
    assert expected.spatial_dims == 2 and 0 < np.count_nonzero(expected.array) < expected.array.size
    labels = labels_from_segmentation(segmentation, volume)
    assert labels.shape == (1, 40, 48)
    np.testing.assert_array_equal(labels.array[0], expected.array)

    # Evaluated on the picture's grid (the segmentation's reference geometry) against a mask of the same pixels.
    mask = Image(expected.array[None].astype(np.uint8), (0.5, 0.5, 1.0), (0.0, 0.0, 0.0), np.eye(3))
    reference = build.volume(mask, name="fundus mask", node_class="vtkMRMLLabelMapVolumeNode")
    result, _ = evaluate_nodes(scene, segmentation, reference, volume)
    assert result.summary()[1]["dice"]["mean"] == 1.0

    probability = outputs.probability_nodes[0]
    assert probability.GetName() == "fundus probability disc"
    assert probability.GetImageData().GetDimensions() == (48, 40, 1)
    np.testing.assert_allclose(build.ijk_to_ras(probability), build.ijk_to_ras(volume), atol=1e-12)
    disc = image_from_volume_node(probability).array[0]
    assert disc.min() >= 0 and disc.max() <= 1
    assert disc[expected.array == 1].mean() > disc[expected.array == 0].mean()


def test_train_a_2d_model_on_colour_pictures_in_the_scene_and_segment_with_it(build, scene, tmp_path):
    import slicer

    pairs = []
    for seed in range(3):
        pixels, disc = phantom(10 + seed)
        volume = picture_volume(build, pixels, f"picture {seed}")
        mask = Image(disc[None].astype(np.uint8), (0.5, 0.5, 1.0), (0.0, 0.0, 0.0), np.eye(3))
        label_node = build.volume(mask, name=f"picture {seed} mask", node_class="vtkMRMLLabelMapVolumeNode")
        segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", f"picture {seed} segmentation")
        slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(label_node, segmentation)
        segmentation.GetSegmentation().GetNthSegment(0).SetName("disc")
        pairs.append((volume, segmentation))
    config = TrainingConfig(
        spatial_dims=2, network={"name": "unet", "features": [4, 8]}, batch_size=2, epochs=1, device="cpu",
        steps_per_epoch=2, patch_size=(16, 16),
    )  # fmt: skip
    task = TrainingTask(scene, pairs, tmp_path / "run", config)
    assert task.start().wait(TIMEOUT_S) == "completed", task.log
    model = task.finish()
    card = json.loads((model / "model.json").read_text())
    assert card["channels"] == ["red", "green", "blue"] and card["spatial_dims"] == 2
    assert card["labels"]["1"]["name"] == "disc"

    volume = pairs[0][0]
    segmenting = SegmentationTask(scene, volume, model, OPTIONS)
    assert segmenting.start().wait(TIMEOUT_S) == "completed", segmenting.log
    labels = labels_from_segmentation(segmenting.finish().segmentation_node, volume)
    expected = segment(slice_as_2d(image_from_volume_node(volume), 0), model, OPTIONS).labels
    np.testing.assert_array_equal(labels.array[0], expected.array)


def test_pictures_given_to_models_that_cannot_take_them_are_refused_with_the_scene_unchanged(
    build, scene, rgb_model, tmp_path
):
    colour = picture_volume(build, phantom(2)[0], "fundus")
    gray = build.volume(Image(phantom(3)[0][:1], (0.5, 0.5, 1.0), (0.0, 0.0, 0.0), np.eye(3)), name="gray")
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "mask")
    segmentation.GetSegmentation().AddEmptySegment("disc")
    before = build.state()
    cases = [
        (lambda: SegmentationTask(scene, colour, "hippocampus-tiny"),
         r"'fundus' is a colour volume with 3 channels \(red, green, blue\) but model 'hippocampus-tiny' takes 1 "
         r"input channel\(s\) \(MRI\); choose a model made for such images, or make a single-channel volume"),
        (lambda: SegmentationTask(scene, [gray, gray], rgb_model),
         r"The selected volumes give 2 channel\(s\) \(image0, image1\) but model 'rgb-tiny' takes 3"),
        (lambda: SegmentationTask(scene, [colour, gray], rgb_model), "'fundus' is a colour volume with 3 channels"),
        (lambda: TrainingTask(scene, [(colour, segmentation)], tmp_path / "run", TrainingConfig(spatial_dims=3)),
         "'fundus' is a single slice; a 3D model trains on 3D volumes: train a 2D model"),
        (lambda: TrainingTask(scene, [(colour, segmentation), (gray, segmentation)], tmp_path / "run",
                              TrainingConfig(spatial_dims=2)),
         r"Each training case needs 3 input channel\(s\) \(red, green, blue\), as the first case has; the case of "
         r"'gray' has 1 \(image\)"),
    ]  # fmt: skip
    for make, message in cases:
        with pytest.raises(InputError, match=message):
            make()
        assert build.state() == before
