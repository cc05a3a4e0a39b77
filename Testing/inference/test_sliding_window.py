"""sliding_window_inference against a direct forward pass and a naive reference implementation."""

from __future__ import annotations

import itertools

import pytest
import torch

from MedSegCNNLib.errors import InputError
from MedSegCNNLib.inference import importance_map, sliding_window_inference, window_starts


def _conv(dims: int) -> torch.nn.Module:
    torch.manual_seed(0)
    conv = (torch.nn.Conv2d if dims == 2 else torch.nn.Conv3d)(2, 3, kernel_size=3, padding=1)
    return conv.eval()


def _naive(inputs: torch.Tensor, network, patch, overlap: float) -> torch.Tensor:
    """Constant-weight averaging written out window by window, for comparison."""
    size = inputs.shape[2:]
    starts = [window_starts(s, p, overlap) for s, p in zip(size, patch, strict=True)]
    total = torch.zeros((inputs.shape[0], 3, *size))
    count = torch.zeros(size)
    for start in itertools.product(*starts):
        box = tuple(slice(s, s + p) for s, p in zip(start, patch, strict=True))
        with torch.no_grad():
            total[(slice(None), slice(None), *box)] += network(inputs[(slice(None), slice(None), *box)])
        count[box] += 1
    return total / count


def test_window_starts_cover_the_axis_evenly():
    assert window_starts(10, 10, 0.5) == [0]
    assert window_starts(5, 10, 0.5) == [0]
    assert window_starts(20, 10, 0.5) == [0, 5, 10]
    starts = window_starts(37, 16, 0.5)
    assert starts[0] == 0 and starts[-1] == 21
    assert max(b - a for a, b in itertools.pairwise(starts)) <= 8


@pytest.mark.parametrize("dims", [2, 3])
def test_whole_image_patch_equals_direct_forward(dims):
    network = _conv(dims)
    inputs = torch.randn((2, 2, *([9] * dims)))
    result = sliding_window_inference(inputs, network, [9] * dims, mode="gaussian")
    with torch.no_grad():
        assert torch.allclose(result, network(inputs), atol=1e-6)


@pytest.mark.parametrize(("dims", "size", "patch"), [(2, (23, 17), (8, 8)), (3, (11, 13, 9), (5, 6, 4))])
def test_constant_weights_equal_naive_averaging(dims, size, patch):
    network = _conv(dims)
    inputs = torch.randn((1, 2, *size))
    result = sliding_window_inference(inputs, network, patch, overlap=0.5, mode="constant", batch_size=3)
    assert torch.allclose(result, _naive(inputs, network, patch, 0.5), atol=1e-5)


def test_image_smaller_than_patch_is_padded_and_cropped_back():
    network = torch.nn.Identity()
    inputs = torch.randn((1, 1, 5, 7, 3))
    result = sliding_window_inference(inputs, network, (8, 8, 8))
    assert result.shape == inputs.shape
    assert torch.allclose(result, inputs, atol=1e-6)  # an identity network returns the input everywhere


def test_gaussian_importance_map_is_positive_and_peaks_at_the_centre():
    weights = importance_map((9, 16))
    assert weights.min() > 0 and weights.max() == 1.0
    assert weights[4, 7] == weights.max() or weights[4, 8] == weights.max()
    assert importance_map((9, 16)) is importance_map((9, 16))  # cached


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"patch_size": (4, 4)}, "patch_size"), ({"overlap": 1.0}, "overlap"), ({"mode": "x"}, "mode")],
)
def test_bad_arguments(kwargs, message):
    arguments = {"patch_size": (4, 4, 4), **kwargs}
    with pytest.raises(InputError, match=message):
        sliding_window_inference(torch.zeros((1, 1, 8, 8, 8)), torch.nn.Identity(), **arguments)
