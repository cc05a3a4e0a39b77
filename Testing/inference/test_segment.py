"""segment(): geometry back on the input grid, TTA, probabilities/uncertainty, 2D models, bad input."""

from __future__ import annotations

import logging

import numpy as np
import PIL.Image
import pytest
import torch

from MedSegCNNLib import Image, read_image
from MedSegCNNLib.checkpoint import ModelCard
from MedSegCNNLib.data.preprocessing import NormalizationSpec, PreprocessingPlan
from MedSegCNNLib.errors import InputError
from MedSegCNNLib.inference.model import SegmentationModel
from MedSegCNNLib.inference.options import PredictOptions
from MedSegCNNLib.inference.segment import segment

LABELS = {"0": {"name": "background", "color": [0, 0, 0]}, "1": {"name": "bright", "color": [1, 0, 0]}}


class Threshold(torch.nn.Module):
    """A pointwise 'network': class 1 where the (normalised) intensity is positive. Flip-equivariant."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([-x[:, :1] * 10, x[:, :1] * 10], dim=1)


def model(dims: int = 3, target_spacing=None, patch=(8, 8, 8), channels=("MRI",)) -> SegmentationModel:
    plan = PreprocessingPlan(
        target_spacing=target_spacing,
        crop_to_nonzero=False,
        normalization=tuple(NormalizationSpec(scheme="none") for _ in channels),
        image_interpolation="linear",
        spatial_dims=dims,
    )
    network = {"name": "threshold", "spatial_dims": dims, "in_channels": len(channels), "out_channels": len(LABELS)}
    card = ModelCard.new(
        {
            "network": network,
            "labels": LABELS,
            "channels": list(channels),
            "preprocessing": plan.to_dict(),
            "patch_size": list(patch),
            "spatial_dims": dims,
        }
    )
    return SegmentationModel(networks=(Threshold().eval(),), card=card, device=torch.device("cpu"))


def oblique_image(shape=(12, 14, 10), spacing=(0.8, 1.1, 2.5)) -> Image:
    """A bright box on a dark background, rotated and flipped, anisotropic, with a non-zero origin."""
    array = np.full(shape, -1.0, dtype=np.float32)
    array[3:9, 4:10, 2:8] = 1.0
    angle = np.deg2rad(20)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    direction = rotation @ np.diag([1.0, -1.0, 1.0])  # rotated and flipped (determinant -1)
    return Image.from_array(array, spacing=spacing, origin=(-12.5, 30.25, 7.0), direction=direction)


@pytest.mark.parametrize("target_spacing", [None, (1.0, 1.0, 1.0), (0.5, 0.7, 1.6)])
def test_output_lands_on_the_input_grid(target_spacing):
    image = oblique_image()
    result = segment(image, model(target_spacing=target_spacing))
    labels = result.labels
    assert labels.shape == image.shape and labels.spacing == image.spacing and labels.origin == image.origin
    assert np.array_equal(labels.direction, image.direction)
    assert labels.array.dtype == np.uint8 and [info.name for info in labels.labels] == ["bright"]
    truth = (image.array > 0).astype(np.uint8)
    if target_spacing is None:
        assert np.array_equal(labels.array, truth)  # no resampling: voxel-exact
    else:
        assert (labels.array == truth).mean() > 0.97  # resampled there and back: only box faces may differ


def test_tta_of_a_flip_equivariant_network_equals_no_tta():
    image = oblique_image()
    plain = segment(image, model(), PredictOptions(probabilities=True))
    mirrored = segment(image, model(), PredictOptions(tta=True, probabilities=True))
    assert np.array_equal(plain.labels.array, mirrored.labels.array)
    assert np.allclose(plain.probabilities.array, mirrored.probabilities.array, atol=1e-6)


def test_probabilities_and_uncertainty_on_the_input_grid():
    image = oblique_image()
    result = segment(image, model(target_spacing=(1.0, 1.0, 1.0)), PredictOptions(probabilities=True, uncertainty=True))
    probabilities, entropy = result.probabilities, result.uncertainty
    assert probabilities.num_channels == 2 and probabilities.shape == image.shape
    assert probabilities.same_grid(image) and entropy.same_grid(image)
    assert np.allclose(probabilities.array.sum(0), 1.0, atol=1e-4)
    assert entropy.array.min() >= 0 and entropy.array.max() <= np.log(2) + 1e-6
    assert entropy.array[4:8, 5:9, 3:7].max() < 0.01  # confident inside the box (its faces were resampled)
    assert entropy.array.max() > 0.1  # and uncertain somewhere on its faces


def test_a_2d_model_runs_slice_by_slice_on_a_volume():
    image = oblique_image()
    result = segment(image, model(dims=2, patch=(8, 8)), PredictOptions(probabilities=True))
    assert result.labels.same_grid(image)
    assert np.array_equal(result.labels.array, (image.array > 0).astype(np.uint8))
    assert result.probabilities.num_channels == 2


@pytest.mark.parametrize("target_spacing", [None, (0.05, 0.1), (0.05, 0.1, None)])
def test_a_2d_picture_gives_a_2d_label_map_on_its_grid(tmp_path, target_spacing):
    """A 16-bit PNG with 0.1 x 0.2 mm pixels (pHYs), read from its file; the plan made from pictures (x, y) or from
    volumes (x, y, None), or none."""
    picture = np.zeros((30, 20), np.uint16)  # rows (y), columns (x)
    picture[8:20, 5:12] = 4000
    path = tmp_path / "frame.png"
    PIL.Image.fromarray(picture).save(path, dpi=(254, 127))  # 10 and 5 pixels per mm
    image = read_image(path)
    assert image.spacing == pytest.approx((0.1, 0.2)) and image.spatial_dims == 2
    for source in (path, image):
        labels = segment(source, model(dims=2, patch=(8, 8), target_spacing=target_spacing)).labels
        assert labels.spatial_dims == 2 and labels.shape == picture.shape and labels.spacing == image.spacing
        assert labels.origin == image.origin and np.array_equal(labels.direction, image.direction)
        if target_spacing is None:
            assert np.array_equal(labels.array, (picture > 0).astype(np.uint8))  # voxel-exact
            continue
        # resampled to 0.05 x 0.1 mm and back: the box, grown by at most a pixel where interpolation reached out
        assert labels.array[8:20, 5:12].all() and labels.array.sum() == labels.array[7:21, 4:13].sum()
        # the same picture as a one-slice volume, segmented slice by slice, gives the same labels
        volume = Image.from_array(picture[None], spacing=(*image.spacing, 2.0))
        sliced = segment(volume, model(dims=2, patch=(8, 8), target_spacing=(*target_spacing[:2], None))).labels
        assert sliced.same_grid(volume, tolerance=0) and np.array_equal(sliced.array[0], labels.array)


def test_a_model_trained_on_pictures_segments_an_oblique_2d_image_and_a_single_slice_volume():
    """A 2D plan (x, y) on a rotated 2D image, and on a one-slice volume (what Slicer makes of a picture)."""
    rotated = np.array([[np.cos(0.5), -np.sin(0.5)], [np.sin(0.5), np.cos(0.5)]]) @ np.diag([1.0, -1.0])
    array = np.full((14, 11), -1.0, np.float32)
    array[3:10, 2:8] = 1.0
    flat = Image.from_array(array, spacing=(0.7, 1.3), origin=(4.5, -3.25), direction=rotated)
    trained = model(dims=2, patch=(8, 8), target_spacing=(0.7, 1.3))
    labels = segment(flat, trained).labels
    assert labels.same_grid(flat, tolerance=0) and np.array_equal(labels.array, (array > 0).astype(np.uint8))
    volume = Image.from_array(array[None], spacing=(0.7, 1.3, 3.0), origin=(4.5, -3.25, 12.0), direction=np.eye(3))
    labels = segment(volume, trained).labels
    assert labels.same_grid(volume, tolerance=0) and np.array_equal(labels.array, (array[None] > 0).astype(np.uint8))


def test_a_colour_picture_for_a_one_channel_model_is_refused_saying_so():
    colour = Image.from_array(np.zeros((3, 8, 8), np.float32), spatial_dims=2)
    with pytest.raises(InputError, match="expects 1 input channel \\(MRI\\); the input has 3, a colour picture"):
        segment(colour, model(dims=2, patch=(8, 8)))


def test_non_finite_voxels_are_reported_and_replaced(caplog):
    image = oblique_image()
    array = image.array.copy()
    array[0, 0, :3] = [np.nan, np.inf, -np.inf]
    with caplog.at_level(logging.WARNING, logger="MedSegCNNLib"):
        result = segment(image.with_array(array), model())
    assert "3 non-finite voxels" in caplog.text
    assert result.labels.array[0, 0, 0] == 0


def test_bad_inputs_are_refused():
    volume = oblique_image()
    with pytest.raises(InputError, match="2 input channel"):
        segment(volume, model(channels=("T1", "T2")))
    flat = Image.from_array(np.zeros((8, 8), dtype=np.float32))
    with pytest.raises(InputError, match="3D model"):
        segment(flat, model())


def test_images_smaller_than_the_patch_are_padded_and_cropped_back():
    image = oblique_image(shape=(5, 6, 7))
    result = segment(image, model(patch=(16, 16, 16)))
    assert result.labels.same_grid(image)
