"""Voxel grids: the :class:`Grid` type, overlap tests, and :func:`resample_onto`, the one way to put an image's
voxels onto another grid."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import SimpleITK as sitk

from ..errors import GeometryError, InputError
from .core import Image, LabelInfo
from .sitk_bridge import from_sitk, to_sitk

Interpolation = Literal["nearest", "linear", "bspline"]
"""How :func:`resample_onto` interpolates: nearest neighbour (label maps), linear, or cubic B-spline."""

_SITK_INTERPOLATORS = {
    "nearest": sitk.sitkNearestNeighbor,
    "linear": sitk.sitkLinear,
    "bspline": sitk.sitkBSpline,
}
_KEEP_SPACING_RTOL = 1e-3  # an axis whose spacing is this close to the target is not resampled


@dataclass(frozen=True)
class Grid:
    """The voxel grid of an image without its voxels.

    ``size``, ``spacing`` (mm) and ``origin`` (LPS mm) are in ITK order (x, y, z); ``direction`` is the
    direction matrix flattened row by row, as SimpleITK gives it. Voxel ``i`` (ITK index) has its centre at
    ``origin + direction @ (spacing * i)``.
    """

    size: tuple[int, ...]
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[float, ...]

    def __post_init__(self) -> None:
        dims = len(self.size)
        if dims not in (2, 3) or len(self.spacing) != dims or len(self.origin) != dims:
            raise InputError(f"A grid needs 2 or 3 sizes, spacings and origin components; got {self}.")
        if len(self.direction) != dims * dims:
            raise InputError(f"A {dims}D grid needs {dims * dims} direction components, got {len(self.direction)}.")
        if any(int(n) < 1 for n in self.size) or any(not np.isfinite(s) or s <= 0 for s in self.spacing):
            raise InputError(f"Grid sizes must be >= 1 and spacings positive, got {self.size} and {self.spacing}.")
        object.__setattr__(self, "size", tuple(int(n) for n in self.size))
        object.__setattr__(self, "spacing", tuple(float(s) for s in self.spacing))
        object.__setattr__(self, "origin", tuple(float(o) for o in self.origin))
        object.__setattr__(self, "direction", tuple(float(d) for d in self.direction))

    @classmethod
    def of(cls, image: Image) -> Grid:
        """The grid of ``image``."""
        return cls(image.size, image.spacing, image.origin, tuple(image.direction.ravel()))

    @classmethod
    def of_sitk(cls, source: sitk.Image | sitk.ImageFileReader) -> Grid:
        """The grid of a SimpleITK image or of a reader after ``ReadImageInformation``.

        A 4D scalar image is a 3D grid whose fourth axis holds channels (as in :mod:`.sitk_bridge`).
        """
        dims = source.GetDimension()
        spatial = 3 if dims == 4 else dims
        direction = np.array(source.GetDirection()).reshape(dims, dims)[:spatial, :spatial]
        return cls(
            tuple(source.GetSize())[:spatial],
            tuple(source.GetSpacing())[:spatial],
            tuple(source.GetOrigin())[:spatial],
            tuple(direction.ravel()),
        )

    @property
    def dims(self) -> int:
        return len(self.size)

    @property
    def shape(self) -> tuple[int, ...]:
        """Size in array order (z, y, x)."""
        return self.size[::-1]

    @property
    def array_spacing(self) -> tuple[float, ...]:
        """Spacing in array order (z, y, x), mm."""
        return self.spacing[::-1]

    @property
    def direction_matrix(self) -> np.ndarray:
        return np.array(self.direction).reshape(self.dims, self.dims)

    def index_to_physical(self, index_xyz: Sequence[float]) -> np.ndarray:
        """LPS position of a continuous ITK index (x, y, z)."""
        scaled = np.asarray(index_xyz, dtype=np.float64) * np.asarray(self.spacing)
        return np.asarray(self.origin) + self.direction_matrix @ scaled

    def crop(self, box: Sequence[slice]) -> Grid:
        """The sub-grid covered by ``box`` (slices in array order with explicit start and stop)."""
        start_xyz = [axis.start for axis in box][::-1]
        size_xyz = tuple(axis.stop - axis.start for axis in box)[::-1]
        return Grid(size_xyz, self.spacing, tuple(self.index_to_physical(start_xyz)), self.direction)

    def resampled(self, target_spacing: Sequence[float | None] | None) -> Grid:
        """The grid with ``target_spacing`` (ITK order; ``None`` entries keep that axis) and the same centre.

        Each resampled axis gets ``max(1, round(size * spacing / target))`` voxels; axes within 0.1 % of
        their target are kept unchanged.
        """
        if target_spacing is None:
            return self
        if len(target_spacing) != self.dims:
            raise InputError(
                f"The plan's target spacing {tuple(target_spacing)} has {len(target_spacing)} components but the "
                f"image is {self.dims}D; use a plan made for {self.dims}D images."
            )
        size, spacing, start = [], [], []
        for n, old, new in zip(self.size, self.spacing, target_spacing, strict=True):
            if new is None or abs(old / new - 1.0) <= _KEEP_SPACING_RTOL:
                size.append(n)
                spacing.append(old)
                start.append(0.0)
                continue
            count = max(1, round(n * old / new))
            size.append(count)
            spacing.append(float(new))
            start.append((n - 1) / 2 - (count - 1) / 2 * new / old)  # keeps the centre of the grid
        return Grid(tuple(size), tuple(spacing), tuple(self.index_to_physical(start)), self.direction)

    def sitk_reference(self) -> sitk.Image:
        """An empty SimpleITK image on this grid (the reference of a resampling)."""
        reference = sitk.Image(list(self.size), sitk.sitkUInt8)
        reference.SetSpacing(self.spacing)
        reference.SetOrigin(self.origin)
        reference.SetDirection(self.direction)
        return reference

    def image(self, array: np.ndarray, labels: Sequence[LabelInfo] = ()) -> Image:
        """An :class:`Image` holding ``array`` (array order, channels first if any) on this grid."""
        if tuple(array.shape[-self.dims :]) != self.shape:
            raise InputError(f"An array of shape {array.shape} does not fit a grid of shape {self.shape}.")
        return Image(array, self.spacing, self.origin, self.direction_matrix, tuple(labels))

    def to_dict(self) -> dict[str, Any]:
        return {
            "size": list(self.size),
            "spacing": list(self.spacing),
            "origin": list(self.origin),
            "direction": list(self.direction),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Grid:
        try:
            return cls(tuple(data["size"]), tuple(data["spacing"]), tuple(data["origin"]), tuple(data["direction"]))
        except (KeyError, TypeError) as error:
            raise InputError(f"A grid description needs size, spacing, origin and direction lists: {error}.") from None


def resample_onto(
    image: Image, grid: Grid | Image, interpolation: Interpolation, *, dtype: npt.DTypeLike | None = None
) -> Image:
    """``image``'s voxels (every channel) on ``grid`` (a :class:`Grid`, or another image's grid), with SimpleITK.

    Voxels of ``grid`` outside ``image`` get 0. The voxels are converted to ``dtype`` (default: the image's own)
    before interpolating, and the result has that type (e.g. ``dtype=np.float32`` interpolates an int16 CT in
    float; ``"nearest"`` with the default keeps a label map's type). Label names and colours are kept.
    """
    target = Grid.of(grid) if isinstance(grid, Image) else grid
    dtype = image.array.dtype if dtype is None else np.dtype(dtype)
    source = to_sitk(image.with_array(image.array.astype(dtype, copy=False)))
    resampled = sitk.Resample(
        source, target.sitk_reference(), sitk.Transform(), _SITK_INTERPOLATORS[interpolation], 0.0
    )
    result = from_sitk(resampled, labels=image.labels)
    return result.with_array(result.array.astype(dtype, copy=False))


def physical_overlap(a: Image, b: Image) -> bool:
    """True when the voxel regions of ``a`` and ``b`` intersect in physical space.

    Each image occupies the box spanned by its voxels' outer faces (centres ± half a voxel); the test
    projects both boxes onto the axes of each image (a separating-axis test on oriented boxes), so it is
    exact for oblique directions too.
    """
    if a.spatial_dims != b.spatial_dims:
        return False
    boxes = [_face_corners(a), _face_corners(b)]
    axes = [a.direction[:, j] for j in range(a.spatial_dims)] + [b.direction[:, j] for j in range(b.spatial_dims)]
    for axis in axes:
        pa, pb = boxes[0] @ axis, boxes[1] @ axis
        if pa.max() <= pb.min() or pb.max() <= pa.min():
            return False
    if a.spatial_dims == 3:  # edge-edge cross products complete the separating-axis test in 3D
        for i in range(3):
            for j in range(3):
                axis = np.cross(a.direction[:, i], b.direction[:, j])
                if np.linalg.norm(axis) < 1e-9:
                    continue
                pa, pb = boxes[0] @ axis, boxes[1] @ axis
                if pa.max() <= pb.min() or pb.max() <= pa.min():
                    return False
    return True


def _face_corners(image: Image) -> np.ndarray:
    extremes = [(-0.5, n - 0.5) for n in image.size]
    grid = np.array(np.meshgrid(*extremes, indexing="ij")).reshape(image.spatial_dims, -1).T
    return image.index_to_physical(grid)


def resample_labels_onto(labels: Image, grid: Image) -> Image:
    """Resample a label map onto ``grid``'s voxel grid with nearest-neighbour interpolation.

    Voxels of ``grid`` outside ``labels`` get 0. Label names/colours and dtype are kept.
    Raises :class:`GeometryError` when the two images do not overlap physically.
    """
    if labels.is_multichannel:
        raise GeometryError("Label maps have one channel; this one has several.")
    if labels.spatial_dims != grid.spatial_dims:
        raise GeometryError(f"Cannot relate a {labels.spatial_dims}D label map to a {grid.spatial_dims}D image.")
    if not physical_overlap(labels, grid):
        raise GeometryError(
            "The two images do not overlap in physical space (check that they belong to the same case and "
            "that origin and direction are right)."
        )
    return resample_onto(labels, grid, "nearest")
