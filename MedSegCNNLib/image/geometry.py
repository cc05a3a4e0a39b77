"""Voxel grids: the :class:`Grid` type, overlap tests, :func:`resample_onto`, the one way to put an image's
voxels onto another grid, :func:`place_on_grid`, label voxels pasted exactly where two grids share a lattice,
:func:`grid_difference`, the one wording of how two grids differ, and :func:`channel_onto`, the one way to put a
further input channel of a case onto its first channel's grid."""

from __future__ import annotations

import logging
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

logger = logging.getLogger(__name__)

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


LATTICE_INDEX_TOLERANCE = 1e-3
"""Largest distance, in voxels, of the source origin from a target voxel centre for the grids to share a lattice."""

Placed = tuple[tuple[slice, ...], np.ndarray]
"""Label voxels placed on a grid: ``(slices, values)``, ``values`` the part of the grid's array at ``slices``."""


def place_on_grid(source: Image, grid: Image) -> Placed | None:
    """``source``'s label voxels on ``grid``: ``(slices, values)`` with ``values`` the part of ``grid[slices]`` it
    covers; ``None`` when the two do not overlap in space. Both are 3D single-channel images.

    Two grids share a lattice when they have the same spacing and direction and one's origin lies on a voxel centre
    of the other (e.g. a segment layer that Slicer cropped to its bounding box, on its volume's grid): every source
    voxel then is a target voxel and is copied as it is. Otherwise each target voxel takes the value of the nearest
    source voxel centre (:func:`resample_labels_onto`), 0 outside the source.
    """
    if not physical_overlap(source, grid):
        return None
    offset = _lattice_offset(source, grid)
    if offset is None:
        return (slice(None),) * 3, resample_labels_onto(source, grid).array
    target, taken = [], []
    for start, length, size in zip(offset[::-1], source.shape, grid.shape, strict=True):  # array order (z, y, x)
        low, high = max(start, 0), min(start + length, size)
        target.append(slice(low, high))
        taken.append(slice(low - start, high - start))
    return tuple(target), source.array[tuple(taken)]


def _lattice_offset(source: Image, grid: Image) -> tuple[int, ...] | None:
    """The ITK index ``(x, y, z)`` in ``grid`` of ``source``'s first voxel when they share a lattice, else None."""
    scale = max(max(grid.spacing), 1.0)
    if not (
        np.allclose(source.spacing, grid.spacing, rtol=0, atol=1e-4 * scale)
        and np.allclose(source.direction, grid.direction, rtol=0, atol=1e-4)
    ):
        return None
    index = grid.physical_to_index(np.asarray(source.origin))
    rounded = np.round(index)
    if np.max(np.abs(index - rounded)) > LATTICE_INDEX_TOLERANCE:
        return None
    return tuple(int(i) for i in rounded)


def grid_difference(grid: Grid, reference: Grid) -> str:
    """How ``grid`` differs from ``reference``, the one wording of every "on another grid" message.

    One phrase per property that differs (by more than 1e-6): size and spacing (mm) with both values (``grid``'s
    first), the origin by the distance between the two origins in mm (with both origins), the direction by the
    largest angle between corresponding axes, in degrees. Empty when nothing differs.
    """
    parts = []
    if grid.size != reference.size:
        parts.append(f"size {_tuple_text(grid.size)} vs {_tuple_text(reference.size)}")
    if grid.dims != reference.dims or not np.allclose(grid.spacing, reference.spacing, rtol=0, atol=_SAME):
        parts.append(f"spacing {_tuple_text(grid.spacing)} vs {_tuple_text(reference.spacing)} mm")
    if grid.dims == reference.dims:
        distance = float(np.linalg.norm(np.subtract(grid.origin, reference.origin)))
        if distance > _SAME:
            parts.append(
                f"origin {distance:.3g} mm apart ({_tuple_text(grid.origin)} vs {_tuple_text(reference.origin)} mm)"
            )
        angle = _axis_angle(grid, reference)
        if angle > _SAME:
            parts.append(f"direction: axes turned by up to {angle:.3g}°")
    return ", ".join(parts)


def _axis_angle(grid: Grid, reference: Grid) -> float:
    """The largest angle between an axis of ``grid`` and the same axis of ``reference``, in degrees."""
    cosines = np.sum(grid.direction_matrix * reference.direction_matrix, axis=0)
    norms = np.linalg.norm(grid.direction_matrix, axis=0) * np.linalg.norm(reference.direction_matrix, axis=0)
    return float(np.degrees(np.arccos(np.clip(cosines / norms, -1.0, 1.0))).max())


_SAME = 1e-6  # differences up to this (mm, direction cosines, degrees) are float noise in messages


def _tuple_text(values: Sequence[float]) -> str:
    """``(1, 0.5, 2.25)``: values rounded to 4 decimals, without trailing zeros."""
    return "(" + ", ".join(f"{round(float(value), 4):g}" for value in values) + ")"


PARTIAL_CHANNEL_LIMIT = 0.01
"""The largest fraction of the first channel's voxels that another channel of a case may leave uncovered (1 %)
without ``allow_partial_channels``; more is refused, any uncovered voxel is warned about."""


def uncovered_fraction(image: Image, reference: Image | Grid) -> float:
    """The fraction (0..1) of ``reference``'s voxels whose centres lie outside ``image``'s voxel region (the box
    of its voxels' outer faces): the voxels :func:`resample_onto` fills with 0."""
    target = Grid.of(reference) if isinstance(reference, Image) else reference
    ones = Grid.of(image).image(np.ones(Grid.of(image).shape, dtype=np.uint8))
    inside = resample_onto(ones, target, "nearest")
    return 1.0 - float(np.count_nonzero(inside.array)) / inside.array.size


def channel_onto(
    channel: Image, reference: Image, *, what: str, reference_what: str, allow_partial: bool = False
) -> Image:
    """Another input channel of a case (``what`` names it in messages, e.g. "Case c: image 1 (t2.nii.gz)") on the
    grid of its first channel ``reference`` (``reference_what``): unchanged on the same grid, else resampled
    linearly as float32.

    Voxels of ``reference`` outside ``channel`` would be 0: any is warned about with their share and how the grids
    differ; more than :data:`PARTIAL_CHANNEL_LIMIT` of them raise :class:`InputError` unless ``allow_partial``
    (then only the warning). Channels that do not overlap at all are always refused.
    """
    if channel.same_grid(reference):
        return channel
    difference = grid_difference(Grid.of(channel), Grid.of(reference))
    if not physical_overlap(channel, reference):
        raise InputError(
            f"{what} does not overlap {reference_what} in physical space ({difference}); check that both belong to "
            "the same case and that their headers are right."
        )
    uncovered = uncovered_fraction(channel, reference)
    if uncovered > 0:
        text = (
            f"{what} does not cover {uncovered:.1%} of the voxels of {reference_what} ({difference}); those voxels "
            "get 0 in this channel"
        )
        if uncovered > PARTIAL_CHANNEL_LIMIT and not allow_partial:
            raise InputError(
                f"{text}, more than the {PARTIAL_CHANNEL_LIMIT:.0%} allowed. Give channels that show the same region "
                "(check the files and their headers), or pass --allow-partial-channels (Python: "
                "allow_partial_channels=True) to go on with the zeros."
            )
        logger.warning("%s.", text)
    else:
        logger.info("%s resampled onto the grid of %s (%s).", what, reference_what, difference)
    return resample_onto(channel, reference, "linear", dtype=np.float32)
