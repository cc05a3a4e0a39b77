"""Spatial augmentation on batched tensors: one affine map per sample (plus an optional elastic displacement
field), applied to images and labels with a single resampling.

Conventions (all functions):

- Positions are in voxels, in array order ((z, y, x) or (y, x)), measured from the patch centre, the point
  ``(S - 1) / 2`` along each axis of size ``S``. Voxels are taken as isotropic, so rotations and zooms keep
  shapes for non-cubic patches too.
- A transform is given in the *forward* direction, from input to output: ``p_out = A @ p_in + t``. The
  output voxel at ``p_out`` reads the input at ``A^-1 @ (p_out - t) + u(p_out)``, where ``u`` is an optional
  displacement field (voxels, array order) defined on the output grid.
- Rotations follow the right-hand rule in (x, y, z): a positive angle about z turns +x towards +y, about x
  +y towards +z, about y +z towards +x. A rotation by +90 degrees about z therefore equals
  ``torch.rot90(t, 1, dims=(-1, -2))`` (x is the last axis, y the second last) for square slices.
- ``torch.nn.functional.affine_grid``/``grid_sample`` work in normalised coordinates with
  ``align_corners=False`` (-1 and 1 are the outer faces of the edge voxels) and list x, y, z, i.e. the tensor
  axes from the last; :func:`sampling_grid` converts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .augmentation_intensity import gaussian_blur

__all__ = ["elastic_displacement", "mirror", "resample", "rotation_matrices", "sampling_grid"]

# For each rotation axis in array order, the pair (i, j) of array axes such that a positive angle turns +i
# towards +j (right-hand rule in x, y, z). 3D axes: z=0, y=1, x=2; 2D axes: y=0, x=1, rotation about z.
_ROTATION_PLANES = {3: ((2, 1), (0, 2), (1, 0)), 2: ((1, 0),)}


def rotation_matrices(angles: Tensor) -> Tensor:
    """Rotation matrices (N, d, d) in array order from ``angles`` in radians.

    2D: ``angles`` is (N, 1), the angle about the axis normal to the slice (z). 3D: (N, 3), the angles about
    z, y and x; the rotation about x is applied first, then y, then z (``R = Rz @ Ry @ Rx``).
    """
    dims = 2 if angles.shape[-1] == 1 else 3
    result = torch.eye(dims, dtype=angles.dtype).repeat(angles.shape[0], 1, 1)
    for axis, (i, j) in enumerate(_ROTATION_PLANES[dims]):
        cos, sin = torch.cos(angles[:, axis]), torch.sin(angles[:, axis])
        turn = torch.eye(dims, dtype=angles.dtype).repeat(angles.shape[0], 1, 1)
        turn[:, i, i], turn[:, j, j], turn[:, j, i], turn[:, i, j] = cos, cos, sin, -sin
        result = result @ turn
    return result


def sampling_grid(
    matrix: Tensor,
    translation: Tensor,
    shape: Sequence[int],
    displacement: Tensor | None = None,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """The ``grid_sample`` grid (N, *shape, d) of the forward transform ``p_out = matrix @ p_in + translation``.

    ``matrix`` (N, d, d) and ``translation`` (N, d, voxels) are in array order (computed in float64 on the
    CPU, then cast and moved); ``displacement`` (N, d, *shape), in voxels on the output grid, is added to the
    sampling positions.
    """
    size = torch.tensor([float(s) for s in shape], dtype=torch.float64)
    inverse = torch.linalg.inv(matrix.to(torch.float64))
    to_voxels = torch.diag(size / 2)  # normalised -> centred voxel coordinates (align_corners=False)
    linear = torch.linalg.inv(to_voxels) @ inverse @ to_voxels
    offset = -(inverse @ translation.to(torch.float64)[..., None])[..., 0] / (size / 2)
    theta = torch.cat([linear.flip(-1, -2), offset.flip(-1)[..., None]], dim=-1)  # array order -> x, y, z
    theta = theta.to(dtype).to(device)
    grid = F.affine_grid(theta, [theta.shape[0], 1, *shape], align_corners=False)
    if displacement is not None:
        scale = (2 / size).to(dtype).to(device).reshape(1, -1, *([1] * len(shape)))
        grid = grid + (displacement.to(device=device, dtype=dtype) * scale).flip(1).movedim(1, -1)
    return grid


def resample(
    images: Tensor, labels: Tensor, grid: Tensor, *, image_mode: str = "bilinear", padding: str = "zeros"
) -> tuple[Tensor, Tensor]:
    """``images`` (N, C, *S) and ``labels`` (N, 1, *S) read at ``grid`` (N, *S, d), one ``grid_sample`` each.

    Images use ``image_mode`` ("bilinear", which is trilinear in 3D, or "nearest") and ``padding`` ("zeros",
    "border" or "reflection") outside the input; labels use nearest neighbour and 0 outside, so every output
    label value is one of the input's (exact for values below 2**24). Dtypes are kept.
    """
    images_out = F.grid_sample(
        images.to(grid.dtype), grid, mode=image_mode, padding_mode=padding, align_corners=False
    ).to(images.dtype)
    labels_out = F.grid_sample(labels.to(grid.dtype), grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return images_out, labels_out.to(labels.dtype)


def mirror(tensor: Tensor, axes: Sequence[int]) -> Tensor:
    """``tensor`` (C, *S) flipped along the spatial ``axes`` (0 = first spatial axis); exact, no resampling."""
    return torch.flip(tensor, [axis + 1 for axis in axes]) if axes else tensor.clone()


def elastic_displacement(
    shape: Sequence[int], alpha: float, sigma: float, generator: torch.Generator, *, dtype: torch.dtype
) -> Tensor:
    """A smooth random displacement field (d, *shape) in voxels, on ``generator``'s device.

    Each component is Gaussian white noise smoothed with a Gaussian of standard deviation ``sigma`` voxels,
    then scaled so that its largest absolute value is ``alpha`` voxels. To save time the noise is drawn on a
    grid coarser by ``max(1, sigma / 2)``, smoothed there and interpolated (linearly) to ``shape``.
    """
    step = max(1.0, sigma / 2)
    coarse = [math.ceil((s - 1) / step) + 1 for s in shape]
    noise = torch.randn((1, len(shape), *coarse), generator=generator, device=generator.device, dtype=dtype)
    smooth = gaussian_blur(noise, torch.full((1, len(shape)), sigma / step))
    peak = smooth.flatten(2).abs().amax(-1).clamp_min(torch.finfo(dtype).tiny)
    smooth = smooth * (alpha / peak).reshape(1, len(shape), *([1] * len(shape)))
    mode = "trilinear" if len(shape) == 3 else "bilinear"
    return F.interpolate(smooth, size=list(shape), mode=mode, align_corners=True)[0]
