"""Planning: a dataset's fingerprint (spacings, sizes, intensities) and the preprocessing plan derived from it.

Rules (after nnU-Net, Isensee et al., Nature Methods 18, 2021):

- **Target spacing**: the median spacing of each axis. When the data is strongly anisotropic (the coarse
  axis' median spacing is more than 3 times the other axes' and the coarse axis has fewer than a third of
  the voxels of the others after resampling) the coarse axis takes the 10th percentile of its spacings
  instead (but not finer than the other axes), so that thin-slice cases are not thrown away by a coarse
  median. 2D models keep each image's slice spacing (the slice axis is not resampled).
- **Crop to non-zero**: when cropping to the non-zero box shrinks the median case to less than 3/4 of its
  volume (skull-stripped MRI, zero-padded scans); z-score statistics then come from the non-zero region.
- **Normalisation**: channels whose name has a word starting with "CT" (``CT``, ``ct_venous``,
  ``PET/CT``; not ``rectum``) get ``"ct"`` with the dataset's foreground percentiles 0.5/99.5 and mean/std;
  others get per-image ``"zscore"``. ``modality_hint`` overrides the names, and may name a scheme directly.
- **Patch size** (:func:`suggest_patch_size`): the median resampled shape rounded up to the network's
  divisor, shrunk along its physically longest axis until it holds at most ``max_voxels`` voxels.
- **Dimension** (:func:`data_spatial_dims`): a dataset of 2D images (or of single-slice volumes) trains a 2D
  model unless told otherwise; 3D volumes a 3D model. 2D images cannot train a 3D model. The plan of a 2D
  model made from 2D images has the target spacing ``(x, y)``, one made from volumes ``(x, y, None)``.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import InputError
from .dataset import Dataset, load_case, require_one_dimension
from .preprocessing import NORMALIZATION_SCHEMES, NormalizationSpec, PreprocessingPlan, nonzero_box

logger = logging.getLogger(__name__)

ANISOTROPY_RATIO = 3.0
CROP_VOLUME_RATIO = 0.75
FOREGROUND_SAMPLES_PER_CASE = 10_000
DEFAULT_MAX_VOXELS = {2: 512 * 512, 3: 128**3}
_CT_NAME = re.compile(r"(?<![a-z])ct", re.IGNORECASE)


def dataset_fingerprint(
    dataset: Dataset, *, samples_per_case: int = FOREGROUND_SAMPLES_PER_CASE, seed: int = 0
) -> dict[str, Any]:
    """Spacings, sizes and intensity statistics of ``dataset`` (plain JSON data).

    Keys: ``num_cases``, ``channel_names``, ``spacings`` and ``sizes`` (per case, ITK order x, y, z),
    ``nonzero_sizes`` (size of the non-zero box), ``median_spacing``, ``median_size``, ``crop_volume_ratio``
    (median of non-zero box volume / image volume) and ``intensity``: per channel ``mean``, ``std``,
    ``median``, ``percentile_00_5``, ``percentile_99_5``, ``min``, ``max`` over up to ``samples_per_case``
    random voxels inside the label maps of each case (the whole image for a case without labelled voxels).
    Cases are read one at a time.
    """
    if not dataset.cases:
        raise InputError(f"Dataset {dataset.name} has no cases to plan from; add image/label pairs.")
    rng = np.random.default_rng(seed)
    spacings, sizes, nonzero_sizes, ratios, samples, dims = [], [], [], [], [], {}
    for case in dataset.cases:
        image, label = load_case(case)
        dims[case.name] = image.spatial_dims
        channels = image.array
        box = nonzero_box(channels)
        spacings.append(list(image.spacing))
        sizes.append(list(image.size))
        box_shape = [axis.stop - axis.start for axis in box]
        nonzero_sizes.append(box_shape[::-1])
        ratios.append(math.prod(box_shape) / math.prod(image.shape))
        inside = np.flatnonzero(label.array) if label is not None else np.zeros(0, dtype=np.int64)
        if inside.size:
            picks = rng.choice(inside, min(samples_per_case, inside.size), replace=False)
        else:  # no labelled voxel: sample the whole image
            total = math.prod(image.shape)
            picks = rng.choice(total, min(samples_per_case, total), replace=False)
        samples.append(channels.reshape(channels.shape[0], -1)[:, picks].astype(np.float64))
    require_one_dimension(dataset.name, dims)
    counts = {sample.shape[0] for sample in samples}
    if len(counts) != 1:
        raise InputError(f"Cases of dataset {dataset.name} have different numbers of channels ({sorted(counts)}).")
    values = np.concatenate(samples, axis=1)
    return {
        "num_cases": len(dataset.cases),
        "channel_names": list(dataset.channel_names),
        "spacings": spacings,
        "sizes": sizes,
        "nonzero_sizes": nonzero_sizes,
        "median_spacing": np.median(spacings, axis=0).tolist(),
        "median_size": np.median(sizes, axis=0).tolist(),
        "crop_volume_ratio": float(np.median(ratios)),
        "intensity": [_statistics(channel) for channel in values],
    }


def plan_preprocessing(
    dataset: Dataset,
    *,
    spatial_dims: int | None = None,
    modality_hint: Sequence[str] | None = None,
    fingerprint: dict[str, Any] | None = None,
) -> PreprocessingPlan:
    """The :class:`PreprocessingPlan` for training a ``spatial_dims`` model on ``dataset`` (module docstring).

    ``spatial_dims`` ``None`` is the data's (:func:`data_spatial_dims`). ``modality_hint`` gives one modality
    name (e.g. ``"CT"``, ``"MRI"``) or scheme (``"ct"``, ``"zscore"``, ``"none"``) per channel, in place of the
    channel names. ``fingerprint`` reuses a :func:`dataset_fingerprint` result instead of reading the dataset
    again.
    """
    if spatial_dims not in (None, 2, 3):
        raise InputError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}.")
    fingerprint = fingerprint if fingerprint is not None else dataset_fingerprint(dataset)
    spatial_dims = data_spatial_dims(fingerprint, spatial_dims)
    names = list(modality_hint) if modality_hint is not None else list(fingerprint["channel_names"])
    intensity = fingerprint["intensity"]
    if len(names) != len(intensity):
        raise InputError(
            f"modality_hint has {len(names)} entries but the images have {len(intensity)} channel(s); "
            "give one per channel."
        )
    spacings = np.asarray(fingerprint["spacings"], dtype=np.float64)
    sizes = np.asarray(fingerprint["sizes"], dtype=np.float64)
    target: list[float | None] = _target_spacing(spacings, sizes)
    if spatial_dims == 2 and len(target) == 3:
        target[2] = None  # the slice axis (ITK z, array axis 0) of 2D models keeps each image's spacing
    normalization = tuple(_normalization(name, stats) for name, stats in zip(names, intensity, strict=True))
    plan = PreprocessingPlan(
        target_spacing=tuple(target),
        crop_to_nonzero=fingerprint["crop_volume_ratio"] < CROP_VOLUME_RATIO,
        normalization=normalization,
        spatial_dims=spatial_dims,
    )
    logger.info("Preprocessing plan for %s: %s", dataset.name, plan.to_dict())
    return plan


def data_spatial_dims(fingerprint: dict[str, Any], requested: int | None = None) -> int:
    """The dimension of the model to train on the fingerprinted data: ``requested``, or 2 for 2D images and
    single-slice volumes and 3 otherwise. A 3D model on 2D images is refused."""
    flat = len(fingerprint["spacings"][0]) == 2
    if requested == 3 and flat:
        raise InputError(
            "These are 2D images; a 3D model needs 3D volumes. Train a 2D model (spatial_dims=2, --dims 2, the "
            "default for 2D images)."
        )
    if requested is not None:
        return requested
    return 2 if flat or all(size[2] == 1 for size in fingerprint["sizes"]) else 3


def resampled_median_shape(fingerprint: dict[str, Any], plan: PreprocessingPlan) -> tuple[int, ...]:
    """Median shape (array order) of the cases after ``plan``'s cropping and resampling."""
    sizes = np.asarray(fingerprint["nonzero_sizes" if plan.crop_to_nonzero else "sizes"], dtype=np.float64)
    spacings = np.asarray(fingerprint["spacings"], dtype=np.float64)
    if plan.target_spacing is not None:
        target = np.array([np.nan if t is None else t for t in plan.target_spacing])
        scaled = sizes * spacings / target
        sizes = np.where(np.isnan(target), sizes, scaled)
    return tuple(max(1, round(v)) for v in np.median(sizes, axis=0)[::-1])


def suggest_patch_size(
    median_shape: Sequence[int],
    spatial_dims: int,
    *,
    divisor: int | Sequence[int] = 16,
    max_voxels: int | None = None,
    spacing: Sequence[float] | None = None,
) -> tuple[int, ...]:
    """A patch size (array order) covering the median case, each side a multiple of ``divisor``.

    ``median_shape`` is in array order; for a 2D model a 3D shape contributes its last two axes (the
    in-plane ones). Each side starts as the smallest multiple of its divisor that covers the median shape;
    while the patch has more than ``max_voxels`` voxels (default 512² in 2D, 128³ in 3D) the side with the
    largest physical length (``spacing`` in array order, default 1 mm) shrinks by its divisor, down to one
    divisor.
    """
    if spatial_dims not in (2, 3):
        raise InputError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}.")
    shape = [int(n) for n in median_shape]
    if len(shape) == 3 and spatial_dims == 2:
        shape = shape[1:]
    if len(shape) != spatial_dims or any(n < 1 for n in shape):
        raise InputError(f"median_shape must have {spatial_dims} positive sizes, got {tuple(median_shape)}.")
    divisors = [int(divisor)] * spatial_dims if isinstance(divisor, int) else [int(d) for d in divisor]
    if len(divisors) != spatial_dims or any(d < 1 for d in divisors):
        raise InputError(f"divisor must be a positive integer or {spatial_dims} of them, got {divisor!r}.")
    limit = max_voxels if max_voxels is not None else DEFAULT_MAX_VOXELS[spatial_dims]
    if limit < math.prod(divisors):
        raise InputError(f"max_voxels {limit} is below the smallest possible patch {tuple(divisors)}.")
    steps = [1.0] * spatial_dims if spacing is None else [float(s) for s in spacing][-spatial_dims:]
    patch = [max(d, math.ceil(n / d) * d) for n, d in zip(shape, divisors, strict=True)]
    while math.prod(patch) > limit:
        shrinkable = [axis for axis in range(spatial_dims) if patch[axis] > divisors[axis]]
        axis = max(shrinkable, key=lambda a: patch[a] * steps[a])
        patch[axis] -= divisors[axis]
    return tuple(patch)


# ----- helpers ------------------------------------------------------------------------------------------


def _statistics(values: np.ndarray) -> dict[str, float]:
    low, median, high = np.percentile(values, [0.5, 50.0, 99.5])
    return {
        "mean": float(values.mean()),
        "std": float(values.std()),
        "median": float(median),
        "percentile_00_5": float(low),
        "percentile_99_5": float(high),
        "min": float(values.min()),
        "max": float(values.max()),
        "num_samples": int(values.size),
    }


def _target_spacing(spacings: np.ndarray, sizes: np.ndarray) -> list[float]:
    """Median spacing per axis (ITK order), with the anisotropy rule of the module docstring."""
    target = np.median(spacings, axis=0)
    if len(target) < 3:
        return target.tolist()
    coarse = int(np.argmax(target))
    others = [axis for axis in range(len(target)) if axis != coarse]
    resampled_sizes = np.median(sizes * spacings / target, axis=0)
    if target[coarse] > ANISOTROPY_RATIO * max(target[others]) and (
        resampled_sizes[coarse] * ANISOTROPY_RATIO < min(resampled_sizes[others])
    ):
        target[coarse] = max(float(np.percentile(spacings[:, coarse], 10)), float(max(target[others])))
    return target.tolist()


def _normalization(name: str, stats: dict[str, float]) -> NormalizationSpec:
    scheme = name.lower() if name.lower() in NORMALIZATION_SCHEMES else "ct" if _CT_NAME.search(name) else "zscore"
    if scheme != "ct":
        return NormalizationSpec(scheme)
    return NormalizationSpec(
        "ct",
        clip_low=stats["percentile_00_5"],
        clip_high=stats["percentile_99_5"],
        mean=stats["mean"],
        std=max(stats["std"], 1e-8),
    )
