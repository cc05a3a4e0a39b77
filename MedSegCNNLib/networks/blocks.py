"""Layers shared by the networks, in 2D and 3D: a :class:`LayerFactory` (convolution, normalization and
activation chosen by dimension and options), conv-norm-activation blocks, residual units, attention gates.

Performance choices, measured on CPU in fp32 (2 cores, AVX-512, torch 2.13) with micro-benchmarks of one layer
at 32 channels x 64^3, batch 2 (forward + backward, median of 5-9 runs), and with whole training steps of
``Testing/Benchmarks/bench_train_step.py`` (3D U-Net, 64^3, batch 2, features 32..320):

- Instance normalization is ``GroupNorm(C, C)`` (:class:`InstanceNorm`): the same function as an affine
  ``InstanceNorm3d`` (statistics always from the input), but a native kernel instead of ``batch_norm`` on a
  reshaped copy. Norm + LeakyReLU: 79 ms instead of 156 ms (contiguous), 131 instead of 276 (channels-last).
- Channels-last layout (``network.to(memory_format=torch.channels_last_3d)``, the caller's choice): oneDNN
  convolutions run at ~300 GFLOP/s instead of ~210 at full resolution (a 3x3x3 32->32 convolution: 297 ms
  instead of 418 ms); deeper levels are about equal. A whole training step: 2.9 s instead of 3.9 s.
- In that layout, on CPU, instance norm + activation run as one autograd function (:class:`_InstanceNormAct`)
  with one temporary in the backward pass: 79 ms instead of 131 ms (native group norm's channels-last
  backward is slow). In the contiguous layout, on GPUs and under ``torch.compile`` the native operations run.
  The channels-last statistics come from ``torch.var_mean``, not from the native kernel, whose one-pass float32
  variance is wrong where a channel's mean is large against its spread (:func:`_instance_statistics`).
- Activations are in place (LeakyReLU forward + backward 26 ms instead of 42 ms: no new 64 MiB tensor).
- Convolutions followed by instance or batch norm have no bias: the norm removes it exactly. (Time: 311 vs
  313 ms per convolution, negligible; it saves parameters and a gradient.)
- Measured and not kept: splitting the decoder's first convolution to avoid concatenating the skip
  connection (629 vs 629 ms); transposed convolution as a matrix product plus voxel shuffle (137 vs 60 ms).
- oneDNN (``torch.backends.mkldnn``) must stay enabled: without it a 32^3 convolution is 10x slower. Its
  reduced-precision *fp32* math modes (bf16/tf32 inside "fp32") are not used: fp32 means fp32. bf16 is a
  precision of its own (autocast); whether it is faster depends on the CPU's bf16 units and the network, so
  training measures it per machine (:mod:`MedSegCNNLib.training.speed`) rather than trusting any one figure.
- ``torch.compile`` (inductor) fuses normalization, activation and their gradients itself: a training step
  takes 2.73 s instead of 2.9 s, after ~35 s of compilation (the first step; cached across runs).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from ..errors import InputError

NORMS = ("instance", "batch", "group")
ACTIVATIONS = ("leakyrelu", "relu")
LEAKY_SLOPE = 0.01
INTERPOLATION = {2: "bilinear", 3: "trilinear"}


def same_padding(kernel: tuple[int, ...], dilation: int = 1) -> tuple[int, ...]:
    """Padding that keeps the size of odd kernels (divided by the stride)."""
    return tuple(dilation * (k // 2) for k in kernel)


@dataclass(frozen=True)
class LayerFactory:
    """Builds layers for ``dims`` spatial dimensions with one choice of normalization, activation and dropout.

    ``norm``: ``"instance"`` (per sample and channel, affine), ``"batch"`` or ``"group"`` (``norm_groups``
    groups, which must divide every channel count); ``activation``: ``"leakyrelu"`` (slope 0.01) or ``"relu"``;
    ``dropout``: channel dropout probability after each activation of conv blocks (0: none).
    """

    dims: int
    norm: str = "instance"
    norm_groups: int = 8
    activation: str = "leakyrelu"
    dropout: float = 0.0

    @property
    def slope(self) -> float:
        """Negative slope of the activation (0 for ReLU)."""
        return LEAKY_SLOPE if self.activation == "leakyrelu" else 0.0

    def conv(
        self,
        in_channels: int,
        out_channels: int,
        kernel: int | tuple[int, ...] = 1,
        stride: int | tuple[int, ...] = 1,
        *,
        dilation: int = 1,
        bias: bool = True,
    ) -> nn.Module:
        kernel = self._axes(kernel)
        conv_class = nn.Conv2d if self.dims == 2 else nn.Conv3d
        return conv_class(
            in_channels,
            out_channels,
            kernel,
            self._axes(stride),
            padding=same_padding(kernel, dilation),
            dilation=dilation,
            bias=bias,
        )

    def transposed_conv(
        self, in_channels: int, out_channels: int, kernel: int | tuple[int, ...], stride: int | tuple[int, ...]
    ) -> nn.Module:
        """Transposed convolution; with ``kernel == stride`` it multiplies sizes by ``stride`` exactly."""
        conv_class = nn.ConvTranspose2d if self.dims == 2 else nn.ConvTranspose3d
        kernel, stride = self._axes(kernel), self._axes(stride)
        padding = tuple((k - s) // 2 for k, s in zip(kernel, stride, strict=True))
        return conv_class(in_channels, out_channels, kernel, stride, padding=padding, bias=False)

    def max_pool(self, stride: int | tuple[int, ...]) -> nn.Module:
        pool_class = nn.MaxPool2d if self.dims == 2 else nn.MaxPool3d
        return pool_class(self._axes(stride))

    def norm_layer(self, channels: int) -> nn.Module:
        if self.norm == "instance":
            return InstanceNorm(channels)
        if self.norm == "batch":
            return (nn.BatchNorm2d if self.dims == 2 else nn.BatchNorm3d)(channels)
        if channels % self.norm_groups:
            raise InputError(
                f"norm_groups={self.norm_groups} must divide every channel count of the network; {channels} is "
                f"not a multiple. Choose a divisor of all feature counts."
            )
        return nn.GroupNorm(self.norm_groups, channels)

    def conv_norm_act(
        self,
        in_channels: int,
        out_channels: int,
        kernel: int | tuple[int, ...] = 3,
        stride: int | tuple[int, ...] = 1,
        *,
        dilation: int = 1,
        activation: bool = True,
    ) -> ConvNormAct:
        """Convolution, normalization, activation (unless ``activation`` is false), channel dropout."""
        bias = self.norm == "group"  # instance and batch norm subtract every channel's mean: a bias is redundant
        return ConvNormAct(
            self.conv(in_channels, out_channels, kernel, stride, dilation=dilation, bias=bias),
            self.norm_layer(out_channels),
            self.slope if activation else None,
            self.channel_dropout() if activation else None,
        )

    def conv_block(
        self,
        in_channels: int,
        out_channels: int,
        kernel: int | tuple[int, ...],
        convs: int,
        stride: int | tuple[int, ...] = 1,
        *,
        dilation: int = 1,
        last_activation: bool = True,
    ) -> nn.Sequential:
        """``convs`` conv-norm-act layers; the first changes the channel count and has the stride."""
        return nn.Sequential(
            *(
                self.conv_norm_act(
                    in_channels if i == 0 else out_channels,
                    out_channels,
                    kernel,
                    stride if i == 0 else 1,
                    dilation=dilation,
                    activation=last_activation or i < convs - 1,
                )
                for i in range(convs)
            )
        )

    def residual_unit(
        self,
        in_channels: int,
        out_channels: int,
        kernel: int | tuple[int, ...],
        convs: int,
        stride: int | tuple[int, ...] = 1,
        *,
        dilation: int = 1,
    ) -> ResidualUnit:
        """``act(convs(x) + shortcut(x))``: ``convs`` conv-norm-act layers, the last without activation; the
        shortcut is the identity, or a strided 1x1 convolution + norm where the shape changes."""
        layers = self.conv_block(
            in_channels, out_channels, kernel, convs, stride, dilation=dilation, last_activation=False
        )
        shortcut = None
        if in_channels != out_channels or any(s != 1 for s in self._axes(stride)):
            shortcut = self.conv_norm_act(in_channels, out_channels, 1, stride, activation=False)
        return ResidualUnit(layers, shortcut, self.slope, self.channel_dropout())

    def channel_dropout(self) -> nn.Module | None:
        if not self.dropout:
            return None
        return (nn.Dropout2d if self.dims == 2 else nn.Dropout3d)(self.dropout)

    def _axes(self, value: int | tuple[int, ...]) -> tuple[int, ...]:
        return (value,) * self.dims if isinstance(value, int) else tuple(value)


class InstanceNorm(nn.GroupNorm):
    """Affine instance normalization (statistics per sample and channel, always from the input): the function
    of ``nn.InstanceNorm2d/3d(affine=True)``, computed by the faster native group-norm kernel.

    A single voxel per channel normalizes to ``bias`` (PyTorch's modules refuse it in training mode; here it
    is allowed, so that inputs of the network's minimal size, ``divisor``, also run in training mode).
    """

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__(channels, channels, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu" and _channels_last(x):
            mean, rstd = _instance_statistics(x, self.eps)
            return _normalized(x, mean, rstd, self.weight, self.bias)
        return torch.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)


def _instance_statistics(x: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The (B, C) mean and 1 / sqrt(variance + eps) of each sample's channels of a channels-last CPU tensor.

    ``torch.var_mean``, not the native group-norm kernel: in channels-last layout on the CPU (torch 2.13) that
    kernel takes the variance as E[x²] - E[x]² in float32, which cancels catastrophically when a channel's mean is
    large against its spread (mean/std = 50: errors of 0.3 in the normalised values; 500: garbage), while the
    contiguous kernel and ``var_mean`` stay within 1e-5 of float64. Reduced-precision ``x`` (bf16, fp16 under
    autocast) is measured in float32, as the native kernel does.
    """
    source = x if x.dtype in (torch.float32, torch.float64) else x.float()
    var, mean = torch.var_mean(source, dim=tuple(range(2, x.dim())), correction=0)
    return mean, torch.rsqrt(var + eps)


def _normalized(x: torch.Tensor, mean: torch.Tensor, rstd: torch.Tensor, weight, bias) -> torch.Tensor:
    """``(x - mean) * rstd * weight + bias`` in one pass over ``x``, in ``x``'s layout and type (computed in the
    statistics' precision, then rounded once)."""
    shape = (*mean.shape, *(1,) * (x.dim() - 2))
    scale = rstd * weight
    y = torch.addcmul((bias - mean * scale).view(shape), x, scale.view(shape))
    return y if y.dtype == x.dtype else y.to(x.dtype)


class ConvNormAct(nn.Module):
    """``dropout(act(norm(conv(x))))``; ``slope`` is the activation's negative slope (0: ReLU, None: none)."""

    def __init__(self, conv: nn.Module, norm: nn.Module, slope: float | None, dropout: nn.Module | None) -> None:
        super().__init__()
        self.conv = conv
        self.norm = norm
        self.slope = slope
        self.dropout = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = norm_act(self.norm, self.conv(x), self.slope)
        return x if self.dropout is None else self.dropout(x)


class ResidualUnit(nn.Module):
    """``dropout(act(layers(x) + shortcut(x)))``; no shortcut module means the identity."""

    def __init__(self, layers: nn.Sequential, shortcut: nn.Module | None, slope: float, dropout: nn.Module | None):
        super().__init__()
        self.layers = layers
        self.shortcut = shortcut
        self.slope = slope
        self.dropout = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.shortcut is None else self.shortcut(x)
        x = F.leaky_relu(self.layers(x) + identity, self.slope, inplace=True)
        return x if self.dropout is None else self.dropout(x)


class AttentionGate(nn.Module):
    """Additive attention gate (Oktay et al. 2018) on a skip connection: ``skip * sigmoid(psi(relu(Wx skip +
    Wg gate)))`` with 1x1 convolutions; ``gate`` is the decoder's upsampled features at the skip's resolution."""

    def __init__(self, layers: LayerFactory, channels: int, gate_channels: int) -> None:
        super().__init__()
        inner = max(channels // 2, 1)
        self.skip_proj = layers.conv(channels, inner, bias=False)
        self.gate_proj = layers.conv(gate_channels, inner)
        self.psi = layers.conv(inner, 1)

    def forward(self, skip: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        attention = torch.sigmoid(self.psi(F.relu(self.skip_proj(skip) + self.gate_proj(gate), inplace=True)))
        return skip * attention


@torch.no_grad()
def init_he_(network: nn.Module) -> None:
    """nnU-Net's (and MONAI DynUNet's) initialisation: He-normal weights for a LeakyReLU slope of 0.01 in every
    (transposed) convolution, zero biases. Networks on the "meta" device (shapes only) are left as they are."""
    for module in network.modules():
        if isinstance(module, nn.Conv2d | nn.Conv3d | nn.ConvTranspose2d | nn.ConvTranspose3d):
            if module.weight.is_meta:
                continue
            nn.init.kaiming_normal_(module.weight, a=LEAKY_SLOPE)
            if module.bias is not None:
                nn.init.zeros_(module.bias)


def norm_act(norm: nn.Module, x: torch.Tensor, slope: float | None) -> torch.Tensor:
    """``leaky_relu(norm(x), slope)`` (in place), or ``norm(x)`` when ``slope`` is None; fused on CPU for
    instance norm in channels-last layout, except under ``torch.compile`` (see the module docstring)."""
    if slope is None:
        return norm(x)
    fusable = isinstance(norm, InstanceNorm) and x.device.type == "cpu" and _channels_last(x)
    if fusable and not torch.compiler.is_compiling():  # torch.compile fuses the plain operations itself
        return _InstanceNormAct.apply(x, norm.weight, norm.bias, slope, norm.eps)
    return F.leaky_relu(norm(x), slope, inplace=True)


def _channels_last(x: torch.Tensor) -> bool:
    """Strictly channels-last (not also contiguous, as tensors with one channel or one voxel are)."""
    memory_format = {4: torch.channels_last, 5: torch.channels_last_3d}.get(x.dim())
    return memory_format is not None and x.is_contiguous(memory_format=memory_format) and not x.is_contiguous()


class _InstanceNormAct(torch.autograd.Function):
    """``leaky_relu(instance_norm(x) * weight + bias, slope)`` for channels-last ``x``.

    Forward: the statistics of :func:`_instance_statistics`, one pass to normalise, an in-place activation
    (the native group-norm kernel is inexact in this layout). Backward, per sample
    b and channel c over the N voxels, with ``gz`` the gradient before the activation, ``A = sum(gz)``,
    ``S = sum(gz * x)``, ``Sh = sum(gz * xhat) = rstd (S - mean A)`` and ``k1 = rstd weight``::

        dx = k1 gz + k2 x + k3,  k2 = -k1 rstd Sh / N,  k3 = -k1 A / N - mean k2
        dweight = sum_b Sh,      dbias = sum_b A

    ``S`` is the diagonal of the (C, C) product ``x^T gz`` over voxels: one BLAS pass over both tensors
    without a temporary. ``dx`` is computed in place in ``gz``.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, slope: float, eps: float):
        mean, rstd = _instance_statistics(x, eps)
        y = F.leaky_relu_(_normalized(x, mean, rstd, weight, bias), slope)
        ctx.save_for_backward(x, y, weight, mean, rstd)
        ctx.slope = slope
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        x, y, weight, mean, rstd = ctx.saved_tensors
        batch, channels = x.shape[:2]
        voxels = x[0, 0].numel()
        gz = torch.ops.aten.leaky_relu_backward(grad, y, ctx.slope, True)
        last = (0, *range(2, x.dim()), 1)  # channels-last view (B, N, C)
        x_rows = x.permute(last).reshape(batch, voxels, channels)
        gz_rows = gz.permute(last).reshape(batch, voxels, channels)
        a = gz_rows.sum(1)
        s = torch.bmm(x_rows.transpose(1, 2), gz_rows).diagonal(dim1=1, dim2=2)
        sh = rstd * (s - mean * a)
        k1 = rstd * weight
        k2 = -k1 * rstd * sh / voxels
        k3 = -k1 * a / voxels - mean * k2
        shape = (batch, channels) + (1,) * (x.dim() - 2)
        torch.addcmul(k3.view(shape), gz, k1.view(shape), out=gz).addcmul_(x, k2.view(shape))
        grad_weight = sh.sum(0) if ctx.needs_input_grad[1] else None
        grad_bias = a.sum(0) if ctx.needs_input_grad[2] else None
        return gz, grad_weight, grad_bias, None, None
