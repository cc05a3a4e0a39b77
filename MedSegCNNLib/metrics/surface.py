"""Surface voxels of binary masks and the surface-distance metrics HD, HD95, ASSD and NSD.

Definitions (distances in mm, Euclidean between voxel centres, ``spacing`` in array axis order):

- Surface S_M of a mask M: the voxels of M with at least one face neighbour (6-connectivity in 3D, 4 in
  2D) outside M; voxels outside the array count as outside, so a mask touching the border has surface there.
- d(P→R): for each voxel of S_P, the distance to the nearest voxel of S_R; d(R→P) likewise.
- hd = max(max d(P→R), max d(R→P)).
- hd95 = max(p95(d(P→R)), p95(d(R→P))), with numpy's default (linear) percentile: the larger of the two
  directed 95th percentiles (MONAI / DeepMind definition), not the 95th percentile of the pooled distances.
- assd = (Σ d(P→R) + Σ d(R→P)) / (|S_P| + |S_R|).
- nsd (normalised surface Dice at tolerance τ mm) = (|{d(P→R) ≤ τ}| + |{d(R→P) ≤ τ}|) / (|S_P| + |S_R|).
- Empty masks: both empty -> hd = hd95 = assd = 0, nsd = 1; exactly one empty -> hd = hd95 = assd = inf, nsd = 0.

Distances come from ITK's exact Euclidean distance transform (``SignedMaurerDistanceMap``, squared, on the
surface mask padded by one background voxel so that every surface voxel is on the object's border in ITK's
sense), sampled at the other surface; no pairwise point distances. ITK works in float32: squared distances
are exact when the spacings are short binary fractions (1, 0.5, 0.625 mm, ...); otherwise distances carry a
relative error of up to about 2e-6, so a distance equal to τ within that error may fall on either side of it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk


@dataclass(frozen=True)
class SurfaceMetrics:
    """Surface-distance metrics of one pair of masks (see the module docstring); distances in mm."""

    hd: float
    hd95: float
    assd: float
    nsd: float


def surface_mask(mask: np.ndarray) -> np.ndarray:
    """Boolean surface S_M of ``mask``: voxels of the mask with a face neighbour outside it or outside the array."""
    mask = np.asarray(mask, dtype=bool)
    interior = mask.copy()
    for axis in range(mask.ndim):
        inside = np.moveaxis(mask, axis, 0)
        result = np.moveaxis(interior, axis, 0)
        result[1:] &= inside[:-1]
        result[:-1] &= inside[1:]
        result[0] = False
        result[-1] = False
    return np.logical_xor(mask, interior, out=interior)


def directed_surface_distances(
    from_surface: np.ndarray, to_surface: np.ndarray, spacing: Sequence[float]
) -> np.ndarray:
    """Distances (mm, float64) from each voxel of ``from_surface`` (C order) to the nearest voxel of ``to_surface``.

    Both are boolean arrays of one shape; ``spacing`` is in array axis order. Every distance is ``inf`` when
    ``to_surface`` is empty.
    """
    if not to_surface.any():
        return np.full(int(np.count_nonzero(from_surface)), np.inf)
    padded = np.zeros(tuple(n + 2 for n in to_surface.shape), dtype=np.uint8)
    interior = tuple(slice(1, -1) for _ in range(to_surface.ndim))
    padded[interior] = to_surface
    image = sitk.GetImageFromArray(padded)
    image.SetSpacing([float(s) for s in reversed(spacing)])
    distance_map = sitk.SignedMaurerDistanceMap(
        image, insideIsPositive=False, squaredDistance=True, useImageSpacing=True, backgroundValue=0.0
    )
    squared = sitk.GetArrayViewFromImage(distance_map)[interior][from_surface]
    return np.sqrt(np.abs(squared.astype(np.float64)))


def empty_surface_metrics(pred_empty: bool, ref_empty: bool) -> SurfaceMetrics:
    """The policy for an empty mask: both empty -> (0, 0, 0, nsd 1); one empty -> (inf, inf, inf, nsd 0)."""
    if pred_empty and ref_empty:
        return SurfaceMetrics(hd=0.0, hd95=0.0, assd=0.0, nsd=1.0)
    if pred_empty or ref_empty:
        return SurfaceMetrics(hd=np.inf, hd95=np.inf, assd=np.inf, nsd=0.0)
    raise ValueError("empty_surface_metrics needs at least one empty mask.")


def surface_metrics(
    pred_mask: np.ndarray, ref_mask: np.ndarray, spacing: Sequence[float], *, nsd_tolerance_mm: float = 1.0
) -> SurfaceMetrics:
    """HD, HD95, ASSD (mm) and NSD at ``nsd_tolerance_mm`` between two boolean masks of the same shape.

    ``spacing`` (mm) is in array axis order. Definitions and the empty-mask policy: see the module docstring.
    """
    pred_surface = surface_mask(pred_mask)
    ref_surface = surface_mask(ref_mask)
    pred_empty = not pred_surface.any()
    ref_empty = not ref_surface.any()
    if pred_empty or ref_empty:
        return empty_surface_metrics(pred_empty, ref_empty)
    pred_to_ref = directed_surface_distances(pred_surface, ref_surface, spacing)
    ref_to_pred = directed_surface_distances(ref_surface, pred_surface, spacing)
    count = pred_to_ref.size + ref_to_pred.size
    return SurfaceMetrics(
        hd=float(max(pred_to_ref.max(), ref_to_pred.max())),
        hd95=float(max(np.percentile(pred_to_ref, 95), np.percentile(ref_to_pred, 95))),
        assd=float((pred_to_ref.sum() + ref_to_pred.sum()) / count),
        nsd=float(
            (np.count_nonzero(pred_to_ref <= nsd_tolerance_mm) + np.count_nonzero(ref_to_pred <= nsd_tolerance_mm))
            / count
        ),
    )
