"""sliding_window_inference against a direct forward pass and a naive reference implementation."""

from __future__ import annotations

import itertools
import math
import os
import threading

import pytest
import torch

from MedSegCNNLib.errors import InputError
from MedSegCNNLib.inference import importance_map, processing_order, sliding_window_inference, window_starts


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


def _random_net(dims: int, classes: int, channels: int = 2) -> torch.nn.Module:
    torch.manual_seed(classes)
    conv = torch.nn.Conv2d if dims == 2 else torch.nn.Conv3d
    return torch.nn.Sequential(
        conv(channels, 8, 3, padding=1), torch.nn.LeakyReLU(0.1), conv(8, classes, 3, padding=1)
    ).eval()


@pytest.mark.parametrize(
    ("size", "patch", "classes", "overlap"),
    [
        ((23, 17), (8, 8), 2, 0.5),
        ((31, 29), (9, 7), 5, 0.25),
        ((11, 13, 9), (5, 6, 4), 3, 0.5),
        ((17, 10, 19), (6, 6, 7), 7, 0.25),
        ((3, 5, 4), (6, 6, 6), 4, 0.5),  # smaller than the patch
        ((12, 3, 14), (5, 6, 5), 300, 0.5),  # smaller along one axis; int16 labels
    ],
)
def test_labels_output_is_the_argmax_of_the_average_output(size, patch, classes, overlap):
    network = _random_net(len(size), classes)
    inputs = torch.randn((2, 2, *size), generator=torch.Generator().manual_seed(1))
    logits = sliding_window_inference(inputs, network, patch, overlap, batch_size=3)
    labels = sliding_window_inference(inputs, network, patch, overlap, batch_size=3, output="labels")
    assert logits.shape == (2, classes, *size) and labels.shape == (2, *size)
    assert labels.dtype == (torch.uint8 if classes <= 256 else torch.int16)
    assert torch.equal(labels.long(), logits.argmax(1))


@pytest.mark.parametrize(
    ("size", "patch", "mode"), [((23, 17), (8, 8), "gaussian"), ((11, 13, 9), (5, 6, 4), "nnunet")]
)
def test_a_float16_average_is_the_float32_average_rounded(size, patch, mode):
    """Accumulated cell by cell (float32 sums, one division, then rounded): the same numbers as the full buffer."""
    network = _random_net(len(size), 4)
    inputs = torch.randn((2, 2, *size), generator=torch.Generator().manual_seed(2))
    full = sliding_window_inference(inputs, network, patch, 0.5, mode=mode, batch_size=3)
    half = sliding_window_inference(inputs, network, patch, 0.5, mode=mode, batch_size=3, average_dtype=torch.float16)
    assert half.dtype == torch.float16 and half.shape == full.shape
    assert torch.equal(half, full.half())


def test_window_batches_mix_samples_and_stay_equal_to_one_at_a_time():
    network = _random_net(2, 3)
    inputs = torch.randn((3, 2, 20, 20))
    together = sliding_window_inference(inputs, network, (8, 8), batch_size=7)
    alone = torch.cat([sliding_window_inference(sample[None], network, (8, 8), batch_size=1) for sample in inputs])
    assert torch.allclose(together, alone, atol=1e-6)


def test_bf16_agrees_with_fp32_and_fp16_is_refused_on_the_cpu():
    network = _random_net(3, 4)
    inputs = torch.randn((1, 2, 20, 24, 16), generator=torch.Generator().manual_seed(2))
    fp32 = sliding_window_inference(inputs, network, (8, 8, 8))
    bf16 = sliding_window_inference(inputs, network, (8, 8, 8), precision="bf16")
    assert bf16.dtype == torch.float32 and torch.isfinite(bf16).all()
    assert (bf16.argmax(1) == fp32.argmax(1)).float().mean() >= 0.99
    assert not torch.equal(bf16, fp32)  # autocast did take effect
    with pytest.raises(InputError, match="fp16"):
        sliding_window_inference(inputs, network, (8, 8, 8), precision="fp16")
    with pytest.raises(InputError, match="precision"):
        sliding_window_inference(inputs, network, (8, 8, 8), precision="int8")


def test_accumulation_device_and_progress():
    network = _random_net(2, 3)
    inputs = torch.randn((2, 2, 30, 20))
    calls = []
    result = sliding_window_inference(
        inputs, network, (8, 8), batch_size=5, accumulation_device="cpu", progress=lambda *a: calls.append(a)
    )
    assert result.device.type == "cpu"
    assert torch.allclose(result, sliding_window_inference(inputs, network, (8, 8), channels_last=False), atol=1e-6)
    total = 2 * len(window_starts(30, 8, 0.5)) * len(window_starts(20, 8, 0.5))
    assert [t for _, t in calls] == [total] * len(calls)
    assert [d for d, _ in calls] == sorted({d for d, _ in calls}) and calls[-1][0] == total


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_network_with_cpu_inputs_and_accumulation():
    network = _random_net(3, 3).cuda()
    inputs = torch.randn((1, 2, 20, 18, 22))
    result = sliding_window_inference(inputs, network, (8, 8, 8), output="labels", precision="fp16")
    assert result.device.type == "cpu" and result.shape == (1, 20, 18, 22)
    reference = sliding_window_inference(inputs, network.cpu(), (8, 8, 8)).argmax(1)
    assert (result.long() == reference).float().mean() > 0.99


def test_processing_order_puts_the_largest_axis_outermost():
    grid = list(range(0, 193, 32))
    assert processing_order((160, 256, 256), (64, 64, 64), [[0, 32, 64, 96], grid, grid])[0] in (1, 2)
    assert processing_order((20, 300, 40), (16, 16, 16), [[0, 4], list(range(0, 285, 8)), [0, 8, 16, 24]])[0] == 1


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:  # noqa: PTH123
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs Linux /proc")  # noqa: PTH110
def test_labels_output_needs_a_fraction_of_the_full_buffer():
    """160x256x256 voxels, 64 classes, 64^3 patches: the average output alone is 2.7 GB (64 x 10.5 M x 4 bytes)."""
    classes, size, patch = 64, (160, 256, 256), (64, 64, 64)
    full = classes * math.prod(size) * 4
    network = torch.nn.Conv3d(1, classes, 1).eval()
    inputs = torch.randn((1, 1, *size))
    peak, done = [_rss_bytes()], threading.Event()

    def sample() -> None:
        while not done.wait(0.002):
            peak.append(_rss_bytes())

    sampler = threading.Thread(target=sample)
    baseline = _rss_bytes()
    sampler.start()
    try:
        labels = sliding_window_inference(inputs, network, patch, batch_size=1, output="labels")
    finally:
        done.set()
        sampler.join()
    growth = max(peak) - baseline
    # Stated bound (docstring): K x (pending cells + 2 windows) floats; pending cells here 1.64 M voxels.
    bound = classes * 4 * (1_640_000 + 2 * math.prod(patch)) + labels.numel()
    # Generous margin for allocator slack and sampling: measured 540-700 MiB here, the full buffer is 2560 MiB.
    assert growth < 1.5 * bound and growth < 0.4 * full, (growth / 2**20, bound / 2**20, full / 2**20)
    assert labels.shape == (1, *size) and labels.dtype == torch.uint8
    with torch.no_grad():  # spot check one slab against the direct (1x1 convolution) prediction
        assert torch.equal(labels[0, 70:74].long(), network(inputs[:, :, 70:74]).argmax(1)[0])


def test_finished_cells_buffers_are_kept_only_for_cells_still_to_start(monkeypatch: pytest.MonkeyPatch):
    """The cell accumulator reuses a finished cell's buffers for a later cell of the same shape, and lets them go
    when no such cell is left: at the end it holds nothing, and on the way never more than the live cells' peak."""
    from MedSegCNNLib.inference import sliding_window

    held: list[tuple[int, int]] = []  # (elements of live cells, of live and kept cells) at each cell's start and end
    accumulator = sliding_window._CellAccumulator
    original_add, original_buffers = accumulator.add, accumulator._buffers

    def record(self, starting: tuple[torch.Tensor, torch.Tensor] | None = None) -> None:
        live = sum(a.numel() + b.numel() for a, b in (*self.live.values(), *([starting] if starting else [])))
        kept = sum(a.numel() + b.numel() for buffers in self.free.values() for a, b in buffers)
        held.append((live, live + kept))

    def add(self, *args, **kwargs):
        original_add(self, *args, **kwargs)
        record(self)

    def buffers(self, *args, **kwargs):
        started = original_buffers(self, *args, **kwargs)
        record(self, started)
        return started

    monkeypatch.setattr(accumulator, "add", add)
    monkeypatch.setattr(accumulator, "_buffers", buffers)
    network = torch.nn.Conv3d(1, 4, 1).eval()
    inputs = torch.randn((1, 1, 37, 29, 50))
    average = sliding_window_inference(inputs, network, (16, 16, 16), output="average", average_dtype=torch.float16)
    assert average.shape == (1, 4, 37, 29, 50)
    assert held[-1] == (0, 0)
    assert max(total for _, total in held) <= max(live for live, _ in held)
    assert any(kept > live for live, kept in held)  # buffers were kept for reuse
