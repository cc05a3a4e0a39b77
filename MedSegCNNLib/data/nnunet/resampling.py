"""nnU-Net's resampling of images and logits, reproduced without scipy or scikit-image.

nnU-Net's default (``resample_data_or_seg_to_shape``) resizes each channel with scikit-image's ``resize``
(``mode="edge"``, no anti-aliasing, output clipped to the input's range), which is SciPy's ``zoom`` with
``grid_mode=True``: output voxel ``j`` of ``m`` along an axis of ``n`` samples the input at
``x = (j + 0.5)·n/m − 0.5``. Order 0 takes the nearest sample, order 1 interpolates linearly, order 3 evaluates
the cubic B-spline through the samples (coefficients from the exact mirror-boundary prefilter of the input
extended by 12 edge voxels, as SciPy does), all in float64. A zoom is separable, so it runs one axis at a time
(padding, prefilter and sampling of an axis commute with those of the others), the most shrinking axis first, and
each axis in slabs across another axis of at most :data:`SLAB_ELEMENTS` voxels: the float64 temporaries of a
512x512x300 CT stay a few hundred MiB instead of several GiB. When one axis is anisotropic
(:func:`~.plan.anisotropic_axis`), the other two are resized per slice with ``order`` and that axis with
``order_z``.

``resample_torch_fornnunet`` (newer plans) is torch's linear ``interpolate`` (``align_corners=False``), with
``nearest-exact`` along an anisotropic axis; it is reproduced with the same torch calls, which also compute the
default function's order 1 with ``order_z`` 0 (the logits' resampling): the same interpolation, in float32.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .plan import Resampling, anisotropic_axis

#: SciPy pads the input by this many edge voxels before its spline prefilter (mode "nearest").
_SPLINE_PADDING = 12
_CUBIC_POLE = math.sqrt(3.0) - 2.0
SLAB_ELEMENTS = 1 << 23
"""Most voxels (8 Mi, 64 MiB in float64) in one slab of one axis's resampling pass."""


def new_shape(shape: Sequence[int], current: Sequence[float], new: Sequence[float]) -> tuple[int, ...]:
    """nnU-Net's ``compute_new_shape``: ``round(spacing / new spacing × size)`` per axis."""
    return tuple(round(c / n * s) for s, c, n in zip(shape, current, new, strict=True))


def resample(
    data: np.ndarray, shape: Sequence[int], current: Sequence[float], new: Sequence[float], how: Resampling
) -> np.ndarray:
    """``data`` (C, z, y, x) resized to ``shape`` as nnU-Net's resampling function ``how`` does, from spacing
    ``current`` to ``new`` (which decide the anisotropic axis); float32. Unchanged (not copied) when the shape
    is already ``shape``."""
    shape = tuple(int(s) for s in shape)
    if tuple(data.shape[1:]) == shape:
        return data
    axis = anisotropic_axis(current, new, how.force_separate_z)
    if how.function == "resample_torch_fornnunet" or (how.order == 1 and how.order_z == 0):
        # linear in grid mode with edge clamping, nearest across an anisotropic axis: torch's interpolate computes
        # the same, in float32 and without full-size temporaries (the logits of big images, label by label)
        return _resample_torch(data, shape, axis)
    result = np.empty((data.shape[0], *shape), dtype=np.float32)
    for channel in range(data.shape[0]):
        result[channel] = _resize_channel(data[channel], shape, axis, how.order, how.order_z)
    return result


def _resize_channel(channel: np.ndarray, shape: tuple[int, ...], axis: int | None, order: int, order_z: int):
    if axis is None:
        return _zoom(channel, shape, range(channel.ndim), order, clip_axes=None)
    in_plane = [a for a in range(channel.ndim) if a != axis]
    resized = _zoom(channel, shape, in_plane, order, clip_axes=in_plane)  # scikit-image resize of each slice
    if resized.shape[axis] == shape[axis]:
        return resized
    return _zoom(resized, shape, [axis], order_z, clip_axes=None)


def _zoom(
    array: np.ndarray,
    shape: Sequence[int],
    axes: Sequence[int] | range,
    order: int,
    *,
    clip_axes: Sequence[int] | None,
) -> np.ndarray:
    """``array`` resized along ``axes`` to ``shape`` (grid mode, edge extension) in float64, then clipped to the
    input's range: over the whole array when ``clip_axes`` is None, else per slice across the other axes
    (scikit-image's clipping of each 2D resize). Order 0 is never clipped (it cannot leave the range)."""
    axes = [a for a in axes if array.shape[a] != shape[a]]
    if not axes:
        return array.astype(np.float64, copy=False)
    if order > 0:
        if clip_axes is None:
            low, high = np.float64(array.min()), np.float64(array.max())
        else:
            others = tuple(clip_axes)
            low = array.min(axis=others, keepdims=True).astype(np.float64)
            high = array.max(axis=others, keepdims=True).astype(np.float64)
    result = array
    for a in sorted(axes, key=lambda a: shape[a] / array.shape[a]):  # the most shrinking first: smaller passes after
        result = _zoom_axis(result, a, shape[a], order)
    if order > 0:
        np.clip(result, low, high, out=result)
    return result


def _zoom_axis(array: np.ndarray, axis: int, target: int, order: int) -> np.ndarray:
    """``array`` resized along ``axis`` to ``target`` samples, float64, in slabs across the longest other axis."""
    shape = list(array.shape)
    shape[axis] = target
    result = np.empty(shape, dtype=np.float64)
    across = max((a for a in range(array.ndim) if a != axis), key=lambda a: array.shape[a])
    padded = array.shape[axis] + (2 * _SPLINE_PADDING if order == 3 else 0)
    per_slab = max(1, SLAB_ELEMENTS // max(1, array.size // array.shape[across] // array.shape[axis] * padded))
    for start in range(0, array.shape[across], per_slab):
        part = [slice(None)] * array.ndim
        part[across] = slice(start, start + per_slab)
        slab = array[tuple(part)].astype(np.float64)
        if order == 3:
            widths = [(_SPLINE_PADDING,) * 2 if a == axis else (0, 0) for a in range(array.ndim)]
            slab = _cubic_coefficients(np.pad(slab, widths, mode="edge"), axis)
        result[tuple(part)] = _resize_axis(slab, axis, array.shape[axis], target, order)
    return result


def _cubic_coefficients(array: np.ndarray, axis: int) -> np.ndarray:
    """Cubic B-spline coefficients along ``axis`` with mirror boundaries (the exact causal/anticausal recursion
    of Unser's prefilter), float64."""
    c = np.moveaxis(array, axis, 0) * 6.0  # the filter's gain (1 - z)(1 - 1/z) for the cubic pole
    n = c.shape[0]
    z = _CUBIC_POLE
    if n == 1:
        return np.moveaxis(c / 6.0, 0, axis)
    # causal initial value for a mirror-symmetric extension
    z_n1 = z ** (n - 1)
    first = c[0] + z_n1 * c[n - 1]
    power = z
    for i in range(1, n - 1):
        first = first + power * (c[i] + z_n1 * c[n - 1 - i])
        power *= z
    c[0] = first / (1.0 - z_n1 * z_n1)
    for i in range(1, n):
        c[i] += z * c[i - 1]
    c[n - 1] = (z * c[n - 2] + c[n - 1]) * z / (z * z - 1.0)
    for i in range(n - 2, -1, -1):
        c[i] = z * (c[i + 1] - c[i])
    return np.moveaxis(c, 0, axis)


def _resize_axis(array: np.ndarray, axis: int, size: int, target: int, order: int) -> np.ndarray:
    """Samples along ``axis`` at the grid-mode positions of ``target`` outputs over ``size`` inputs. For order 3,
    ``array`` holds spline coefficients padded by (``array.shape[axis]`` − ``size``) / 2 on each side."""
    positions = (np.arange(target) + 0.5) * (size / target) - 0.5
    length = array.shape[axis]
    if order == 0:
        index = np.clip(np.floor(positions + 0.5).astype(np.int64), 0, length - 1)
        return np.take(array, index, axis=axis)
    if order == 1:
        positions = np.clip(positions, 0, size - 1)
        lower = np.floor(positions).astype(np.int64)
        upper = np.minimum(lower + 1, size - 1)
        t = _along(positions - lower, axis, array.ndim)
        return np.take(array, lower, axis=axis) * (1.0 - t) + np.take(array, upper, axis=axis) * t
    positions = positions + (length - size) // 2
    base = np.floor(positions).astype(np.int64)
    t = positions - base
    weights = ((1 - t) ** 3 / 6, (3 * t**3 - 6 * t**2 + 4) / 6, (-3 * t**3 + 3 * t**2 + 3 * t + 1) / 6, t**3 / 6)
    result = None
    for offset, weight in zip((-1, 0, 1, 2), weights, strict=True):
        index = _mirrored(base + offset, length)
        term = np.take(array, index, axis=axis) * _along(weight, axis, array.ndim)
        result = term if result is None else result + term
    return result


def _mirrored(index: np.ndarray, length: int) -> np.ndarray:
    """Indices reflected at the ends without repeating the edge sample (SciPy's "mirror")."""
    if length == 1:
        return np.zeros_like(index)
    period = 2 * (length - 1)
    index = np.abs(index) % period
    return np.where(index >= length, period - index, index)


def _along(values: np.ndarray, axis: int, ndim: int) -> np.ndarray:
    shape = [1] * ndim
    shape[axis] = values.size
    return values.reshape(shape)


def _resample_torch(data: np.ndarray, shape: tuple[int, ...], axis: int | None) -> np.ndarray:
    tensor = torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32))
    with torch.no_grad():
        if axis is None:
            return F.interpolate(tensor[None], shape, mode="trilinear")[0].numpy()
        in_plane = [a for a in range(3) if a != axis]
        moved = tensor.movedim(axis + 1, 1)  # (C, slices, a, b)
        slices = moved.reshape(-1, *moved.shape[2:])
        resized = F.interpolate(slices[None], [shape[a] for a in in_plane], mode="bilinear")[0]
        resized = resized.reshape(moved.shape[0], moved.shape[1], *resized.shape[1:]).movedim(1, axis + 1)
        return F.interpolate(resized[None], shape, mode="nearest-exact")[0].contiguous().numpy()
