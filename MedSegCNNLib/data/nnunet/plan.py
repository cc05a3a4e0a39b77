"""The preprocessing plan of an imported nnU-Net v2 model: the model card's ``preprocessing`` when its ``kind`` is
``"nnunet"``. It records everything nnU-Net's own inference does before and after the network, so that
:mod:`.preprocessing` can repeat it exactly without nnunetv2. Nothing here imports torch.

Axes: nnU-Net works on the image array in file voxel order ``(z, y, x)`` (SimpleITK's array order), permuted
by ``transpose_forward``; ``spacing`` and ``patch_size`` are in that permuted order (mm and voxels). A 2D
configuration's ``spacing`` has two entries (the in-plane axes); its slices run along permuted axis 0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ...errors import InputError
from ...records import record_from_dict

KIND = "nnunet"
#: nnU-Net's normalisation schemes (its class names), and what the plan calls them.
NORMALIZATIONS = {
    "ZScoreNormalization": "zscore",
    "CTNormalization": "ct",
    "NoNormalization": "none",
    "RescaleTo01Normalization": "rescale_to_0_1",
    "RGBTo01Normalization": "rgb_to_0_1",
}
#: nnU-Net's resampling functions that :mod:`.resampling` reproduces.
RESAMPLING_FUNCTIONS = ("resample_data_or_seg_to_shape", "resample_torch_fornnunet")
#: Spline orders reproduced by :mod:`.resampling` (nnU-Net's defaults: 3 for images, 1 for logits, 0 across).
RESAMPLING_ORDERS = (0, 1, 3)
#: nnU-Net's anisotropy threshold: an axis is resampled on its own when max(spacing) / min(spacing) exceeds it.
ANISOTROPY_THRESHOLD = 3.0
CONFIGURATIONS = ("3d_fullres", "2d")
_CT_KEYS = ("mean", "std", "percentile_00_5", "percentile_99_5")


@dataclass(frozen=True)
class ChannelNormalization:
    """One input channel's normalisation, as nnU-Net does it (intensities in the image's own units).

    - ``zscore``: ``(x - m) / max(s, 1e-8)`` with this image's mean and standard deviation (float32), over the
      non-zero mask (filled holes) only when ``use_mask``.
    - ``ct``: clip to [``percentile_00_5``, ``percentile_99_5``], then ``(x - mean) / max(std, 1e-8)`` with the
      training set's foreground statistics.
    - ``none``: kept; ``rescale_to_0_1``: ``(x - min) / max(max - min, 1e-8)``; ``rgb_to_0_1``: ``x / 255``.
    """

    scheme: str
    use_mask: bool = False
    mean: float | None = None
    std: float | None = None
    percentile_00_5: float | None = None
    percentile_99_5: float | None = None

    def __post_init__(self) -> None:
        if self.scheme not in NORMALIZATIONS.values():
            raise InputError(f"unknown normalisation {self.scheme!r} (known: {', '.join(NORMALIZATIONS.values())})")
        numbers = {key: getattr(self, key) for key in _CT_KEYS}
        if self.scheme == "ct":
            bad = [key for key, value in numbers.items() if not _finite_number(value)]
            if bad:
                raise InputError(f"CT normalisation needs finite {', '.join(bad)}")
            if self.std <= 0 or self.percentile_00_5 > self.percentile_99_5:
                raise InputError("CT normalisation needs std > 0 and percentile_00_5 <= percentile_99_5")
        elif any(value is not None for value in numbers.values()):
            raise InputError(f"normalisation {self.scheme!r} takes no statistics")
        if not isinstance(self.use_mask, bool):
            raise InputError("use_mask must be true or false")

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"scheme": self.scheme, "use_mask": self.use_mask}
        if self.scheme == "ct":
            data |= {key: getattr(self, key) for key in _CT_KEYS}
        return data


@dataclass(frozen=True)
class Resampling:
    """One of nnU-Net's resampling calls: ``function`` (its name) with the spline ``order`` in-plane, ``order_z``
    along the anisotropic axis, and ``force_separate_z`` (None: decided from the spacings)."""

    function: str = "resample_data_or_seg_to_shape"
    order: int = 3
    order_z: int = 0
    force_separate_z: bool | None = None

    def __post_init__(self) -> None:
        if self.function not in RESAMPLING_FUNCTIONS:
            raise InputError(
                f"unsupported resampling function {self.function!r} (supported: {', '.join(RESAMPLING_FUNCTIONS)})"
            )
        for name in ("order", "order_z"):
            value = getattr(self, name)
            if isinstance(value, bool) or value not in RESAMPLING_ORDERS:
                raise InputError(f"unsupported resampling {name} {value!r} (supported: {RESAMPLING_ORDERS})")
        if self.force_separate_z is not None and not isinstance(self.force_separate_z, bool):
            raise InputError("force_separate_z must be true, false or null")

    def to_dict(self) -> dict[str, Any]:
        return {"function": self.function, "order": self.order, "order_z": self.order_z,
                "force_separate_z": self.force_separate_z}  # fmt: skip


@dataclass(frozen=True)
class NnUNetPlan:
    """How an nnU-Net v2 configuration turns an image into network input and logits back into labels.

    ``mirror_axes``: the network's spatial axes whose flips are averaged (nnU-Net's
    ``inference_allowed_mirroring_axes``; empty for NoMirroring trainers). ``regions_class_order``: for
    region-based models, the label painted for each sigmoid output above 0.5, in painting order; None for
    softmax models. ``input_orientation``: ``"RAS"`` when the network expects the voxels in the closest
    canonical RAS order (axis 0 towards the right, 1 anterior, 2 superior), as nnU-Net's reorienting readers and
    TotalSegmentator give them; None for the file's own voxel order.
    """

    configuration: str
    transpose_forward: tuple[int, ...]
    spacing: tuple[float, ...]
    normalization: tuple[ChannelNormalization, ...]
    resampling_data: Resampling
    resampling_probabilities: Resampling
    mirror_axes: tuple[int, ...] = ()
    regions_class_order: tuple[int, ...] | None = None
    input_orientation: str | None = None
    kind: str = KIND

    def __post_init__(self) -> None:
        if self.kind != KIND:
            raise InputError(f"kind must be {KIND!r}")
        if self.configuration not in CONFIGURATIONS:
            raise InputError(
                f"configuration {self.configuration!r} is not supported (supported: {', '.join(CONFIGURATIONS)})"
            )
        transpose = tuple(self.transpose_forward)
        if sorted(transpose) != [0, 1, 2] or any(isinstance(a, bool) for a in transpose):
            raise InputError(f"transpose_forward must be a permutation of 0, 1, 2, got {list(self.transpose_forward)}")
        spacing = tuple(self.spacing)
        if len(spacing) != self.spatial_dims or not all(_finite_number(s) and s > 0 for s in spacing):
            raise InputError(f"spacing must be {self.spatial_dims} positive numbers, got {list(self.spacing)}")
        normalization = tuple(
            entry
            if isinstance(entry, ChannelNormalization)
            else record_from_dict(ChannelNormalization, entry, "normalization")
            for entry in self.normalization
        )
        if not normalization:
            raise InputError("normalization needs one entry per input channel")
        mirror = tuple(self.mirror_axes)
        if any(isinstance(a, bool) or a not in range(self.spatial_dims) for a in mirror) or len(set(mirror)) < len(
            mirror
        ):
            raise InputError(f"mirror_axes must be distinct axes below {self.spatial_dims}, got {list(mirror)}")
        regions = self.regions_class_order
        if regions is not None:
            regions = tuple(regions)
            if not regions or any(isinstance(r, bool) or not isinstance(r, int) or r < 1 for r in regions):
                raise InputError(f"regions_class_order must be positive labels, got {list(regions)}")
        if self.input_orientation not in (None, "RAS"):
            raise InputError(f"input_orientation must be null or 'RAS', got {self.input_orientation!r}")
        object.__setattr__(self, "transpose_forward", transpose)
        object.__setattr__(self, "spacing", tuple(float(s) for s in spacing))
        object.__setattr__(self, "normalization", normalization)
        object.__setattr__(self, "mirror_axes", mirror)
        object.__setattr__(self, "regions_class_order", regions)
        for name in ("resampling_data", "resampling_probabilities"):
            value = getattr(self, name)
            if not isinstance(value, Resampling):
                object.__setattr__(self, name, record_from_dict(Resampling, value, name))

    @property
    def spatial_dims(self) -> int:
        return 2 if self.configuration == "2d" else 3

    @property
    def num_channels(self) -> int:
        return len(self.normalization)

    @property
    def transpose_backward(self) -> tuple[int, ...]:
        return tuple(self.transpose_forward.index(axis) for axis in range(3))

    @property
    def target_spacing(self) -> tuple[float | None, ...]:
        """The network's spacing in ITK order (x, y, z), mm; ``None`` for the slice axis of a 2D model whose
        slices run along z (for display)."""
        spacing: list[float | None] = list(self.spacing) if self.spatial_dims == 3 else [None, *self.spacing]
        in_array_order = [spacing[self.transpose_backward[axis]] for axis in range(3)]
        return tuple(reversed(in_array_order))

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": KIND,
            "configuration": self.configuration,
            "transpose_forward": list(self.transpose_forward),
            "spacing": list(self.spacing),
            "normalization": [entry.to_dict() for entry in self.normalization],
            "resampling_data": self.resampling_data.to_dict(),
            "resampling_probabilities": self.resampling_probabilities.to_dict(),
            "mirror_axes": list(self.mirror_axes),
            "regions_class_order": None if self.regions_class_order is None else list(self.regions_class_order),
            "input_orientation": self.input_orientation,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NnUNetPlan:
        """The plan of a card's ``preprocessing`` object; :class:`InputError` for anything malformed."""
        return record_from_dict(cls, data, "nnU-Net plan")


def _finite_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def anisotropic_axis(current: Sequence[float], new: Sequence[float], force_separate_z: bool | None) -> int | None:
    """The axis nnU-Net resamples on its own (with ``order_z``), or None (nnU-Net's
    ``determine_do_sep_z_and_axis``): the single axis of largest spacing when ``force_separate_z``, or, when it
    is None, when either spacing is anisotropic (max / min > :data:`ANISOTROPY_THRESHOLD`), the current one
    first; never when two or three axes share the largest spacing."""
    if force_separate_z is False:
        return None
    if force_separate_z is None:
        if _anisotropic(current):
            reference = current
        elif _anisotropic(new):
            reference = new
        else:
            return None
    else:
        reference = current
    largest = max(reference)
    axes = [axis for axis, spacing in enumerate(reference) if largest / spacing == 1]
    return axes[0] if len(axes) == 1 else None


def _anisotropic(spacing: Sequence[float]) -> bool:
    return max(spacing) / min(spacing) > ANISOTROPY_THRESHOLD
