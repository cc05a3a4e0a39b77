"""Preprocessing: from a loaded case to the arrays a network trains on, and back to the original grid.

One case goes through three steps, in this order (training and inference run exactly the same steps, driven
by the :class:`PreprocessingPlan` stored in the model card):

1. **Crop** to the bounding box of the voxels that are non-zero in any channel (``crop_to_nonzero``). The
   box kept is recorded (``crop_box``, array order, on the original grid).
2. **Resample** to ``target_spacing`` (ITK order x, y, z, mm). The new grid keeps the physical centre of
   the old one and has ``round(size * spacing / target)`` voxels per axis, so its extent differs from the
   old one by less than one new voxel. An axis whose target is ``None``, or whose spacing is within 0.1 % of
   the target, is not resampled (2D models keep the slice spacing; float32 header noise does not cause an
   interpolation). Images use linear or cubic B-spline interpolation, label maps nearest neighbour.
   A 2D model's plan applies to 2D images and, slice by slice, to 3D volumes alike
   (:meth:`PreprocessingPlan.target_for`): its in-plane target spacing is used, the slice axis is never
   resampled.
3. **Normalise** each channel (:class:`NormalizationSpec`).

:func:`to_source_grid` maps an array on the preprocessed grid (a prediction) back onto the original grid:
exactly (voxel for voxel) when nothing was resampled, by resampling otherwise.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from ..errors import InputError
from ..image.core import Image
from ..image.geometry import Grid, grid_difference, resample_onto
from ..image.labels import as_label_array
from ..records import record_from_dict

logger = logging.getLogger(__name__)

NormalizationScheme = Literal["ct", "zscore", "none"]
ImageInterpolation = Literal["linear", "bspline"]

NORMALIZATION_SCHEMES: tuple[str, ...] = ("ct", "zscore", "none")
IMAGE_INTERPOLATIONS: tuple[str, ...] = ("linear", "bspline")
FOREGROUND_SAMPLES_PER_LABEL = 10_000
"""At most this many voxel positions per label are kept in :attr:`PreprocessedCase.foreground_locations`."""

_STD_FLOOR = 1e-8


# ----- configuration ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NormalizationSpec:
    """How one channel's intensities are normalised.

    - ``"ct"``: clip to ``[clip_low, clip_high]`` (the dataset's foreground 0.5 and 99.5 percentiles), then
      ``(x - mean) / std`` with the dataset's foreground mean and standard deviation. All four are required.
    - ``"zscore"``: ``(x - m) / max(s, 1e-8)`` with the mean ``m`` and standard deviation ``s`` of this image
      (of its non-zero region, and zero outside it, when the plan crops to non-zero). The four numbers
      must be ``None``.
    - ``"none"``: intensities are kept (cast to float32). The four numbers must be ``None``.
    """

    scheme: NormalizationScheme
    clip_low: float | None = None
    clip_high: float | None = None
    mean: float | None = None
    std: float | None = None

    def __post_init__(self) -> None:
        if self.scheme not in NORMALIZATION_SCHEMES:
            raise InputError(f"Unknown normalisation {self.scheme!r}; use one of {', '.join(NORMALIZATION_SCHEMES)}.")
        numbers = {"clip_low": self.clip_low, "clip_high": self.clip_high, "mean": self.mean, "std": self.std}
        if self.scheme != "ct":
            given = [name for name, value in numbers.items() if value is not None]
            if given:
                raise InputError(f"Normalisation {self.scheme!r} takes no {', '.join(given)}; leave them unset.")
            return
        missing = [name for name, value in numbers.items() if value is None or not np.isfinite(value)]
        if missing:
            raise InputError(f"CT normalisation needs finite {', '.join(missing)} (dataset statistics).")
        if self.clip_low > self.clip_high or self.std <= 0:
            raise InputError(
                f"CT normalisation needs clip_low <= clip_high and std > 0; got [{self.clip_low}, {self.clip_high}] "
                f"and std {self.std}."
            )
        for name, value in numbers.items():
            object.__setattr__(self, name, float(value))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NormalizationSpec:
        return record_from_dict(cls, data, "normalisation")


@dataclass(frozen=True)
class PreprocessingPlan:
    """Everything that turns a case into network input; inference repeats it exactly.

    ``target_spacing`` is in ITK order (x, y, z), mm; ``None`` keeps each image's spacing, and a ``None``
    entry keeps that axis (the slice axis of 2D models). ``normalization`` has one entry per channel.
    ``spatial_dims`` is the model's (2 or 3). A 2D model's plan holds ``(x, y)`` when it was made from 2D
    images and ``(x, y, None)`` when made from 3D volumes; either preprocesses 2D images (array ``(y, x)``) and
    3D volumes (slice by slice along z) alike (:meth:`target_for`).
    """

    target_spacing: tuple[float | None, ...] | None
    crop_to_nonzero: bool
    normalization: tuple[NormalizationSpec, ...]
    image_interpolation: ImageInterpolation = "linear"
    spatial_dims: int = 3

    def __post_init__(self) -> None:
        if self.target_spacing is not None:
            spacing = tuple(None if s is None else float(s) for s in self.target_spacing)
            if len(spacing) not in (2, 3) or not all(s is None or (np.isfinite(s) and s > 0) for s in spacing):
                raise InputError(
                    f"target_spacing must have 2 or 3 positive entries (or None entries), got {self.target_spacing}."
                )
            object.__setattr__(self, "target_spacing", spacing)
        normalization = tuple(
            spec if isinstance(spec, NormalizationSpec) else NormalizationSpec.from_dict(spec)
            for spec in self.normalization
        )
        if not normalization:
            raise InputError("A preprocessing plan needs one normalisation per input channel; none given.")
        object.__setattr__(self, "normalization", normalization)
        object.__setattr__(self, "crop_to_nonzero", bool(self.crop_to_nonzero))
        if self.image_interpolation not in IMAGE_INTERPOLATIONS:
            raise InputError(
                f"Unknown image interpolation {self.image_interpolation!r}; use {' or '.join(IMAGE_INTERPOLATIONS)}."
            )
        if self.spatial_dims not in (2, 3):
            raise InputError(f"spatial_dims must be 2 or 3, got {self.spatial_dims!r}.")

    @property
    def num_channels(self) -> int:
        return len(self.normalization)

    def target_for(self, dims: int) -> tuple[float | None, ...] | None:
        """The target spacing (ITK order) for an image with ``dims`` spatial axes.

        A 2D model's in-plane target is used for 2D images and for 3D volumes (whose slice axis z is kept:
        ``None``). A 3D model's plan has no 2D form: :class:`InputError`.
        """
        target = self.target_spacing
        if target is None or len(target) == dims:
            return target
        if self.spatial_dims == 2:
            return (*target[:2], None) if dims == 3 else target[:2]
        raise InputError(
            f"This plan is for a 3D model and the image is {dims}D; use a 2D model for 2D images, or a 3D volume."
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "target_spacing": None if self.target_spacing is None else list(self.target_spacing),
            "crop_to_nonzero": self.crop_to_nonzero,
            "normalization": [spec.to_dict() for spec in self.normalization],
            "image_interpolation": self.image_interpolation,
            "spatial_dims": self.spatial_dims,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PreprocessingPlan:
        return record_from_dict(cls, data, "preprocessing plan")


# ----- the preprocessed case ------------------------------------------------------------------------------


@dataclass(eq=False)
class PreprocessedCase:
    """One case ready for training or prediction.

    ``image`` is float32 ``(C, z, y, x)`` (``(C, y, x)`` for a 2D image); ``label`` the integer label map
    ``(z, y, x)`` (``(y, x)``), uint8 when the values fit, else int16/int32, or ``None``. ``spacing`` is the
    actual spacing in array order (mm). ``crop_box`` is the box of the original grid that was kept (array
    order); ``source_geometry`` the original grid and ``geometry`` the preprocessed one (both physical, so
    :func:`to_source_grid` can map predictions back). ``foreground_locations`` holds array indices
    ``(N, ndim)`` of up to :data:`FOREGROUND_SAMPLES_PER_LABEL` random voxels of every non-zero label present,
    grouped by label in increasing order; ``foreground_labels`` (N,) gives the label of each.
    """

    name: str
    image: np.ndarray
    label: np.ndarray | None
    spacing: tuple[float, ...]
    crop_box: tuple[slice, ...]
    source_geometry: Grid
    geometry: Grid
    foreground_locations: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), dtype=np.int64))
    foreground_labels: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    @property
    def shape(self) -> tuple[int, ...]:
        """Spatial shape in array order."""
        return tuple(self.image.shape[1:])


def preprocess_case(
    image: Image, label: Image | None, plan: PreprocessingPlan, *, seed: int = 0, name: str = ""
) -> PreprocessedCase:
    """Crop, resample and normalise ``image`` (and its ``label``, on the same grid) as ``plan`` says.

    ``seed`` drives the random choice of :attr:`PreprocessedCase.foreground_locations`.
    """
    channels = _channels_first(image)
    require_finite(channels, f"the image of case {name or '?'}")
    if channels.shape[0] != plan.num_channels:
        raise InputError(
            f"Case {name or '?'} has {channels.shape[0]} channel(s) but the plan normalises {plan.num_channels}; "
            "give the channels the model was trained with."
        )
    source = Grid.of(image)
    label_array = None
    if label is not None:
        if label.is_multichannel or not label.same_grid(image, tolerance=1e-3):
            raise InputError(
                f"Label map of case {name or '?'} is not on its image's grid (label vs image: "
                f"{grid_difference(Grid.of(label), Grid.of(image))}); "
                "load cases with load_case, which aligns them."
            )
        label_array = as_label_array(
            label, allow_whole_floats=True, compact=True, what=f"The label map of case {name or '?'}"
        )

    box = nonzero_box(channels) if plan.crop_to_nonzero else tuple(slice(0, n) for n in source.shape)
    channels = channels[(slice(None), *box)].astype(np.float32)  # a copy: resampling and normalisation follow
    if label_array is not None:
        _warn_lost_labels(label_array, box, name)
        label_array = np.array(label_array[box])  # a copy: the case must not keep the caller's array alive
    cropped = source.crop(box)
    target = cropped.resampled(plan.target_for(image.spatial_dims))
    if not _same_grid(target, cropped):
        channels = np.stack(
            [resample_onto(cropped.image(channel), target, plan.image_interpolation).array for channel in channels]
        )
        if label_array is not None:
            label_array = resample_onto(cropped.image(label_array), target, "nearest").array
    mask = np.any(channels != 0, axis=0) if plan.crop_to_nonzero else None
    for channel, spec in zip(channels, plan.normalization, strict=True):
        normalize(channel, spec, mask=mask)
    locations, values = (
        _foreground_sample(label_array, np.random.default_rng(seed))
        if label_array is not None
        else (np.zeros((0, channels.ndim - 1), dtype=np.int64), np.zeros(0, dtype=np.int64))
    )
    return PreprocessedCase(
        name=name,
        image=channels,
        label=label_array,
        spacing=target.array_spacing,
        crop_box=box,
        source_geometry=source,
        geometry=target,
        foreground_locations=locations,
        foreground_labels=values,
    )


def normalize(channel: np.ndarray, spec: NormalizationSpec, *, mask: np.ndarray | None = None) -> None:
    """Normalise one float channel in place (see :class:`NormalizationSpec`).

    For ``"zscore"``, ``mask`` (bool, same shape) selects the voxels the statistics come from; voxels
    outside it are set to 0. An empty mask counts as no mask.
    """
    if spec.scheme == "ct":
        np.clip(channel, spec.clip_low, spec.clip_high, out=channel)
        channel -= spec.mean
        channel /= spec.std
    elif spec.scheme == "zscore":
        use_mask = mask is not None and bool(mask.any())
        values = channel[mask] if use_mask else channel
        mean = float(values.mean(dtype=np.float64))
        std = float(values.std(dtype=np.float64))
        channel -= mean
        channel /= max(std, _STD_FLOOR)
        if use_mask:
            channel[~mask] = 0.0


def nonzero_box(channels: np.ndarray) -> tuple[slice, ...]:
    """The smallest box (array order) holding every voxel that is non-zero in any channel of ``(C, ...)``.

    The whole grid when all voxels are zero.
    """
    nonzero = np.any(channels != 0, axis=0)
    box = []
    for axis in range(nonzero.ndim):
        others = tuple(a for a in range(nonzero.ndim) if a != axis)
        hits = np.flatnonzero(nonzero.any(axis=others))
        if hits.size == 0:
            return tuple(slice(0, n) for n in nonzero.shape)
        box.append(slice(int(hits[0]), int(hits[-1]) + 1))
    return tuple(box)


def require_finite(array: np.ndarray, what: str) -> None:
    """Refuse (:class:`InputError` naming ``what``) an intensity array with NaN or ±inf voxels, which training
    cannot use (they would end as a NaN loss)."""
    if not np.issubdtype(array.dtype, np.floating):
        return
    bad = array.size - int(np.count_nonzero(np.isfinite(array)))
    if bad:
        raise InputError(
            f"{_capitalized(what)} has {bad} non-finite voxel(s) (NaN or infinite) of {array.size}; training needs "
            "finite intensities. Fix the image (e.g. set them to the background value) or leave the case out."
        )


def to_source_grid(
    array: np.ndarray,
    case: PreprocessedCase,
    *,
    interpolation: Literal["nearest", "linear"] = "nearest",
    fill: float | Sequence[float] = 0.0,
) -> np.ndarray:
    """Map ``array`` from ``case``'s preprocessed grid back onto its original grid (array order).

    ``array`` is ``case.shape`` or ``(C, *case.shape)`` (e.g. class probabilities; use ``"linear"``).
    Voxels outside the crop box get ``fill`` (one value, or one per channel, e.g. 1 for background
    probability). When nothing was resampled the values are copied voxel for voxel; otherwise they are
    resampled onto the cropped part of the original grid. The dtype is kept.
    """
    if interpolation not in ("nearest", "linear"):
        raise InputError(f"Unknown interpolation {interpolation!r}; use 'nearest' or 'linear'.")
    spatial = case.geometry.shape
    has_channels = array.ndim == len(spatial) + 1
    if tuple(array.shape[-len(spatial) :]) != spatial or array.ndim not in (len(spatial), len(spatial) + 1):
        raise InputError(
            f"The array to map back has shape {array.shape}; case {case.name} was preprocessed to {spatial}."
        )
    channels = array if has_channels else array[None]
    fills = np.atleast_1d(np.asarray(fill, dtype=np.float64))
    if fills.size not in (1, channels.shape[0]):
        raise InputError(f"fill has {fills.size} values for {channels.shape[0]} channel(s); give one or one each.")
    fills = np.broadcast_to(fills, (channels.shape[0],))
    cropped = case.source_geometry.crop(case.crop_box)
    out = np.empty((channels.shape[0], *case.source_geometry.shape), dtype=array.dtype)
    for index, channel in enumerate(channels):
        out[index] = fills[index]
        if _same_grid(cropped, case.geometry):
            region = channel
        else:
            region = resample_onto(case.geometry.image(channel), cropped, interpolation).array
        out[(index, *case.crop_box)] = region
    return out if has_channels else out[0]


# ----- helpers ------------------------------------------------------------------------------------------


def _capitalized(text: str) -> str:
    """``text`` with its first letter upper case (unlike ``str.capitalize``, which lowers the rest: case names)."""
    return text[:1].upper() + text[1:]


def _channels_first(image: Image) -> np.ndarray:
    """The image array with a channel axis, ``(C, z, y, x)`` (no copy)."""
    return image.array if image.is_multichannel else image.array[None]


def _same_grid(a: Grid, b: Grid) -> bool:
    """True when two grids coincide (sizes equal, spacing/origin/direction within 1e-6 relative)."""
    return a.size == b.size and all(
        np.allclose(getattr(a, name), getattr(b, name), rtol=1e-6, atol=1e-9)
        for name in ("spacing", "origin", "direction")
    )


def _warn_lost_labels(label: np.ndarray, box: tuple[slice, ...], name: str) -> None:
    kept = int(np.count_nonzero(label[box]))
    total = int(np.count_nonzero(label))
    if kept != total:
        logger.warning(
            "Case %s: %d labelled voxel(s) lie where every image channel is zero and are cropped away.",
            name or "?",
            total - kept,
        )


def _foreground_sample(label: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Up to :data:`FOREGROUND_SAMPLES_PER_LABEL` random voxel indices per non-zero label, grouped by label."""
    flat = np.flatnonzero(label)
    values = label.ravel()[flat]
    order = np.argsort(values, kind="stable")
    flat, values = flat[order], values[order]
    present, starts, counts = np.unique(values, return_index=True, return_counts=True)
    chosen = []
    for start, count in zip(starts, counts, strict=True):
        if count > FOREGROUND_SAMPLES_PER_LABEL:
            picks = np.sort(rng.choice(count, FOREGROUND_SAMPLES_PER_LABEL, replace=False))
            chosen.append(start + picks)
        else:
            chosen.append(np.arange(start, start + count))
    keep = np.concatenate(chosen) if chosen else np.zeros(0, dtype=np.int64)
    locations = np.stack(np.unravel_index(flat[keep], label.shape), axis=1).astype(np.int64)
    logger.debug("Foreground sample: %d voxels of labels %s.", len(keep), present.tolist())
    return locations, values[keep].astype(np.int64)
