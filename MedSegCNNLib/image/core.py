"""The one image type of MedSegCNN: a voxel array with its physical geometry.

Conventions (the same everywhere in the library):

- Physical space is ITK's LPS patient space, in millimetres. RAS (Slicer's world space) appears only in
  the MRML layer.
- ``array`` is in numpy order, the reverse of ITK's index order: ``(z, y, x)`` for 3D and ``(y, x)`` for
  2D, exactly as ``SimpleITK.GetArrayFromImage`` returns it. A multi-channel image puts channels first:
  ``(C, z, y, x)``. Whether an image has channels follows from ``array.ndim`` versus ``len(spacing)``.
- ``spacing``, ``origin`` and the columns of ``direction`` are in ITK order ``(x, y, z)``, as SimpleITK,
  NIfTI/NRRD headers and Slicer show them. ``direction[:, j]`` is the unit vector (LPS) of index axis j.
  The voxel with ITK index ``i = (x, y, z)`` has its centre at ``origin + direction @ (spacing * i)``.
- Use :attr:`Image.array_spacing` when spacing is needed in array axis order (metrics, distance maps).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError

Color = tuple[float, float, float]


@dataclass(frozen=True)
class LabelInfo:
    """Name and display colour of one label value of a label map.

    ``color`` is RGB with components in [0, 1] (Slicer's convention), or ``None`` when unknown.
    """

    value: int
    name: str
    color: Color | None = None

    def __post_init__(self) -> None:
        if int(self.value) != self.value or self.value < 0:
            raise InputError(f"Label value {self.value!r} must be a non-negative integer.")
        object.__setattr__(self, "value", int(self.value))
        if self.color is not None:
            color = tuple(float(c) for c in self.color)
            if len(color) != 3 or not all(0.0 <= c <= 1.0 for c in color):
                raise InputError(f"Colour of label {self.value} must be three numbers in [0, 1], got {self.color!r}.")
            object.__setattr__(self, "color", color)


@dataclass(frozen=True, eq=False)
class Image:
    """A scalar or multi-channel 2D/3D image with spacing, origin and direction (see module docstring).

    ``labels`` names label values of a label map (empty for intensity images and unnamed label maps).
    """

    array: np.ndarray
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: np.ndarray
    labels: tuple[LabelInfo, ...] = field(default=())

    def __post_init__(self) -> None:
        spacing = tuple(float(s) for s in self.spacing)
        dims = len(spacing)
        if dims not in (2, 3):
            raise InputError(f"Images must be 2D or 3D; got spacing with {dims} components.")
        if not all(np.isfinite(s) and s > 0 for s in spacing):
            raise InputError(f"Spacing must be positive and finite, got {spacing}.")
        origin = tuple(float(o) for o in self.origin)
        if len(origin) != dims or not all(np.isfinite(origin)):
            raise InputError(f"Origin must have {dims} finite components, got {self.origin!r}.")
        direction = np.array(self.direction, dtype=np.float64).reshape(dims, dims)
        if not np.all(np.isfinite(direction)) or abs(np.linalg.det(direction)) < 1e-6:
            raise InputError(f"Direction matrix must be finite and invertible, got {direction.tolist()}.")
        array = np.asarray(self.array)
        if array.ndim not in (dims, dims + 1):
            raise InputError(
                f"A {dims}D image needs an array with {dims} axes (or {dims + 1} with channels first); "
                f"got shape {array.shape}."
            )
        if array.ndim == dims + 1 and array.shape[0] < 1:
            raise InputError("A multi-channel image needs at least one channel.")
        labels = tuple(self.labels)
        values = [info.value for info in labels]
        if len(set(values)) != len(values):
            raise InputError(f"Label values must be unique, got {values}.")
        object.__setattr__(self, "array", array)
        object.__setattr__(self, "spacing", spacing)
        object.__setattr__(self, "origin", origin)
        object.__setattr__(self, "direction", direction)
        object.__setattr__(self, "labels", tuple(sorted(labels, key=lambda info: info.value)))

    @classmethod
    def from_array(
        cls,
        array: np.ndarray,
        spacing: Sequence[float] | None = None,
        origin: Sequence[float] | None = None,
        direction: np.ndarray | Sequence[float] | None = None,
        labels: Iterable[LabelInfo] = (),
        *,
        spatial_dims: int | None = None,
    ) -> Image:
        """Build an image with default geometry (1 mm, zero origin, identity direction) where not given.

        ``spatial_dims`` is needed only when neither spacing, origin nor direction tells it and the array
        has channels; otherwise it is ``array.ndim``.
        """
        dims = spatial_dims or (
            len(spacing) if spacing is not None else len(origin) if origin is not None else np.asarray(array).ndim
        )
        return cls(
            array=array,
            spacing=tuple(spacing) if spacing is not None else (1.0,) * dims,
            origin=tuple(origin) if origin is not None else (0.0,) * dims,
            direction=np.eye(dims) if direction is None else np.asarray(direction, dtype=np.float64),
            labels=tuple(labels),
        )

    # ----- shape -----------------------------------------------------------------------------------

    @property
    def spatial_dims(self) -> int:
        """2 or 3."""
        return len(self.spacing)

    @property
    def is_multichannel(self) -> bool:
        """True when ``array`` has a leading channel axis."""
        return self.array.ndim == self.spatial_dims + 1

    @property
    def num_channels(self) -> int:
        return self.array.shape[0] if self.is_multichannel else 1

    @property
    def shape(self) -> tuple[int, ...]:
        """Spatial shape in array order ``(z, y, x)``."""
        return tuple(self.array.shape[-self.spatial_dims :])

    @property
    def size(self) -> tuple[int, ...]:
        """Spatial size in ITK order ``(x, y, z)``."""
        return self.shape[::-1]

    @property
    def array_spacing(self) -> tuple[float, ...]:
        """Spacing in array axis order ``(z, y, x)``, in mm."""
        return self.spacing[::-1]

    @property
    def voxel_volume_mm3(self) -> float:
        return float(np.prod(self.spacing))

    # ----- geometry --------------------------------------------------------------------------------

    @property
    def affine(self) -> np.ndarray:
        """Homogeneous matrix mapping an ITK continuous index ``(x, y, z, 1)`` to LPS millimetres."""
        dims = self.spatial_dims
        matrix = np.eye(dims + 1)
        matrix[:dims, :dims] = self.direction * np.asarray(self.spacing)[None, :]
        matrix[:dims, dims] = self.origin
        return matrix

    def index_to_physical(self, index_xyz: np.ndarray) -> np.ndarray:
        """LPS coordinates of ITK continuous indices; ``index_xyz`` has shape ``(..., dims)``."""
        index_xyz = np.asarray(index_xyz, dtype=np.float64)
        scaled = index_xyz * np.asarray(self.spacing)
        return scaled @ self.direction.T + np.asarray(self.origin)

    def physical_to_index(self, points: np.ndarray) -> np.ndarray:
        """ITK continuous indices of LPS points; ``points`` has shape ``(..., dims)``."""
        points = np.asarray(points, dtype=np.float64) - np.asarray(self.origin)
        return (points @ np.linalg.inv(self.direction).T) / np.asarray(self.spacing)

    def corners(self) -> np.ndarray:
        """LPS coordinates of the centres of the 2**dims corner voxels, shape ``(2**dims, dims)``."""
        extremes = [(0, n - 1) for n in self.size]
        grid = np.array(np.meshgrid(*extremes, indexing="ij")).reshape(self.spatial_dims, -1).T
        return self.index_to_physical(grid)

    def same_grid(self, other: Image, *, tolerance: float = 1e-4) -> bool:
        """True when both images have the same size, spacing, origin and direction.

        Spacing and origin are compared with a tolerance of ``tolerance`` mm (scaled by the spacing),
        direction cosines with ``tolerance``.
        """
        if self.spatial_dims != other.spatial_dims or self.shape != other.shape:
            return False
        scale = max(max(self.spacing), 1.0)
        return bool(
            np.allclose(self.spacing, other.spacing, rtol=0, atol=tolerance * scale)
            and np.allclose(self.origin, other.origin, rtol=0, atol=tolerance * scale)
            and np.allclose(self.direction, other.direction, rtol=0, atol=tolerance)
        )

    # ----- labels and copies -----------------------------------------------------------------------

    def label_info(self, value: int) -> LabelInfo | None:
        """The :class:`LabelInfo` of ``value``, or ``None`` when the image does not name it."""
        return next((info for info in self.labels if info.value == value), None)

    def with_array(self, array: np.ndarray, *, labels: Iterable[LabelInfo] | None = None) -> Image:
        """A new image with the same geometry and ``array`` (labels kept unless given)."""
        return dataclasses.replace(self, array=array, labels=self.labels if labels is None else tuple(labels))

    def with_labels(self, labels: Iterable[LabelInfo]) -> Image:
        """A new image with the same array and geometry and the given label names/colours."""
        return dataclasses.replace(self, labels=tuple(labels))

    def __repr__(self) -> str:
        channels = f", channels={self.num_channels}" if self.is_multichannel else ""
        spacing = ", ".join(f"{s:g}" for s in self.spacing)
        return (
            f"Image(size={self.size}{channels}, dtype={self.array.dtype}, spacing=({spacing}), "
            f"origin={tuple(round(o, 4) for o in self.origin)}, labels={len(self.labels)})"
        )
