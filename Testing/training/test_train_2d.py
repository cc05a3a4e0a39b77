"""2D training end to end on colour pictures: PNG files in an images/ + masks/ folder pair, a planned 2D model,
held-out pictures segmented from their files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image as Picture

from MedSegCNNLib import Image, read_image
from MedSegCNNLib.checkpoint import read_model_card
from MedSegCNNLib.data.dataset import dataset_from_pairs
from MedSegCNNLib.inference.options import PredictOptions
from MedSegCNNLib.inference.segment import segment
from MedSegCNNLib.metrics.label_metrics import compute_label_metrics
from MedSegCNNLib.training.config import TrainingConfig
from MedSegCNNLib.training.trainer import train

SIZE = 64
TARGET = np.array([200.0, 60.0, 60.0])  # red: the structure to segment
DECOY = np.array([30.0, 140.0, 60.0])  # green, about as bright (luminance 98 vs 102): only colour tells them apart


def phantom(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """An RGB picture (rows, columns, 3) uint8 of red discs and ellipses (mask 255) and green decoys (mask 0) on a
    textured, tinted background with noise, and its 0/255 mask."""
    rng = np.random.default_rng(seed)
    rows, columns = np.mgrid[:SIZE, :SIZE].astype(np.float64)
    texture = 20 * np.sin(columns / rng.uniform(2, 4) + rng.uniform(0, 6)) * np.cos(rows / rng.uniform(3, 6))
    picture = np.stack([110 + texture, 95 + texture, 80 + 0.5 * texture], axis=-1)
    mask = np.zeros((SIZE, SIZE), np.uint8)
    for index in range(int(rng.integers(3, 6))):
        centre = rng.uniform(8, SIZE - 8, size=2)
        radii = rng.uniform(4, 9, size=2)
        angle = rng.uniform(0, np.pi)
        u = (rows - centre[0]) * np.cos(angle) + (columns - centre[1]) * np.sin(angle)
        v = -(rows - centre[0]) * np.sin(angle) + (columns - centre[1]) * np.cos(angle)
        inside = (u / radii[0]) ** 2 + (v / radii[1]) ** 2 <= 1
        target = index % 2 == 0
        picture[inside] = TARGET if target else DECOY
        mask[inside] = 255 if target else 0
    picture += rng.normal(0, 12, size=picture.shape)
    return np.clip(np.rint(picture), 0, 255).astype(np.uint8), mask


def write_pictures(folder: Path, seeds: range) -> None:
    """``folder/images/case<seed>.png`` (RGB) and ``folder/masks/case<seed>.png`` (0/255)."""
    for sub in ("images", "masks"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for seed in seeds:
        picture, mask = phantom(seed)
        Picture.fromarray(picture).save(folder / "images" / f"case{seed:02d}.png")
        Picture.fromarray(mask).save(folder / "masks" / f"case{seed:02d}.png")


def test_a_2d_model_learns_colour_pictures_from_a_folder_pair_and_segments_held_out_files(tmp_path):
    write_pictures(tmp_path / "train", range(16))
    write_pictures(tmp_path / "test", range(100, 104))
    config = TrainingConfig(
        network={"name": "unet", "features": [8, 16, 32]},
        patch_size=(SIZE, SIZE),
        batch_size=4,
        epochs=3,
        steps_per_epoch=20,
        optimizer="adam",
        learning_rate=1e-2,
        fold=None,
        device="cpu",
        precision="fp32",
        channels_last=True,  # one mode to measure for the plan
        augmentation={"rotation_p": 0.0, "scale_p": 0.0},
    )
    result = train(tmp_path / "train", tmp_path / "run", config)
    card = read_model_card(result.model)
    assert result.status == "completed" and card.spatial_dims == 2  # planned from the data: 2D pictures
    assert card.channels == ("red", "green", "blue") and card.labels[1].name == "label_1"
    assert card.preprocessing.target_spacing == (1.0, 1.0)
    saved = json.loads((tmp_path / "run" / "training_config.json").read_text())
    assert saved["config"]["spatial_dims"] == 2 and saved["patch_size"] == [SIZE, SIZE]
    dice = []
    for seed in range(100, 104):
        path = tmp_path / "test" / "images" / f"case{seed}.png"
        picture = read_image(path)
        labels = segment(path, result.model, PredictOptions(device="cpu", backend="torch")).labels
        assert labels.spatial_dims == 2 and labels.shape == (SIZE, SIZE) and labels.same_grid(picture, tolerance=0)
        truth = np.asarray(Picture.open(tmp_path / "test" / "masks" / f"case{seed}.png")) // 255
        dice.append(compute_label_metrics(labels.array, truth, [1], (1.0, 1.0), surface=False)[1].dice)
    assert min(dice) > 0.9, dice


def test_pictures_and_the_same_pixels_as_single_slice_volumes_train_the_same_weights(tmp_path):
    """The 2D path loses nothing: 2D images and one-slice volumes (what a 2D model on NIfTI slices sees) give the same
    patches, augmentation and steps, so the same seed gives bit-identical weights."""
    flat, volumes = [], []
    for seed in range(4):
        picture, mask = phantom(seed)
        channels, labels = np.moveaxis(picture, -1, 0).astype(np.float32), mask // 255
        flat.append((Image.from_array(channels, spatial_dims=2), Image.from_array(labels)))
        volumes.append((Image.from_array(channels[:, None], spatial_dims=3), Image.from_array(labels[None])))
    config = TrainingConfig(
        network={"name": "unet", "features": [4, 8]},
        spatial_dims=2,
        patch_size=(32, 32),
        batch_size=2,
        epochs=1,
        steps_per_epoch=5,
        fold=None,
        device="cpu",
        precision="fp32",
        channels_last=True,
    )  # default augmentation: rotations, zoom, mirroring, intensity
    names = ("red", "green", "blue")
    pictures = train(dataset_from_pairs(flat, channel_names=names), tmp_path / "pictures", config)
    slices = train(dataset_from_pairs(volumes, channel_names=names), tmp_path / "slices", config)
    first, second = pictures.network.state_dict(), slices.network.state_dict()
    assert pictures.steps_done == slices.steps_done == 5
    assert first.keys() == second.keys() and all(torch.equal(first[key], second[key]) for key in first)
