"""Sliding-window inference: predict a whole image with a network trained on patches.

Windows of ``patch_size`` tile the image with the given ``overlap``; their logits are weighted by an
importance map (Gaussian, σ = ``sigma_scale`` × patch size per axis, or constant) and averaged where
windows overlap: ``out(v) = Σ_w m_w(v)·f_w(v) / Σ_w m_w(v)``. Images smaller than the patch are padded
and the padding is cropped from the result.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError

MODES = ("gaussian", "constant")


def window_starts(size: int, patch: int, overlap: float) -> list[int]:
    """Start indices of windows along one axis: evenly spread, first at 0 and last at ``size - patch``.

    The number of windows is the smallest that keeps the step at most ``patch × (1 - overlap)``.
    """
    if size <= patch:
        return [0]
    step = max(patch * (1.0 - overlap), 1.0)
    count = math.ceil((size - patch) / step) + 1
    return sorted({round(i * (size - patch) / (count - 1)) for i in range(count)})


@functools.lru_cache(maxsize=8)
def _importance_map(patch_size: tuple[int, ...], mode: str, sigma_scale: float) -> torch.Tensor:
    if mode == "constant":
        return torch.ones(patch_size)
    axes = []
    for size in patch_size:
        coordinates = np.arange(size) - (size - 1) / 2
        sigma = max(size * sigma_scale, 1e-3)
        axes.append(np.exp(-0.5 * (coordinates / sigma) ** 2))
    weights = functools.reduce(np.multiply.outer, axes)
    weights /= weights.max()
    # Clamp so that no voxel gets (almost) zero weight: border voxels of a single window still count.
    weights = np.maximum(weights, weights[weights > 0].min(), dtype=np.float64)
    return torch.from_numpy(weights.astype(np.float32))


def importance_map(patch_size: Sequence[int], mode: str = "gaussian", sigma_scale: float = 0.125) -> torch.Tensor:
    """The weight of each voxel of a window (max 1, min > 0), cached per patch size."""
    if mode not in MODES:
        raise InputError(f"mode must be one of {', '.join(MODES)}, got {mode!r}.")
    return _importance_map(tuple(int(p) for p in patch_size), mode, float(sigma_scale))


@torch.inference_mode()
def sliding_window_inference(
    inputs: torch.Tensor,
    network: Callable[[torch.Tensor], torch.Tensor],
    patch_size: Sequence[int],
    overlap: float = 0.5,
    batch_size: int = 4,
    mode: str = "gaussian",
    sigma_scale: float = 0.125,
) -> torch.Tensor:
    """Logits of ``network`` over the whole of ``inputs`` (N, C, *S), as (N, K, *S) float32.

    Works for 2D and 3D and any network mapping (B, C, *patch) to (B, K, *patch). Windows are batched
    ``batch_size`` at a time on the device of ``inputs``.
    """
    spatial = inputs.ndim - 2
    patch = tuple(int(p) for p in patch_size)
    if len(patch) != spatial or any(p < 1 for p in patch):
        raise InputError(f"patch_size must have {spatial} positive sizes for inputs of shape {tuple(inputs.shape)}.")
    if not 0 <= overlap < 1:
        raise InputError(f"overlap must be in [0, 1), got {overlap}.")
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}.")
    size = tuple(inputs.shape[2:])
    padding = [max(p - s, 0) for s, p in zip(size, patch, strict=True)]
    if any(padding):
        pad = [amount for p in reversed(padding) for amount in (p // 2, p - p // 2)]
        inputs = F.pad(inputs, pad)
    padded = tuple(inputs.shape[2:])
    weights = importance_map(patch, mode, sigma_scale).to(inputs.device)
    starts = list(itertools.product(*(window_starts(s, p, overlap) for s, p in zip(padded, patch, strict=True))))
    results = []
    for sample in inputs:
        output: torch.Tensor | None = None
        normaliser = torch.zeros(padded, device=inputs.device)
        for first in range(0, len(starts), batch_size):
            chunk = starts[first : first + batch_size]
            boxes = [tuple(slice(s, s + p) for s, p in zip(start, patch, strict=True)) for start in chunk]
            logits = network(torch.stack([sample[(slice(None), *box)] for box in boxes])).float()
            if output is None:
                output = torch.zeros((logits.shape[1], *padded), device=inputs.device)
            for box, window in zip(boxes, logits, strict=True):
                output[(slice(None), *box)] += window * weights
                normaliser[box] += weights
        output /= normaliser
        crop = tuple(slice(p // 2, p // 2 + s) for s, p in zip(size, padding, strict=True))
        results.append(output[(slice(None), *crop)])
    return torch.stack(results)
