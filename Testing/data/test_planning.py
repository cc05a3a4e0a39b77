"""Planning: fingerprints, target spacing, normalisation choice, crop decision, patch sizes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from MedSegCNNLib import Image
from MedSegCNNLib.data.dataset import Dataset, dataset_from_pairs, load_msd_dataset
from MedSegCNNLib.data.planning import (
    dataset_fingerprint,
    plan_preprocessing,
    resampled_median_shape,
    suggest_patch_size,
)
from MedSegCNNLib.data.preprocessing import NormalizationSpec
from MedSegCNNLib.errors import InputError

SAMPLE = Path(__file__).resolve().parents[2] / "Resources" / "SampleData" / "Hippocampus"


@pytest.fixture(scope="module")
def sample_fingerprint():
    return dataset_fingerprint(load_msd_dataset(SAMPLE))


def _fingerprint(spacings, sizes, *, ratio=1.0, channels=("MRI",)):
    """A fingerprint as dataset_fingerprint writes it, for planning rules that need many cases."""
    stats = {"mean": 40.0, "std": 20.0, "median": 38.0, "percentile_00_5": -50.0, "percentile_99_5": 200.0}
    return {
        "channel_names": list(channels),
        "spacings": spacings,
        "sizes": sizes,
        "nonzero_sizes": sizes,
        "crop_volume_ratio": ratio,
        "intensity": [stats for _ in channels],
    }


EMPTY = Dataset("synthetic", ("MRI",), {0: "background"}, ())


def test_sample_data_plan(sample_fingerprint):
    assert json.loads(json.dumps(sample_fingerprint)) == sample_fingerprint
    assert sample_fingerprint["num_cases"] == 12
    assert sample_fingerprint["median_spacing"] == [1.0, 1.0, 1.0]
    assert sample_fingerprint["sizes"][0] == [36, 52, 38]
    channel = sample_fingerprint["intensity"][0]
    assert channel["percentile_00_5"] < channel["median"] < channel["percentile_99_5"]
    assert channel["num_samples"] > 30_000  # every labelled voxel of the 12 cases (fewer than 10,000 each)
    dataset = load_msd_dataset(SAMPLE)
    plan = plan_preprocessing(dataset, fingerprint=sample_fingerprint)
    assert plan.target_spacing == (1.0, 1.0, 1.0)
    assert plan.normalization == (NormalizationSpec("zscore"),)
    assert plan.crop_to_nonzero is False and plan.spatial_dims == 3
    flat = plan_preprocessing(dataset, spatial_dims=2, fingerprint=sample_fingerprint)
    assert flat.target_spacing == (1.0, 1.0, None) and flat.spatial_dims == 2
    shape = resampled_median_shape(sample_fingerprint, plan)
    assert shape == (36, 49, 36)  # array order: median z, y, x size
    assert suggest_patch_size(shape, 3, divisor=8) == (40, 56, 40)


def test_ct_channels_get_dataset_statistics():
    rng = np.random.default_rng(0)
    pairs = []
    for seed in range(3):
        array = rng.normal(-500, 100, size=(6, 7, 8)).astype(np.float32)
        label = np.zeros((6, 7, 8), np.uint8)
        label[2:4, 2:5, 3:6] = 1
        array[label == 1] = rng.normal(60, 10, size=int(label.sum()))
        pairs.append(
            (
                Image.from_array(array, spacing=(0.8, 0.8, 2.5 + seed)),
                Image.from_array(label, spacing=(0.8, 0.8, 2.5 + seed)),
            )
        )
    dataset = dataset_from_pairs(pairs, channel_names=["CT"], label_names={1: "organ"})
    plan = plan_preprocessing(dataset)
    spec = plan.normalization[0]
    assert spec.scheme == "ct"
    assert 40 < spec.mean < 80 and 5 < spec.std < 15  # labelled voxels only, not the -500 background
    assert spec.clip_low < spec.mean < spec.clip_high
    assert plan.target_spacing == (0.8, 0.8, 3.5)
    assert plan_preprocessing(dataset, modality_hint=["MRI"]).normalization[0].scheme == "zscore"
    assert plan_preprocessing(dataset, modality_hint=["none"]).normalization[0].scheme == "none"


@pytest.mark.parametrize(
    ("name", "scheme"),
    [("CT", "ct"), ("ct_venous", "ct"), ("PET/CT", "ct"), ("rectum", "zscore"), ("T2", "zscore"), ("ZSCORE", "zscore")],
)
def test_channel_names_choose_the_scheme(name, scheme):
    plan = plan_preprocessing(EMPTY, fingerprint=_fingerprint([[1, 1, 1]], [[10, 10, 10]], channels=(name,)))
    assert plan.normalization[0].scheme == scheme


def test_anisotropic_data_uses_a_finer_coarse_axis():
    spacings = [[0.7, 0.7, 5.0]] * 8 + [[0.7, 0.7, 1.5]] * 2
    sizes = [[512, 512, 40]] * 8 + [[512, 512, 130]] * 2
    plan = plan_preprocessing(EMPTY, fingerprint=_fingerprint(spacings, sizes))
    assert plan.target_spacing[:2] == (0.7, 0.7)
    assert 1.5 <= plan.target_spacing[2] < 5.0  # the 10th percentile, not the median 5.0
    isotropic = plan_preprocessing(EMPTY, fingerprint=_fingerprint([[0.7, 0.7, 1.0]] * 3, [[512, 512, 300]] * 3))
    assert isotropic.target_spacing == (0.7, 0.7, 1.0)


def test_crop_decision_follows_the_non_zero_volume():
    assert plan_preprocessing(EMPTY, fingerprint=_fingerprint([[1, 1, 1]], [[9, 9, 9]], ratio=0.5)).crop_to_nonzero
    assert not plan_preprocessing(EMPTY, fingerprint=_fingerprint([[1, 1, 1]], [[9, 9, 9]], ratio=0.9)).crop_to_nonzero


def test_planning_errors():
    with pytest.raises(InputError, match="no cases"):
        dataset_fingerprint(EMPTY)
    with pytest.raises(InputError, match="modality_hint has 2 entries"):
        plan_preprocessing(EMPTY, modality_hint=["CT", "MR"], fingerprint=_fingerprint([[1, 1, 1]], [[9, 9, 9]]))
    with pytest.raises(InputError, match="spatial_dims"):
        plan_preprocessing(EMPTY, spatial_dims=1)


def test_suggest_patch_size():
    assert suggest_patch_size((36, 49, 36), 3) == (48, 64, 48)
    assert suggest_patch_size((5, 5, 5), 3, divisor=16) == (16, 16, 16)
    big = suggest_patch_size((300, 512, 512), 3, divisor=32, max_voxels=128**3)
    assert all(side % 32 == 0 for side in big) and math.prod(big) <= 128**3
    assert suggest_patch_size((300, 512, 512), 2) == (512, 512)
    assert suggest_patch_size((300, 700, 600), 2, divisor=(32, 16)) == (512, 512)
    limit = 64 * 128 * 128
    assert suggest_patch_size((64, 256, 256), 3, max_voxels=limit) == (64, 128, 128)
    # 5 mm slices: the physically longest side shrinks first, giving a physically balanced patch
    assert suggest_patch_size((64, 256, 256), 3, max_voxels=limit, spacing=(5.0, 1.0, 1.0)) == (32, 176, 176)
    with pytest.raises(InputError, match="median_shape"):
        suggest_patch_size((10, 10), 3)
    with pytest.raises(InputError, match="divisor"):
        suggest_patch_size((10, 10, 10), 3, divisor=(8, 8))
    with pytest.raises(InputError, match="max_voxels"):
        suggest_patch_size((10, 10, 10), 3, divisor=16, max_voxels=100)
