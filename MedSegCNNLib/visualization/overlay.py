"""Overlay montages: slices of an image with a label map drawn on top, as a PNG for a human to check.

Each panel shows one slice of the image in grey (a colour picture, e.g. an RGB photograph read from a PNG, in
colour), every label filled semi-transparent in its colour with its contour drawn solid. With a reference label
map, every slice gets a pair of panels side by side: the prediction (left) and the reference (right), drawn the
same way, so neither hides the other.

Slices are taken along an array axis (0 = z, axial for the usual axial scans) and drawn in array orientation
with the physical aspect ratio from the spacing: for axis 0 rows are y and columns x (image row 0 at the top);
for axes 1 and 2 the z axis points upwards. A 2D image (e.g. a PNG or TIFF picture) is one panel, drawn as the
picture is (row 0 at the top). The image's direction matrix is not applied (no reorientation).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..atomic import atomic_path, verify_png
from ..errors import InputError
from ..image.core import Image, LabelInfo
from ..image.labels import as_label_array
from ..image.seg_nrrd import default_label_info
from .figures import drawable_text, quiet_matplotlib

if TYPE_CHECKING:
    from matplotlib.figure import Figure

FILL_ALPHA = 0.35
PANEL_INCHES = 3.0
DPI = 100
# Percentile window is estimated from at most this many voxels (a strided subsample) to stay fast on big CT.
WINDOW_SAMPLE = 2_000_000


def select_slices(foreground: np.ndarray, count: int, axis: int = 0) -> list[int]:
    """Indices (ascending) of up to ``count`` slices along ``axis`` that contain foreground.

    The foreground extent (first to last slice with a non-zero voxel) is split into ``count`` equal parts
    and each part's centre is replaced by the nearest foreground slice not chosen yet, so every chosen slice
    has foreground and the choice spreads evenly. With fewer foreground slices than ``count`` all are
    returned; without foreground, the middle slice alone.
    """
    if count < 1:
        raise InputError(f"The number of slices must be >= 1, got {count}.")
    if not 0 <= axis < foreground.ndim:
        raise InputError(f"Slice axis must be between 0 and {foreground.ndim - 1}, got {axis}.")
    other_axes = tuple(a for a in range(foreground.ndim) if a != axis)
    candidates = np.flatnonzero(np.any(foreground, axis=other_axes))
    if candidates.size == 0:
        return [foreground.shape[axis] // 2]
    if candidates.size <= count:
        return candidates.tolist()
    first, last = candidates[0], candidates[-1]
    targets = first + (last - first) * (np.arange(count) + 0.5) / count
    available = np.ones(candidates.size, dtype=bool)
    chosen = []
    for target in targets:  # count iterations: the montage size, not voxels
        distance = np.where(available, np.abs(candidates - target), np.inf)
        best = int(np.argmin(distance))
        available[best] = False
        chosen.append(int(candidates[best]))
    return sorted(chosen)


def save_overlay(
    path: str | os.PathLike[str],
    image: Image,
    labels: Image,
    *,
    reference: Image | None = None,
    slices: int = 9,
    axis: int = 0,
    window: tuple[float, float] | None = None,
    overwrite: bool = False,
    title: str | None = None,
) -> Path:
    """Write a PNG montage of ``labels`` (and ``reference``) over ``image`` to ``path``, atomically.

    ``slices`` slices along array axis ``axis`` are chosen where the labels or the reference have foreground
    (:func:`select_slices`); a 2D image gives one panel (``slices`` and ``axis`` are then ignored). The
    image (its first channel if it has several) is shown in grey between ``window`` = (low, high)
    intensities, by default its 1st and 99th percentiles; a colour picture (3 channels of ``uint8``: red, green,
    blue) is shown in colour, by default with its true colours (window 0..255). Label names and colours come from
    ``labels.labels``, then ``reference.labels``, then ``image.labels``, else
    :func:`~MedSegCNNLib.image.seg_nrrd.default_label_info`; the legend lists the labels visible in the chosen
    slices. The label maps must have the image's shape (same voxel grid).
    """
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise InputError(f"Overlay files are PNG images; {path} must end with .png.")
    if isinstance(slices, bool) or not isinstance(slices, int) or slices < 1:
        raise InputError(f"slices must be an integer >= 1, got {slices!r}.")
    colour = image.num_channels == 3 and image.array.dtype == np.uint8
    if colour:
        intensities = np.moveaxis(image.array, 0, -1)  # channels last, as matplotlib draws RGB
    else:
        intensities = image.array[0] if image.is_multichannel else image.array
    predicted = _label_array(labels, image, "labels")
    referenced = None if reference is None else _label_array(reference, image, "reference")
    if image.spatial_dims == 2:
        axis, indices = 0, [0]
        intensities, predicted = intensities[np.newaxis], predicted[np.newaxis]
        referenced = None if referenced is None else referenced[np.newaxis]
        spacing = (1.0, *image.array_spacing)
    else:
        if isinstance(axis, bool) or axis not in (0, 1, 2):
            raise InputError(f"axis must be 0 (z), 1 (y) or 2 (x) for a 3D image, got {axis!r}.")
        foreground = predicted != 0 if referenced is None else (predicted != 0) | (referenced != 0)
        indices = select_slices(foreground, slices, axis)
        spacing = image.array_spacing
    low, high = (0.0, 255.0) if colour and window is None else _window(intensities, window)
    pairs = [(np.take(intensities, i, axis), np.take(predicted, i, axis)) for i in indices]
    truths = [] if referenced is None else [np.take(referenced, i, axis) for i in indices]
    shown = np.unique(np.concatenate([np.unique(s) for _, s in pairs] + [np.unique(s) for s in truths]))
    infos = [_label_info(int(v), (labels, reference, image)) for v in shown if v != 0]
    row_spacing, column_spacing = (s for a, s in enumerate(spacing) if a != axis)
    with quiet_matplotlib():
        figure = _montage(
            pairs,
            truths,
            infos,
            names=[f"{'zyx'[axis]} = {i}" for i in indices] if image.spatial_dims == 3 else [""],
            window=(low, high),
            aspect=row_spacing / column_spacing,
            z_up=image.spatial_dims == 3 and axis != 0,
            title=title,
        )
        with atomic_path(path, overwrite=overwrite, verify=verify_png) as tmp:
            figure.savefig(tmp, format="png", dpi=DPI)
    return path


def _label_array(labels: Image, image: Image, name: str) -> np.ndarray:
    """The integer array of a label map on ``image``'s voxel grid (shape checked), by
    :func:`~MedSegCNNLib.image.labels.as_label_array`; whole-valued floats are accepted (as NIfTI files often
    store labels)."""
    array = as_label_array(labels, allow_whole_floats=True, what=f"The {name}")
    if labels.shape != image.shape:
        raise InputError(
            f"The {name} (shape {labels.shape}) and the image (shape {image.shape}) must share a voxel grid; "
            "resample the label map onto the image first."
        )
    return array


def _window(intensities: np.ndarray, window: tuple[float, float] | None) -> tuple[float, float]:
    """Display range: ``window`` checked, or the 1st and 99th percentiles of the finite intensities."""
    if window is not None:
        try:
            low, high = (float(v) for v in window)
        except (TypeError, ValueError):
            raise InputError(f"window must be two numbers (low, high), got {window!r}.") from None
        if not (math.isfinite(low) and math.isfinite(high) and low < high):
            raise InputError(f"window must be two finite numbers with low < high, got {window!r}.")
        return low, high
    flat = intensities.ravel()
    sample = flat[:: max(1, flat.size // WINDOW_SAMPLE)].astype(np.float64)
    sample = sample[np.isfinite(sample)]
    if sample.size == 0:
        return 0.0, 1.0
    low, high = np.percentile(sample, [1.0, 99.0])
    return (float(low), float(high)) if high > low else (float(low) - 0.5, float(low) + 0.5)


def _label_info(value: int, sources: Sequence[Image | None]) -> LabelInfo:
    """Name and colour of ``value`` from the first image naming it; a missing colour from the palette."""
    default = default_label_info(value)
    for source in sources:
        info = source.label_info(value) if source is not None else None
        if info is not None:
            return LabelInfo(value, info.name, info.color or default.color)
    return default


def _montage(
    pairs: list[tuple[np.ndarray, np.ndarray]],
    truths: list[np.ndarray],
    infos: list[LabelInfo],
    *,
    names: list[str],
    window: tuple[float, float],
    aspect: float,
    z_up: bool,
    title: str | None,
) -> Figure:
    """The figure (Agg canvas, no pyplot): a grid of slices, each a panel or a prediction/reference pair; to be
    drawn inside :func:`~.figures.quiet_matplotlib`. Label names and the title are drawn by
    :func:`~.figures.drawable_text`."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    per_slice = 2 if truths else 1
    columns = math.ceil(math.sqrt(len(pairs)))
    rows = math.ceil(len(pairs) / columns)
    height, width = pairs[0][0].shape[:2]
    panel_height = min(max(PANEL_INCHES * aspect * height / width, 1.0), 3 * PANEL_INCHES)
    legend_inches = 0.3 * math.ceil(len(infos) / 4) if infos else 0.0
    title_inches = 0.5 if title else 0.0
    figure = Figure(
        figsize=(PANEL_INCHES * columns * per_slice, (panel_height + 0.3) * rows + legend_inches + title_inches),
        dpi=DPI,
    )
    FigureCanvasAgg(figure)
    colors = {info.value: info.color for info in infos}
    lookup_values = np.array(sorted(colors), dtype=np.int64)
    lookup_rgba = np.array([[*colors[v], FILL_ALPHA] for v in lookup_values]).reshape(-1, 4)
    for index, (intensity, prediction) in enumerate(pairs):
        panels = [(prediction, "prediction" if truths else "")]
        if truths:
            panels.append((truths[index], "reference"))
        for offset, (label_slice, role) in enumerate(panels):
            axes = figure.add_subplot(rows, columns * per_slice, index * per_slice + offset + 1)
            origin = "lower" if z_up else "upper"
            if intensity.ndim == 3:  # colour, scaled to [0, 1] by the window
                shown = np.clip((intensity.astype(np.float32) - window[0]) / (window[1] - window[0]), 0.0, 1.0)
                axes.imshow(shown, aspect=aspect, origin=origin)
            else:
                axes.imshow(intensity, cmap="gray", vmin=window[0], vmax=window[1], aspect=aspect, origin=origin)
            axes.imshow(_rgba(label_slice, lookup_values, lookup_rgba), aspect=aspect, origin=origin)
            for value in np.unique(label_slice):
                if value != 0:
                    mask = (label_slice == value).astype(np.float32)
                    axes.contour(mask, levels=[0.5], colors=[colors[int(value)]], linewidths=1.0)
            axes.set_title(" ".join(part for part in (names[index], role) if part), fontsize=8)
            axes.set_axis_off()
    if infos:
        handles = [
            Patch(facecolor=info.color, edgecolor=info.color, label=drawable_text(f"{info.value}: {info.name}"))
            for info in infos
        ]
        figure.legend(handles=handles, loc="lower center", ncols=min(len(handles), 4), fontsize=8, frameon=False)
    total_height = figure.get_figheight()
    if title:
        figure.suptitle(drawable_text(title), fontsize=10, y=1 - 0.08 / total_height, va="top")
    figure.subplots_adjust(
        left=0.01,
        right=0.99,
        bottom=(legend_inches + 0.05) / total_height,
        top=1 - (title_inches + 0.05) / total_height,
        wspace=0.03,
        hspace=0.15,
    )
    return figure


def _rgba(label_slice: np.ndarray, values: np.ndarray, rgba: np.ndarray) -> np.ndarray:
    """RGBA image of a label slice: each value in ``values`` gets its row of ``rgba``, others transparent."""
    out = np.zeros((*label_slice.shape, 4))
    if values.size:
        position = np.clip(np.searchsorted(values, label_slice), 0, values.size - 1)
        known = values[position] == label_slice
        out[known] = rgba[position[known]]
    return out
