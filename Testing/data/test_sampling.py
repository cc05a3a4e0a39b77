"""Patch sampling: shapes, foreground oversampling, padding, 2D slices, reproducibility and resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from MedSegCNNLib import Image
from MedSegCNNLib.data.preprocessing import NormalizationSpec, PreprocessedCase, PreprocessingPlan, preprocess_case
from MedSegCNNLib.data.sampling import PatchSampler
from MedSegCNNLib.errors import InputError

PLAN = PreprocessingPlan(None, False, (NormalizationSpec("none"), NormalizationSpec("none")))


def _case(label: np.ndarray, *, name: str = "c", seed: int = 0) -> PreprocessedCase:
    """A two-channel case: channel 0 holds each voxel's flat index + 1 (so patches can be located)."""
    index = np.arange(1, label.size + 1, dtype=np.float32).reshape(label.shape)
    image = Image.from_array(np.stack([index, -index]), spatial_dims=label.ndim)
    return preprocess_case(image, Image.from_array(label), PLAN, seed=seed, name=name)


def _sparse_case(shape=(40, 40, 40)) -> PreprocessedCase:
    label = np.zeros(shape, np.uint8)
    label[shape[0] * 3 // 4, 5, shape[2] // 2] = 1  # a single labelled voxel: random patches rarely see it
    return _case(label, name="sparse")


def _foreground_share(sampler: PatchSampler, batches: int) -> float:
    hits = [
        bool(labels[b].any())
        for _ in range(batches)
        for labels in [sampler.next_batch()[1]]
        for b in range(len(labels))
    ]
    return float(np.mean(hits))


def test_shapes_dtypes_and_content():
    case = _sparse_case()
    sampler = PatchSampler([case], (8, 12, 16), 3)
    images, labels = sampler.next_batch()
    assert images.shape == (3, 2, 8, 12, 16) and images.dtype == torch.float32
    assert labels.shape == (3, 1, 8, 12, 16) and labels.dtype == torch.int64
    for patch in images.numpy():
        first = int(patch[0, 0, 0, 0]) - 1  # the flat index of the patch's first voxel
        z, y, x = np.unravel_index(first, case.shape)
        np.testing.assert_array_equal(patch, case.image[:, z : z + 8, y : y + 12, x : x + 16])


def test_foreground_fraction_is_respected():
    sampler = PatchSampler([_sparse_case()], (8, 8, 8), 3, foreground_fraction=0.33, seed=1)
    share = _foreground_share(sampler, 100)
    assert 0.2 < share < 0.5
    assert _foreground_share(PatchSampler([_sparse_case()], (8, 8, 8), 4, foreground_fraction=0.0), 25) < 0.1
    assert _foreground_share(PatchSampler([_sparse_case()], (8, 8, 8), 4, foreground_fraction=1.0), 25) == 1.0


def test_labels_are_chosen_uniformly_then_voxels():
    label = np.zeros((30, 30, 30), np.uint8)
    label[:, :, :15] = 1  # a large structure
    label[20, 20, 25] = 2  # and a single voxel
    sampler = PatchSampler([_case(label)], (6, 6, 6), 4, foreground_fraction=1.0, seed=2)
    share = np.mean(
        [bool((labels[b] == 2).any()) for _ in range(50) for labels in [sampler.next_batch()[1]] for b in range(4)]
    )
    assert 0.35 < share < 0.65


def test_small_cases_are_padded():
    label = np.zeros((5, 6, 7), np.uint8)
    label[1:4, 2:5, 3:6] = 2
    case = _case(label)
    images, labels = PatchSampler([case], (8, 8, 8), 4, seed=3).next_batch()
    for image, patch_label in zip(images.numpy(), labels.numpy(), strict=True):
        assert np.count_nonzero(image[0]) == label.size  # the whole case, zero padding around it
        assert patch_label.sum() == label.sum()
        z, y, x = (axis[0] for axis in np.nonzero(image[0]))
        np.testing.assert_array_equal(image[:, z : z + 5, y : y + 6, x : x + 7], case.image)
        np.testing.assert_array_equal(patch_label[0, z : z + 5, y : y + 6, x : x + 7], label)


def test_two_dimensional_patches():
    case = _sparse_case((10, 20, 24))
    images, labels = PatchSampler([case], (16, 16), 5, seed=4).next_batch()
    assert images.shape == (5, 2, 16, 16) and labels.shape == (5, 1, 16, 16)
    first = int(images[0, 0, 0, 0]) - 1
    z, y, x = np.unravel_index(first, case.shape)
    np.testing.assert_array_equal(images[0].numpy(), case.image[:, z, y : y + 16, x : x + 16])
    sagittal, _ = PatchSampler([case], (10, 16), 2, slice_axis=2).next_batch()
    assert sagittal.shape == (2, 2, 10, 16)
    flat = _case((np.arange(20 * 24).reshape(20, 24) % 3).astype(np.uint8))
    images, labels = PatchSampler([flat], (8, 8), 2).next_batch()
    assert images.shape == (2, 2, 8, 8) and labels.max() <= 2


def test_reproducible_seeds_ranks_and_resume():
    cases = [_sparse_case(), _case(np.ones((6, 9, 9), np.uint8), name="ones")]

    def batches(sampler, count):
        return [sampler.next_batch() for _ in range(count)]

    first = batches(PatchSampler(cases, (8, 8, 8), 2, seed=5), 3)
    again = batches(PatchSampler(cases, (8, 8, 8), 2, seed=5), 3)
    other_rank = batches(PatchSampler(cases, (8, 8, 8), 2, seed=5, rank=1, world_size=2), 3)
    for (a, b), (c, d) in zip(first, again, strict=True):
        assert torch.equal(a, c) and torch.equal(b, d)
    assert not all(torch.equal(a, c) for (a, _), (c, _) in zip(first, other_rank, strict=True))

    sampler = PatchSampler(cases, (8, 8, 8), 2, seed=5)
    sampler.next_batch()
    state = json.loads(json.dumps(sampler.state_dict()))
    expected = sampler.next_batch()
    resumed = PatchSampler(cases, (8, 8, 8), 2, seed=99)
    resumed.load_state_dict(state)
    result = resumed.next_batch()
    assert torch.equal(result[0], expected[0]) and torch.equal(result[1], expected[1])
    with pytest.raises(InputError, match="Not a patch sampler state"):
        resumed.load_state_dict({"bit_generator": "MT19937"})


def test_iteration_and_data_loader():
    sampler = PatchSampler([_sparse_case()], (8, 8, 8), 2)
    images, labels = next(iter(sampler))
    assert images.shape == (2, 2, 8, 8, 8) and labels.shape == (2, 1, 8, 8, 8)
    loaded = next(iter(DataLoader(sampler, batch_size=None)))
    assert loaded[0].shape == (2, 2, 8, 8, 8) and loaded[1].dtype == torch.int64


def test_bad_configuration():
    case = _sparse_case((10, 10, 10))
    unlabelled = preprocess_case(Image.from_array(np.ones((2, 4, 4, 4), np.float32), spatial_dims=3), None, PLAN)
    with pytest.raises(InputError, match="at least one"):
        PatchSampler([], (8, 8, 8), 2)
    with pytest.raises(InputError, match="no label map"):
        PatchSampler([unlabelled], (4, 4, 4), 1)
    with pytest.raises(InputError, match="cannot be cut"):
        PatchSampler([_case(np.zeros((8, 8), np.uint8))], (4, 4, 4), 1)
    with pytest.raises(InputError, match="rank"):
        PatchSampler([case], (4, 4, 4), 1, rank=2, world_size=2)
    with pytest.raises(InputError, match="foreground_fraction"):
        PatchSampler([case], (4, 4, 4), 1, foreground_fraction=1.5)
    one_channel = preprocess_case(
        Image.from_array(np.ones((4, 4, 4), np.float32)),
        Image.from_array(np.ones((4, 4, 4), np.uint8)),
        PreprocessingPlan(None, False, (NormalizationSpec("none"),)),
    )
    with pytest.raises(InputError, match="same channels"):
        PatchSampler([case, one_channel], (4, 4, 4), 1)
