"""Data augmentation for training: :class:`AugmentationConfig` (what to do) and :class:`Augmenter` (doing it).

The augmenter works on batches of torch tensors on any device (CPU, CUDA, MPS) with pure torch operations.
Per sample, every spatial transform that fires (rotation, zoom, shear, translation, mirroring, elastic
deformation) is composed into one forward map and applied to images and labels with a single resampling
(:mod:`.augmentation_spatial` states the coordinate conventions); a sample for which only mirroring fires is
flipped exactly, and one for which nothing spatial fires is copied unchanged. Intensity transforms follow, on
the images only, in nnU-Net's order: noise, blur, brightness, contrast, inverted gamma, gamma.

Random parameters come from a CPU ``torch.Generator`` seeded with ``seed``; random fields (noise, elastic
displacements) are drawn on the data's device from a generator seeded from that stream, so a run is
reproducible on a given device type, and :meth:`Augmenter.state_dict` resumes it exactly.
"""

from __future__ import annotations

import base64
import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..errors import InputError
from ..records import record_from_dict
from .augmentation_intensity import add_gaussian_noise, adjust_contrast, adjust_gamma, gaussian_blur, scale_brightness
from .augmentation_spatial import elastic_displacement, mirror, resample, rotation_matrices, sampling_grid

__all__ = ["AugmentationConfig", "Augmenter"]

INTERPOLATIONS = {"linear": "bilinear", "nearest": "nearest"}
PADDINGS = ("zeros", "border", "reflection")
_PAIRS = (
    "scale_range",
    "elastic_alpha",
    "elastic_sigma",
    "noise_std",
    "blur_sigma",
    "brightness_range",
    "contrast_range",
    "gamma_range",
)


@dataclass(frozen=True)
class AugmentationConfig:
    """Which augmentations a training run applies, and how strongly. Each ``*_p`` is the probability that the
    transform fires for a sample; ranges are (low, high) and values are drawn uniformly from them.

    Defaults follow nnU-Net's 3D training where it has an equivalent (rotation, zoom, mirroring, noise,
    blur, brightness, contrast, gamma); translation, shear and elastic deformation are off (``p = 0``).

    - ``rotation_max_degrees``: largest absolute angle about z, y and x (array order); 3D rotates about all
      three (each angle drawn independently), 2D about z only (the first entry; nnU-Net uses 180 in 2D).
    - ``scale_range``: isotropic zoom factor; 2 shows the content twice as large (nnU-Net's factor is the
      inverse, a coordinate multiplier; the default range is the same).
    - ``translation_max_fraction``: largest shift along each axis, as a fraction of the patch size.
    - ``shear_max``: largest absolute off-diagonal entry of the shear matrix (tangent of the shear angle).
    - ``mirror_axes``: spatial axes that may be flipped (0 = first spatial axis), ``None`` for all;
      ``mirror_p`` is the probability per sample and axis.
    - ``elastic_alpha``: largest displacement in voxels; ``elastic_sigma``: smoothness (Gaussian standard
      deviation) of the displacement field in voxels.
    - ``noise_std``: standard deviation of additive Gaussian noise (image units, all channels alike).
    - ``blur_sigma``: Gaussian blur standard deviation in voxels, drawn per channel.
    - ``brightness_range``: multiplicative factor per channel.
    - ``contrast_range``: factor about the channel mean per channel; the result is clipped to the channel's
      original range.
    - ``gamma_range``: gamma exponent per channel; each channel's [min, max] is kept. Half the draws fall
      below 1 and half above (when the range spans 1), as in nnU-Net. ``gamma_inverted_p`` applies it to the
      inverted image. (nnU-Net keeps mean and standard deviation instead of the range.)
    - ``image_interpolation``: "linear" (bi/trilinear) or "nearest"; labels always use nearest neighbour.
    - ``image_padding``: image values outside the input, "zeros", "border" (edge voxels) or "reflection";
      labels are 0 (background) there.
    """

    rotation_p: float = 0.2
    rotation_max_degrees: tuple[float, float, float] = (30.0, 30.0, 30.0)
    scale_p: float = 0.2
    scale_range: tuple[float, float] = (0.7, 1.4)
    translation_p: float = 0.0
    translation_max_fraction: float = 0.1
    shear_p: float = 0.0
    shear_max: float = 0.1
    mirror_p: float = 0.5
    mirror_axes: tuple[int, ...] | None = None
    elastic_p: float = 0.0
    elastic_alpha: tuple[float, float] = (0.0, 8.0)
    elastic_sigma: tuple[float, float] = (9.0, 13.0)
    noise_p: float = 0.1
    noise_std: tuple[float, float] = (0.0, 0.1)
    blur_p: float = 0.2
    blur_sigma: tuple[float, float] = (0.5, 1.0)
    brightness_p: float = 0.15
    brightness_range: tuple[float, float] = (0.75, 1.25)
    contrast_p: float = 0.15
    contrast_range: tuple[float, float] = (0.75, 1.25)
    gamma_p: float = 0.3
    gamma_inverted_p: float = 0.1
    gamma_range: tuple[float, float] = (0.7, 1.5)
    image_interpolation: str = "linear"
    image_padding: str = "zeros"

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            if field.name.endswith("_p"):
                value = _number(field.name, getattr(self, field.name))
                _require(0 <= value <= 1, f"{field.name} must be a probability in [0, 1], got {value}.")
                object.__setattr__(self, field.name, value)
        for name in _PAIRS:
            object.__setattr__(self, name, _pair(name, getattr(self, name)))
        degrees = _numbers("rotation_max_degrees", self.rotation_max_degrees, 3)
        _require(all(0 <= d <= 180 for d in degrees), f"rotation_max_degrees must be in [0, 180], got {degrees}.")
        object.__setattr__(self, "rotation_max_degrees", degrees)
        for name in ("translation_max_fraction", "shear_max"):
            value = _number(name, getattr(self, name))
            _require(0 <= value <= 1, f"{name} must be in [0, 1], got {value}.")
            object.__setattr__(self, name, value)
        if self.mirror_axes is not None:
            axes = self.mirror_axes
            _require(
                isinstance(axes, (list, tuple))
                and all(isinstance(a, int) and not isinstance(a, bool) and 0 <= a <= 2 for a in axes)
                and len(set(axes)) == len(axes),
                f"mirror_axes must be distinct spatial axes 0, 1 or 2 (or None for all), got {axes!r}.",
            )
            object.__setattr__(self, "mirror_axes", tuple(axes))
        positive = ("scale_range", "elastic_sigma", "blur_sigma", "brightness_range", "gamma_range")
        for name in _PAIRS:
            low = getattr(self, name)[0]
            _require(
                low > 0 if name in positive else low >= 0, f"{name} must be {'> 0' if name in positive else '>= 0'}."
            )
        _require(
            self.image_interpolation in INTERPOLATIONS,
            f"image_interpolation must be one of {', '.join(INTERPOLATIONS)}, got {self.image_interpolation!r}.",
        )
        _require(
            self.image_padding in PADDINGS,
            f"image_padding must be one of {', '.join(PADDINGS)}, got {self.image_padding!r}.",
        )

    @classmethod
    def none(cls) -> AugmentationConfig:
        """A configuration with every transform off: the augmenter then returns its inputs unchanged."""
        return cls(**{field.name: 0.0 for field in dataclasses.fields(cls) if field.name.endswith("_p")})

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data (tuples become lists)."""
        return {
            key: list(value) if isinstance(value, tuple) else value for key, value in dataclasses.asdict(self).items()
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AugmentationConfig:
        """Inverse of :meth:`to_dict`; missing keys take their defaults, unknown keys are an error."""
        return record_from_dict(cls, data, "augmentation configuration")


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise InputError(message)


def _number(name: str, value: Any) -> float:
    _require(
        isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value),
        f"{name} must be a finite number, got {value!r}.",
    )
    return float(value)


def _numbers(name: str, value: Any, count: int) -> tuple[float, ...]:
    _require(
        isinstance(value, (list, tuple)) and len(value) == count,
        f"{name} must be {count} numbers, got {value!r}.",
    )
    return tuple(_number(name, v) for v in value)


def _pair(name: str, value: Any) -> tuple[float, float]:
    low, high = _numbers(name, value, 2)
    _require(low <= high, f"{name} must be (low, high) with low <= high, got {value!r}.")
    return low, high


class Augmenter:
    """Random augmentation of training batches following an :class:`AugmentationConfig`.

    ``augmenter(images, labels)`` takes images (B, C, *S) of a floating dtype and labels (B, 1, *S) int64 on
    one device, with ``spatial_dims`` spatial axes, and returns new tensors of the same shapes, dtypes and
    device (the inputs are not modified).

    The spatial map of a sample, forward (input to output) about the patch centre and in voxels, is
    ``p_out = M @ (R @ H @ (z * p_in) + t)``: zoom ``z``, shear ``H``, rotation ``R``, translation ``t``, then
    the mirroring ``M``; transforms that do not fire are the identity. The elastic displacement, when it
    fires, is added to the sampling position of each output voxel.
    """

    def __init__(self, config: AugmentationConfig, spatial_dims: int, *, seed: int = 0) -> None:
        _require(isinstance(config, AugmentationConfig), "config must be an AugmentationConfig.")
        _require(spatial_dims in (2, 3), f"spatial_dims must be 2 or 3, got {spatial_dims}.")
        axes = tuple(range(spatial_dims)) if config.mirror_axes is None else config.mirror_axes
        _require(
            all(axis < spatial_dims for axis in axes),
            f"mirror_axes {axes} name an axis that {spatial_dims}D data does not have; use axes below {spatial_dims}.",
        )
        self.config = config
        self.spatial_dims = spatial_dims
        self.seed = int(seed)
        self._mirror_axes = torch.zeros(spatial_dims, dtype=torch.bool)
        self._mirror_axes[list(axes)] = True
        self._generator = torch.Generator().manual_seed(self.seed)

    def state_dict(self) -> dict[str, Any]:
        """The random stream's position as JSON data (``generator``: base64 of the generator state)."""
        state = self._generator.get_state().numpy().tobytes()
        return {"seed": self.seed, "generator": base64.b64encode(state).decode("ascii")}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue the random stream from a :meth:`state_dict`."""
        try:
            raw = base64.b64decode(state["generator"], validate=True)
            seed = int(state["seed"])
            self._generator.set_state(torch.tensor(list(raw), dtype=torch.uint8))
        except (KeyError, TypeError, ValueError, RuntimeError) as error:
            raise InputError(
                f"Not an augmenter state ({error!r}); pass the dictionary that Augmenter.state_dict() returned."
            ) from None
        self.seed = seed

    @torch.no_grad()
    def __call__(self, images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        self._check(images, labels)
        params = self._draw(images.shape[0], images.shape[1], images.shape[2:])
        device_generator = torch.Generator(device=images.device).manual_seed(params["device_seed"])
        images, labels = self._spatial(images, labels, params, device_generator)
        return self._intensity(images, params, device_generator), labels

    def _check(self, images: Tensor, labels: Tensor) -> None:
        dims = self.spatial_dims
        _require(
            isinstance(images, Tensor) and images.ndim == dims + 2 and images.is_floating_point(),
            f"images must be a floating-point tensor (B, C, *spatial) with {dims} spatial axes.",
        )
        _require(
            isinstance(labels, Tensor)
            and labels.dtype == torch.int64
            and labels.shape == (images.shape[0], 1, *images.shape[2:]),
            f"labels must be an int64 tensor of shape {(images.shape[0], 1, *images.shape[2:])} (B, 1, *spatial), "
            f"got {getattr(labels, 'dtype', type(labels))} {tuple(getattr(labels, 'shape', ()))}.",
        )
        _require(images.device == labels.device, "images and labels must be on the same device.")

    def _draw(self, batch: int, channels: int, shape: torch.Size) -> dict[str, Any]:
        """All random parameters of one batch, drawn on the CPU in a fixed order (float64)."""
        config, dims, generator = self.config, self.spatial_dims, self._generator

        def fires(p: float, *size: int) -> Tensor:
            return torch.rand(size or (batch,), generator=generator, dtype=torch.float64) < p

        def uniform(bounds: tuple[float, float], *size: int) -> Tensor:
            low, high = bounds
            return low + (high - low) * torch.rand(size or (batch,), generator=generator, dtype=torch.float64)

        def gamma() -> Tensor:  # below or above 1 with probability 1/2 each when the range spans 1
            low, high = config.gamma_range
            below = uniform((low, min(high, 1.0)), batch, channels)
            above = uniform((max(low, 1.0), high), batch, channels)
            return torch.where(fires(0.5 if low < 1 < high else float(high <= 1), batch, channels), below, above)

        degrees = torch.tensor(config.rotation_max_degrees[: 1 if dims == 2 else 3], dtype=torch.float64)
        shear = uniform((-config.shear_max, config.shear_max), batch, dims, dims)
        return {
            "rotation": fires(config.rotation_p),
            "angles": torch.deg2rad(degrees * uniform((-1.0, 1.0), batch, len(degrees))),
            "scale": fires(config.scale_p),
            "zoom": uniform(config.scale_range),
            "translation": fires(config.translation_p),
            "shift": uniform((-config.translation_max_fraction, config.translation_max_fraction), batch, dims)
            * torch.tensor([float(s) for s in shape], dtype=torch.float64),
            "shear": fires(config.shear_p),
            "shear_matrix": shear * (1 - torch.eye(dims, dtype=torch.float64)) + torch.eye(dims, dtype=torch.float64),
            "mirror": fires(config.mirror_p, batch, dims) & self._mirror_axes,
            "elastic": fires(config.elastic_p),
            "alpha": uniform(config.elastic_alpha),
            "sigma": uniform(config.elastic_sigma),
            "noise": fires(config.noise_p),
            "noise_std": uniform(config.noise_std),
            "blur": fires(config.blur_p),
            "blur_sigma": uniform(config.blur_sigma, batch, channels),
            "brightness": fires(config.brightness_p),
            "brightness_factor": uniform(config.brightness_range, batch, channels),
            "contrast": fires(config.contrast_p),
            "contrast_factor": uniform(config.contrast_range, batch, channels),
            "gamma_inverted": fires(config.gamma_inverted_p),
            "gamma_inverted_value": gamma(),
            "gamma": fires(config.gamma_p),
            "gamma_value": gamma(),
            "device_seed": int(torch.randint(0, 2**62, (1,), generator=generator)),
        }

    def _spatial(
        self, images: Tensor, labels: Tensor, params: dict[str, Any], generator: torch.Generator
    ) -> tuple[Tensor, Tensor]:
        """One resampling for the samples with an affine or elastic transform; exact flips or copies otherwise."""
        resampled = params["rotation"] | params["scale"] | params["translation"] | params["shear"] | params["elastic"]
        images_out, labels_out = images.clone(), labels.clone()
        for index in torch.nonzero(~resampled & params["mirror"].any(1)).flatten().tolist():
            axes = torch.nonzero(params["mirror"][index]).flatten().tolist()
            images_out[index], labels_out[index] = mirror(images[index], axes), mirror(labels[index], axes)
        chosen = torch.nonzero(resampled).flatten()
        if len(chosen) == 0:
            return images_out, labels_out
        dims, shape = self.spatial_dims, images.shape[2:]
        eye = torch.eye(dims, dtype=torch.float64)

        def where(fired: str, value: Tensor, neutral: Tensor) -> Tensor:
            mask = params[fired][chosen].reshape(-1, *([1] * (value.ndim - 1)))
            return torch.where(mask, value[chosen], neutral)

        zoom = where("scale", params["zoom"], torch.ones((), dtype=torch.float64))[:, None, None]
        linear = where("rotation", rotation_matrices(params["angles"]), eye) @ where(
            "shear", params["shear_matrix"], eye
        )
        flip = torch.diag_embed(1 - 2 * params["mirror"][chosen].to(torch.float64))
        shift = where("translation", params["shift"], torch.zeros((), dtype=torch.float64))
        matrix, translation = flip @ (linear * zoom), (flip @ shift[..., None])[..., 0]
        work = torch.float64 if images.dtype == torch.float64 else torch.float32
        displacement = None
        if bool(params["elastic"][chosen].any()):
            displacement = torch.zeros((len(chosen), dims, *shape), device=images.device, dtype=work)
            for row, index in enumerate(chosen.tolist()):
                if params["elastic"][index]:
                    alpha, sigma = float(params["alpha"][index]), float(params["sigma"][index])
                    displacement[row] = elastic_displacement(shape, alpha, sigma, generator, dtype=work)
        grid = sampling_grid(matrix, translation, shape, displacement, device=images.device, dtype=work)
        rows = chosen.to(images.device)
        images_out[rows], labels_out[rows] = resample(
            images[rows],
            labels[rows],
            grid,
            image_mode=INTERPOLATIONS[self.config.image_interpolation],
            padding=self.config.image_padding,
        )
        return images_out, labels_out

    def _intensity(self, images: Tensor, params: dict[str, Any], generator: torch.Generator) -> Tensor:
        """Noise, blur, brightness, contrast, inverted gamma and gamma, each on the samples where it fires.

        ``images`` is the spatial step's new tensor and is updated in place."""
        steps = (
            ("noise", lambda x, rows: add_gaussian_noise(x, params["noise_std"][rows], generator)),
            ("blur", lambda x, rows: gaussian_blur(x, params["blur_sigma"][rows])),
            ("brightness", lambda x, rows: scale_brightness(x, params["brightness_factor"][rows])),
            ("contrast", lambda x, rows: adjust_contrast(x, params["contrast_factor"][rows])),
            ("gamma_inverted", lambda x, rows: adjust_gamma(x, params["gamma_inverted_value"][rows], inverted=True)),
            ("gamma", lambda x, rows: adjust_gamma(x, params["gamma_value"][rows])),
        )
        for name, transform in steps:
            rows = torch.nonzero(params[name]).flatten()
            if len(rows):
                on_device = rows.to(images.device)
                images[on_device] = transform(images[on_device], rows)
        return images
