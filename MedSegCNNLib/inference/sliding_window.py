"""Sliding-window inference: predict a whole image with a network trained on patches.

Windows of ``patch_size`` tile the image with the given ``overlap``; what the network returns for them
(logits or probabilities: the caller's choice) is weighted by an importance map ``m`` (Gaussian, σ =
``sigma_scale`` × patch size per axis, or constant) and averaged where windows overlap:
``out(v) = Σ_w m_w(v)·f_w(v) / Σ_w m_w(v)``; ``"nnunet"`` is nnU-Net's Gaussian (centred on voxel
``size // 2``, cut at 4σ, for imported nnU-Net models). Images smaller than the patch are padded and the padding is
cropped from the result.

Two outputs: ``"average"``, the (N, K, *S) float32 average, and ``"labels"``, its (N, *S) argmax computed
without the full (K, *S) buffer. For ``"labels"`` the image is cut into *cells* by the window borders (along
each axis, the breakpoints are every window start and end); a cell is covered by the same windows throughout.
Windows are processed in a fixed order (lexicographic over the spatial axes, the axis order chosen to keep
the fewest cells pending); a cell's float32 accumulator is created when its first window is stitched and is
divided, turned into labels and freed as soon as its last window is. Both outputs perform the same float
operations in the same order per voxel (weights multiplied into a copy of the window's values, then one
addition per window; one division at the end), so their argmax is identical, not only close.

Performance (CPU, 2 cores, measured with ``Testing/Benchmarks/bench_inference.py``): window batches are given
to the network in channels-last layout, which oneDNN convolutions run faster; window values are weighted into
one reusable buffer and added with in-place slice additions (no per-window temporaries); the normaliser is
computed once per image size, not per sample; windows of several samples share batches.
"""

from __future__ import annotations

import collections
import functools
import itertools
import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError
from ..image.labels import label_dtype
from ..runtime import PRECISIONS, autocast

MODES = ("gaussian", "constant", "nnunet")
OUTPUTS = ("average", "labels")

Progress = Callable[[int, int], None]


def window_starts(size: int, patch: int, overlap: float) -> list[int]:
    """Start indices of windows along one axis: evenly spread, first at 0 and last at ``size - patch``.

    The number of windows is the smallest that keeps the step at most ``patch × (1 - overlap)``.
    """
    if size <= patch:
        return [0]
    step = max(patch * (1.0 - overlap), 1.0)
    count = math.ceil((size - patch) / step) + 1
    return sorted({round(i * (size - patch) / (count - 1)) for i in range(count)})


def pad_to_patch(inputs: torch.Tensor, patch: Sequence[int]) -> tuple[torch.Tensor, list[int]]:
    """``inputs`` (..., *S) zero-padded to at least ``patch`` on every spatial axis, centred (the extra voxel of an
    odd amount after), and the padding added per axis."""
    size = inputs.shape[-len(patch) :]
    padding = [max(p - s, 0) for s, p in zip(size, patch, strict=True)]
    if any(padding):
        inputs = F.pad(inputs, [amount for p in reversed(padding) for amount in (p // 2, p - p // 2)])
    return inputs, padding


@functools.lru_cache(maxsize=8)
def _importance_map(patch_size: tuple[int, ...], mode: str, sigma_scale: float) -> torch.Tensor:
    if mode == "constant":
        return torch.ones(patch_size)
    axes = []
    for size in patch_size:
        sigma = max(size * sigma_scale, 1e-3)
        if mode == "nnunet":  # SciPy's gaussian_filter of a delta at size // 2: zero beyond 4σ
            coordinates = np.arange(size) - size // 2
            axis = np.exp(-0.5 * (coordinates / sigma) ** 2)
            axis[np.abs(coordinates) > int(4 * sigma + 0.5)] = 0.0
        else:
            coordinates = np.arange(size) - (size - 1) / 2
            axis = np.exp(-0.5 * (coordinates / sigma) ** 2)
        axes.append(axis)
    weights = functools.reduce(np.multiply.outer, axes)
    weights /= weights.max()
    # Clamp so that no voxel gets (almost) zero weight: border voxels of a single window still count.
    weights = np.maximum(weights, weights[weights > 0].min(), dtype=np.float64)
    return torch.from_numpy(weights.astype(np.float32))


def importance_map(patch_size: Sequence[int], mode: str = "gaussian", sigma_scale: float = 0.125) -> torch.Tensor:
    """The weight of each voxel of a window (max 1, min > 0), float32 on the CPU, cached per patch size."""
    if mode not in MODES:
        raise InputError(f"mode must be one of {', '.join(MODES)}, got {mode!r}.")
    return _importance_map(tuple(int(p) for p in patch_size), mode, float(sigma_scale))


@functools.lru_cache(maxsize=8)
def _importance_map_on(patch_size: tuple[int, ...], mode: str, sigma_scale: float, device: torch.device):
    return importance_map(patch_size, mode, sigma_scale).to(device)


def labels_dtype(classes: int) -> torch.dtype:
    """The integer type of ``output="labels"`` for ``classes`` channels (:func:`~MedSegCNNLib.image.labels.label_dtype`
    of the largest label, ``classes - 1``)."""
    return getattr(torch, label_dtype(classes - 1).name)


def processing_order(size: Sequence[int], patch: Sequence[int], starts: Sequence[Sequence[int]]) -> tuple[int, ...]:
    """Spatial axes from outermost to innermost in the window loop: the order with the fewest pending voxels.

    With axes (o_0, ..., o_{d-1}), sizes S, patch p and mean step s (s = p for a single window), the cells
    waiting for later windows cover about ``Σ_l (Π_{i<l} s_{o_i}) (p_{o_l} - s_{o_l}) Π_{i>l} S_{o_i}``
    voxels plus one window: the outermost axis should be the one whose cross-section is smallest.
    """
    steps = [(s - p) / (len(a) - 1) if len(a) > 1 else p for s, p, a in zip(size, patch, starts, strict=True)]

    def pending(order: tuple[int, ...]) -> float:
        total = math.prod(patch)
        for level, axis in enumerate(order):
            before = math.prod(steps[a] for a in order[:level])
            after = math.prod(size[a] for a in order[level + 1 :])
            total += before * (patch[axis] - steps[axis]) * after
        return total

    return min(itertools.permutations(range(len(size))), key=pending)


def _windows(starts: Sequence[Sequence[int]], order: Sequence[int]) -> list[tuple[int, ...]]:
    """Window index tuples (per axis, array order) in processing order."""
    result = []
    for permuted in itertools.product(*(range(len(starts[a])) for a in order)):
        index = [0] * len(order)
        for axis, value in zip(order, permuted, strict=True):
            index[axis] = value
        result.append(tuple(index))
    return result


class _AxisCells:
    """Cells of one axis: the intervals between consecutive window borders, and which windows cover them."""

    def __init__(self, size: int, patch: int, starts: Sequence[int]) -> None:
        self.bounds = sorted({0, size, *starts, *(s + patch for s in starts)})
        cells = range(len(self.bounds) - 1)
        covering = [
            [j for j, s in enumerate(starts) if s <= self.bounds[k] and self.bounds[k + 1] <= s + patch] for k in cells
        ]
        self.last = [max(windows) for windows in covering]  # the cell's last covering window
        self.of_window = [[k for k in cells if j in covering[k]] for j in range(len(starts))]


def _box(start: Sequence[int], patch: Sequence[int]) -> tuple[slice, ...]:
    return tuple(slice(s, s + p) for s, p in zip(start, patch, strict=True))


class _FullAccumulator:
    """``output="average"``: one (N, K, *S) buffer, divided by the normaliser at the end."""

    def __init__(self, samples: int, size: tuple[int, ...], boxes: list[tuple[slice, ...]], weights, device) -> None:
        self.samples, self.size, self.device = samples, size, device
        self.normaliser = torch.zeros(size, device=device)
        for box in boxes:
            self.normaliser[box].add_(weights)
        self.output: torch.Tensor | None = None
        self.weights = weights
        self.scratch: torch.Tensor | None = None

    def add(
        self, sample: int, index: tuple[int, ...], box: tuple[slice, ...], values: torch.Tensor, *, weighted: bool
    ) -> None:
        if self.output is None:
            self.output = torch.zeros((self.samples, values.shape[0], *self.size), device=self.device)
        if not weighted:  # weighted into one reused buffer
            if self.scratch is None:
                self.scratch = torch.empty(values.shape, device=self.device)
            values = torch.mul(values, self.weights, out=self.scratch)
        self.output[(sample, slice(None), *box)].add_(values)

    def result(self) -> torch.Tensor:
        return self.output.div_(self.normaliser)


class _CellAccumulator:
    """``output="labels"``: float32 accumulators per live cell; finished cells become labels. With an
    ``average_dtype``, finished cells are written, divided, into an (N, K, *S) average of that type instead.

    The buffers of a finished cell are kept for a later cell of the same shape (most cells share a few shapes), so
    that the allocator is not churned, but only while cells of that shape are still to start and while the live and
    kept buffers together stay within the most the live cells have held so far: kept buffers never raise the peak.
    """

    def __init__(self, samples: int, size: tuple[int, ...], patch, starts, weights, device, average_dtype=None) -> None:
        self.samples, self.size, self.patch, self.starts, self.device = samples, size, patch, starts, device
        self.average_dtype = average_dtype
        self.average: torch.Tensor | None = None
        self.axes = [_AxisCells(s, p, a) for s, p, a in zip(size, patch, starts, strict=True)]
        self.weights = weights
        self.live: dict[tuple[int, ...], tuple[torch.Tensor, torch.Tensor]] = {}
        self.free: dict[tuple[int, ...], list[tuple[torch.Tensor, torch.Tensor]]] = {}
        self.scratch: dict[tuple[int, ...], torch.Tensor] = {}
        self.labels: torch.Tensor | None = None
        self.live_elements = self.kept_elements = self.peak_live_elements = 0
        self.to_start = collections.Counter(  # cell shape -> cells of that shape not started yet
            tuple(axis.bounds[k + 1] - axis.bounds[k] for axis, k in zip(self.axes, cell, strict=True))
            for cell in itertools.product(*(range(len(axis.bounds) - 1) for axis in self.axes))
            for _ in range(samples)
        )

    def _buffers(self, channels: int, shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        """Zeroed (total, normaliser) accumulators of a cell of ``shape``, reusing a finished cell's."""
        free = self.free.get(shape)
        if free:
            total, normaliser = free.pop()
            self.kept_elements -= self._elements((total, normaliser))
            return total.zero_(), normaliser.zero_()
        needed = (channels + 1) * math.prod(shape)
        peak = max(self.peak_live_elements, self.live_elements + needed)
        for kept in self.free.values():  # let kept buffers go where they would raise the peak
            while kept and self.live_elements + self.kept_elements + needed > peak:
                self.kept_elements -= self._elements(kept.pop())
        return torch.zeros((channels, *shape), device=self.device), torch.zeros(shape, device=self.device)

    @staticmethod
    def _elements(buffers: tuple[torch.Tensor, torch.Tensor]) -> int:
        return buffers[0].numel() + buffers[1].numel()

    def add(
        self, sample: int, index: tuple[int, ...], box: tuple[slice, ...], values: torch.Tensor, *, weighted: bool
    ) -> None:
        if self.average_dtype is not None and self.average is None:
            shape = (self.samples, values.shape[0], *self.size)
            self.average = torch.empty(shape, dtype=self.average_dtype, device=self.device)  # every cell is written
        elif self.average_dtype is None and self.labels is None:
            self.labels = torch.empty(
                (self.samples, *self.size), dtype=labels_dtype(values.shape[0]), device=self.device
            )
        cells = itertools.product(*(axis.of_window[j] for axis, j in zip(self.axes, index, strict=True)))
        for cell in cells:
            region = [(axis.bounds[k], axis.bounds[k + 1]) for axis, k in zip(self.axes, cell, strict=True)]
            inside = tuple(slice(lo - b.start, hi - b.start) for (lo, hi), b in zip(region, box, strict=True))
            key = (sample, *cell)
            shape = tuple(hi - lo for lo, hi in region)
            if key not in self.live:
                self.live[key] = self._buffers(values.shape[0], shape)
                self.to_start[shape] -= 1
                self.live_elements += self._elements(self.live[key])
                self.peak_live_elements = max(self.peak_live_elements, self.live_elements)
            total, normaliser = self.live[key]
            piece = values[(slice(None), *inside)]
            if not weighted:  # weighted cell by cell: no window-sized buffer
                scratch = self.scratch.get(shape)
                if scratch is None:
                    scratch = self.scratch[shape] = torch.empty(total.shape, device=self.device)
                piece = torch.mul(piece, self.weights[inside], out=scratch)
            total.add_(piece)
            normaliser.add_(self.weights[inside])
            if all(axis.last[k] == j for axis, k, j in zip(self.axes, cell, index, strict=True)):
                del self.live[key]
                target = (sample, *(slice(lo, hi) for lo, hi in region))
                if self.average is not None:
                    self.average[(sample, slice(None), *target[1:])] = total.div_(normaliser)
                else:  # equals argmax(0), ties to the first maximum; argmax over the leading axis is a slower kernel
                    self.labels[target] = torch.max(total.div_(normaliser), 0).indices
                elements = self._elements((total, normaliser))
                self.live_elements -= elements
                free = self.free.setdefault(shape, [])
                fits = self.live_elements + self.kept_elements + elements <= self.peak_live_elements
                if len(free) < self.to_start[shape] and fits:
                    free.append((total, normaliser))
                    self.kept_elements += elements

    def result(self) -> torch.Tensor:
        return self.average if self.average is not None else self.labels


def _network_device(network: Callable, default: torch.device) -> torch.device:
    if isinstance(network, torch.nn.Module):
        for tensor in itertools.chain(network.parameters(), network.buffers()):
            return tensor.device
    return default


def _check(inputs: torch.Tensor, patch: tuple[int, ...], overlap, batch_size, output, precision) -> None:
    spatial = inputs.ndim - 2
    if spatial < 1 or len(patch) != spatial or any(p < 1 for p in patch):
        raise InputError(f"patch_size must have {spatial} positive sizes for inputs of shape {tuple(inputs.shape)}.")
    if not 0 <= overlap < 1:
        raise InputError(f"overlap must be in [0, 1), got {overlap}.")
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}.")
    if output not in OUTPUTS:
        raise InputError(f"output must be one of {', '.join(OUTPUTS)}, got {output!r}.")
    if precision not in PRECISIONS or precision == "auto":
        concrete = [choice for choice in PRECISIONS if choice != "auto"]
        raise InputError(f"precision must be one of {', '.join(concrete)}, got {precision!r}.")


@torch.inference_mode()
def sliding_window_inference(
    inputs: torch.Tensor,
    network: Callable[[torch.Tensor], torch.Tensor],
    patch_size: Sequence[int],
    overlap: float = 0.5,
    batch_size: int = 4,
    mode: str = "gaussian",
    sigma_scale: float = 0.125,
    *,
    output: str = "average",
    precision: str = "fp32",
    accumulation_device: torch.device | str | None = None,
    channels_last: bool = True,
    progress: Progress | None = None,
    average_dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Weighted average of ``network`` over the whole of ``inputs`` (N, C, *S), 2D or 3D.

    - ``network``: any callable mapping (B, C, *patch) to (B, K, *patch) logits or probabilities (only their
      weighted average is taken). Windows go to the device of its first parameter (the device of ``inputs``
      for other callables), ``batch_size`` windows at a time, drawn from all N samples.
    - ``output="average"``: (N, K, *S) float32 weighted average of the network's outputs (mean probabilities
      when ``network`` is a :class:`~.predictor.Predictor`). ``"labels"``: (N, *S) argmax of that average, uint8
      (int16 above 256 classes), identical to ``argmax`` of the average output. Peak memory of the
      accumulation, in float32 values: average ``(N·K + 1)·|S|``; labels ``K·V`` plus the labels themselves,
      where V is the voxels of the cells pending at once, at most ``p_0·Π_{i>0} S_i`` (a slab one patch
      thick across the outermost axis of :func:`processing_order`) and typically, with overlap 0.5, about half
      of that (e.g. 160×256×256 with 64³ patches: V = 1.6 M voxels = 16% of |S|). Both add the network's
      output for one batch (``batch_size·K·Π p``); average one weighted window (``K·Π p``), labels one
      weighted cell per cell shape (windows are weighted cell by cell).
    - ``precision``: ``"fp32"`` (no autocast of its own: an enclosing autocast still applies), ``"bf16"`` or
      ``"fp16"`` (CUDA/MPS only): the network runs under ``torch.autocast`` of that type; accumulation is
      always float32.
    - ``accumulation_device``: where the output and the accumulators live (default: the device of
      ``inputs``); e.g. ``"cpu"`` to stitch a huge volume in host memory while the network runs on a GPU.
    - ``channels_last``: give window batches to the network in channels-last (3D) layout.
    - ``progress``: called after every batch with (windows done, windows in total).
    - ``average_dtype``: the type of the ``"average"`` output. Other than float32 (e.g. float16: half the
      memory), it is accumulated cell by cell as for ``"labels"`` (float32 sums, one division) and each finished
      cell is rounded into the output, so memory is ``K·V`` float32 plus the output.
    """
    patch = tuple(int(p) for p in patch_size)
    _check(inputs, patch, overlap, batch_size, output, precision)
    accumulation = torch.device(accumulation_device) if accumulation_device is not None else inputs.device
    compute = _network_device(network, inputs.device)
    if precision == "fp16" and compute.type == "cpu":
        raise InputError('precision "fp16" needs a CUDA or MPS device; on the CPU use "bf16" or "fp32".')
    size = tuple(inputs.shape[2:])
    inputs, padding = pad_to_patch(inputs, patch)
    padded = tuple(inputs.shape[2:])
    starts = [window_starts(s, p, overlap) for s, p in zip(padded, patch, strict=True)]
    windows = _windows(starts, processing_order(padded, patch, starts))
    boxes = {index: _box([a[j] for a, j in zip(starts, index, strict=True)], patch) for index in windows}
    key = (patch, mode, float(sigma_scale))
    weights = _importance_map_on(*key, accumulation)
    weights_compute = _importance_map_on(*key, compute)
    samples = inputs.shape[0]
    if output == "average" and average_dtype == torch.float32:
        sink = _FullAccumulator(samples, padded, list(boxes.values()), weights, accumulation)
    else:
        rounded = average_dtype if output == "average" else None
        sink = _CellAccumulator(samples, padded, patch, starts, weights, accumulation, rounded)
    memory_format = {4: torch.channels_last, 5: torch.channels_last_3d}.get(inputs.ndim) if channels_last else None
    items = [(sample, index) for sample in range(samples) for index in windows]
    for first in range(0, len(items), batch_size):
        chunk = items[first : first + batch_size]
        batch = torch.stack([inputs[(sample, slice(None), *boxes[index])] for sample, index in chunk]).to(compute)
        if memory_format is not None:
            batch = batch.contiguous(memory_format=memory_format)
        with autocast(precision, compute):
            values = network(batch)
        weighted = compute != accumulation  # then weighted where the network runs, before the transfer
        if weighted:
            values = (values.float() * weights_compute).to(accumulation)
        for (sample, index), window in zip(chunk, values, strict=True):
            sink.add(sample, index, boxes[index], window, weighted=weighted)
        del batch, values, window  # freed before the next batch's outputs exist: one batch's outputs at a time
        if progress is not None:
            progress(first + len(chunk), len(items))
    result = sink.result()
    if not any(padding):
        return result
    crop = tuple(slice(p // 2, p // 2 + s) for s, p in zip(size, padding, strict=True))
    leading = (slice(None),) * (result.ndim - len(size))
    return result[(*leading, *crop)].contiguous()


def predict_image(
    image: torch.Tensor,
    network: Callable[[torch.Tensor], torch.Tensor],
    patch_size: Sequence[int],
    *,
    overlap: float = 0.5,
    batch_size: int = 4,
    mode: str = "gaussian",
    output: str = "average",
    precision: str = "fp32",
    accumulation_device: torch.device | str | None = None,
    channels_last: bool = True,
    progress: Progress | None = None,
    average_dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """:func:`sliding_window_inference` of one (C, *S) image: (K, *S) for ``"average"``, (*S) for ``"labels"``.

    A 2D model (two patch sizes) on a (C, z, y, x) volume runs slice by slice along z: the slices become the
    batch. The other arguments are those of :func:`sliding_window_inference`.
    """
    slice_wise = len(patch_size) == 2 and image.ndim == 4
    batch = image.permute(1, 0, 2, 3) if slice_wise else image[None]
    result = sliding_window_inference(
        batch, network, patch_size, overlap, batch_size, mode, output=output, precision=precision,
        accumulation_device=accumulation_device, channels_last=channels_last, progress=progress,
        average_dtype=average_dtype,
    )  # fmt: skip
    if not slice_wise:
        return result[0]
    return result.permute(1, 0, 2, 3) if output == "average" else result  # (z, K, y, x) -> (K, z, y, x)
