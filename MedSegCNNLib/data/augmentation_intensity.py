"""Intensity augmentation on batched image tensors ``(N, C, *spatial)``: pure torch, on the images' device.

Each function takes the images of the samples to change and their parameters, one per sample ``(N,)`` or
one per sample and channel ``(N, C)``, already on the images' device, and returns new tensors. Statistics
(minimum, maximum, mean) are taken per sample and channel over all voxels.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["add_gaussian_noise", "adjust_contrast", "adjust_gamma", "gaussian_blur", "scale_brightness"]


def _per_channel(values: Tensor, images: Tensor) -> Tensor:
    """``values`` of shape (N,) or (N, C) shaped to broadcast against ``images`` (N, C, *spatial)."""
    values = values.to(images.dtype).to(images.device)  # cast first: MPS has no float64
    if values.ndim == 1:
        values = values[:, None]
    return values.reshape(*values.shape, *([1] * (images.ndim - 2)))


def _channel_stats(images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Minimum, maximum and mean of each sample and channel, shaped (N, C, 1, ...)."""
    flat = images.flatten(2)
    shape = (*images.shape[:2], *([1] * (images.ndim - 2)))
    return flat.amin(-1).reshape(shape), flat.amax(-1).reshape(shape), flat.mean(-1).reshape(shape)


def add_gaussian_noise(images: Tensor, std: Tensor, generator: torch.Generator) -> Tensor:
    """``images`` plus zero-mean Gaussian noise with standard deviation ``std`` (N,), the same for all channels.

    The noise is drawn on the images' device from ``generator`` (a generator on that device).
    """
    noise = torch.randn(images.shape, generator=generator, device=images.device, dtype=images.dtype)
    return images + noise * _per_channel(std, images)


def gaussian_blur(images: Tensor, sigma: Tensor) -> Tensor:
    """Isotropic Gaussian smoothing with standard deviation ``sigma`` (N, C) in voxels, each > 0.

    Separable (one 1D convolution per axis), kernels truncated at three standard deviations of the largest
    ``sigma`` and normalised to sum 1; the image is extended by repeating its edge voxels.
    """
    n, c, *shape = images.shape
    radius = max(1, math.ceil(3 * float(sigma.max())))
    offsets = torch.arange(-radius, radius + 1, device=images.device, dtype=images.dtype)
    sigma = sigma.to(images.dtype).to(images.device).reshape(n * c, 1)
    kernels = torch.exp(-0.5 * (offsets[None, :] / sigma) ** 2)
    kernels = kernels / kernels.sum(-1, keepdim=True)
    conv = F.conv3d if len(shape) == 3 else F.conv2d
    result = images.reshape(1, n * c, *shape)
    for axis in range(len(shape)):
        kernel_shape = [1] * len(shape)
        kernel_shape[axis] = 2 * radius + 1
        padding = [0] * (2 * len(shape))
        padding[2 * (len(shape) - 1 - axis)] = padding[2 * (len(shape) - 1 - axis) + 1] = radius
        result = F.pad(result, padding, mode="replicate")
        result = conv(result, kernels.reshape(n * c, 1, *kernel_shape), groups=n * c)
    return result.reshape(images.shape)


def scale_brightness(images: Tensor, factor: Tensor) -> Tensor:
    """``images`` multiplied by ``factor`` (N, C)."""
    return images * _per_channel(factor, images)


def adjust_contrast(images: Tensor, factor: Tensor) -> Tensor:
    """Contrast scaled by ``factor`` (N, C) about each channel's mean, then clipped to the channel's original
    [minimum, maximum] (as nnU-Net's ``preserve_range``)."""
    low, high, mean = _channel_stats(images)
    result = (images - mean) * _per_channel(factor, images) + mean
    return torch.minimum(torch.maximum(result, low), high)


def adjust_gamma(images: Tensor, gamma: Tensor, *, inverted: bool = False) -> Tensor:
    """Gamma correction that keeps each channel's [minimum, maximum] range.

    With ``u = (x - min) / (max - min)``: ``x' = min + (max - min) * u ** gamma``; ``inverted`` applies the
    curve to the inverted image instead, ``x' = max - (max - min) * (1 - u) ** gamma`` (nnU-Net's
    ``invert_image``). ``gamma`` (N, C) > 0; constant channels are returned unchanged.
    """
    low, high, _ = _channel_stats(images)
    extent = high - low
    unit = (images - low) / extent.clamp_min(torch.finfo(images.dtype).tiny)
    gamma = _per_channel(gamma, images)
    result = high - extent * (1 - unit).pow(gamma) if inverted else low + extent * unit.pow(gamma)
    return torch.minimum(torch.maximum(result, low), high)
