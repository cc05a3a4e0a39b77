"""Segmentation losses on network logits: cross-entropy, soft Dice, Dice + cross-entropy, focal; deep supervision.

Every loss takes ``logits`` of shape ``(B, K, *S)`` (any float dtype; ``K >= 2`` classes, softmax over ``K``) and
an integer ``target`` of shape ``(B, 1, *S)`` holding class indices ``0..K-1``, and returns a scalar tensor.
Softmax, log-softmax and all Dice sums are computed in float32 whatever the input dtype, so the losses are safe
inside fp16/bf16 autocast.

Definitions (``p`` = softmax probabilities, ``g`` = one-hot target, sums over voxels):

- **ce**: mean over voxels of ``-log p[target]``; with class weights ``w`` it is
  ``sum(w[t] * -log p[t]) / sum(w[t])`` (as :func:`torch.nn.functional.cross_entropy`).
- **dice**: ``1 - mean_k (2 sum(p_k g_k) + smooth) / (sum(p_k) + sum(g_k) + smooth)``. The sums run over the
  voxels of each sample and the mean over classes and samples; with ``batch_dice`` the sums also run over the
  batch (one Dice per class, as nnU-Net does). Background (class 0) is left out unless ``include_background``.
  With class weights the mean over classes is weighted (weights renormalised over the classes used). A class
  absent from a sample's target and prediction scores Dice 1; absent from the target but predicted, about 0.
- **dice_ce**: ``dice + ce`` (nnU-Net's default, weights 1:1).
- **focal**: ``sum(w[t] * -(1 - p_t)^gamma log p_t) / sum(w[t])`` with ``p_t = p[target]`` (Lin et al. 2017,
  multi-class); class weights play the role of alpha; ``gamma = 0`` gives cross-entropy.

Targets are checked (shape, integer dtype, values in ``0..K-1``); the value check costs one device
synchronisation per call and replaces CUDA's unreadable device-side assertion with an :class:`InputError`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional

from .errors import InputError

LOSS_NAMES: tuple[str, ...] = ("ce", "dice", "dice_ce", "focal")
"""Names :func:`build_loss` accepts."""


def build_loss(
    name: str = "dice_ce",
    *,
    include_background: bool = False,
    batch_dice: bool = False,
    smooth: float = 1e-5,
    focal_gamma: float = 2.0,
    class_weights: Sequence[float] | None = None,
) -> nn.Module:
    """The loss called ``name`` (one of :data:`LOSS_NAMES`).

    ``include_background``, ``batch_dice`` and ``smooth`` concern the Dice term, ``focal_gamma`` the focal loss;
    ``class_weights`` (one non-negative weight per class) apply to every loss. Options a loss does not use are
    ignored.
    """
    if name not in LOSS_NAMES:
        raise InputError(f"Unknown loss {name!r}; choose one of: {', '.join(LOSS_NAMES)}.")
    if name == "ce":
        return CrossEntropyLoss(class_weights=class_weights)
    if name == "focal":
        return FocalLoss(gamma=focal_gamma, class_weights=class_weights)
    dice = SoftDiceLoss(
        include_background=include_background, batch_dice=batch_dice, smooth=smooth, class_weights=class_weights
    )
    return dice if name == "dice" else DiceCELoss(dice, CrossEntropyLoss(class_weights=class_weights))


def _non_negative(value: float, name: str, hint: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, bool) or not math.isfinite(number) or number < 0:
        raise InputError(f"{name} must be a finite number >= 0 ({hint}); got {value!r}.")
    return number


def _check_weights(class_weights: Sequence[float] | None) -> torch.Tensor | None:
    if class_weights is None:
        return None
    try:
        values = [float(w) for w in class_weights]
    except (TypeError, ValueError):
        raise InputError(f"class_weights must be a list of numbers, one per class; got {class_weights!r}.") from None
    if not values or any(not math.isfinite(w) or w < 0 for w in values) or sum(values) == 0:
        raise InputError(f"class_weights must be finite, non-negative and not all zero (one per class); got {values}.")
    return torch.tensor(values, dtype=torch.float32)


def _check_inputs(logits: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """Validate ``logits`` and ``target`` (see the module docstring) and return the target as int64."""
    if logits.ndim < 3 or not logits.is_floating_point():
        raise InputError(
            f"Loss logits must be a float tensor (B, K, *spatial); got {logits.dtype} {tuple(logits.shape)}."
        )
    classes = logits.shape[1]
    if classes < 2:
        raise InputError("Losses need at least two output channels (background and foreground), one per class.")
    expected = (logits.shape[0], 1, *logits.shape[2:])
    if tuple(target.shape) != expected:
        raise InputError(
            f"Loss target has shape {tuple(target.shape)}, expected {expected} for logits {tuple(logits.shape)} "
            "(one channel of class indices; use target.unsqueeze(1) for a (B, *spatial) label map)."
        )
    if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
        raise InputError(f"Loss target must hold integer class indices; got dtype {target.dtype}.")
    if weights is not None and weights.numel() != classes:
        raise InputError(f"{weights.numel()} class weights were given for {classes} classes; give one per class.")
    if target.numel():
        low, high = torch.stack(torch.aminmax(target)).tolist()  # one synchronisation
        if low < 0 or high >= classes:
            raise InputError(
                f"Loss target holds labels {low}..{high} but the network has {classes} classes (0..{classes - 1}); "
                "check the label map or the number of output channels."
            )
    return target.long()


class _SegmentationLoss(nn.Module):
    """A loss on ``(logits, target)`` as described in the module docstring: inputs are checked, then
    :meth:`compute` gets the target as int64."""

    class_weights: torch.Tensor | None

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.compute(logits, _check_inputs(logits, target, self.class_weights))

    def compute(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class CrossEntropyLoss(_SegmentationLoss):
    """Cross-entropy of softmax(logits) against integer targets (see the module docstring)."""

    def __init__(self, *, class_weights: Sequence[float] | None = None) -> None:
        super().__init__()
        self.register_buffer("class_weights", _check_weights(class_weights), persistent=False)

    def compute(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        weights = None if self.class_weights is None else self.class_weights.to(logits.device)
        return functional.cross_entropy(logits.float(), target[:, 0], weight=weights)


class FocalLoss(_SegmentationLoss):
    """Multi-class focal loss ``-(1 - p_t)^gamma log p_t`` (see the module docstring)."""

    def __init__(self, *, gamma: float = 2.0, class_weights: Sequence[float] | None = None) -> None:
        super().__init__()
        self.gamma = _non_negative(gamma, "focal_gamma", "2 is usual")
        self.register_buffer("class_weights", _check_weights(class_weights), persistent=False)

    def compute(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        log_pt = functional.log_softmax(logits.float(), dim=1).gather(1, target)
        loss = -log_pt
        if self.gamma > 0:
            # 1 - p_t via expm1 keeps precision near p_t = 1; the clamp keeps the gradient finite there.
            loss = loss * (-torch.expm1(log_pt)).clamp_min(1e-12) ** self.gamma
        if self.class_weights is None:
            return loss.mean()
        voxel_weights = self.class_weights.to(logits.device)[target]
        return (loss * voxel_weights).sum() / voxel_weights.sum()


class SoftDiceLoss(_SegmentationLoss):
    """``1 - soft Dice`` of softmax(logits) against one-hot targets (see the module docstring)."""

    def __init__(
        self,
        *,
        include_background: bool = False,
        batch_dice: bool = False,
        smooth: float = 1e-5,
        class_weights: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        self.smooth = _non_negative(smooth, "Dice smooth", "1e-5 is usual")
        self.include_background = bool(include_background)
        self.batch_dice = bool(batch_dice)
        weights = _check_weights(class_weights)
        if weights is not None and not include_background and float(weights[1:].sum()) == 0:
            raise InputError("The Dice loss leaves out the background, so give a positive weight to another class.")
        self.register_buffer("class_weights", weights, persistent=False)

    def compute(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        probs = torch.softmax(logits.float(), dim=1)
        one_hot = torch.zeros_like(probs).scatter_(1, target, 1.0)
        axes = [0, *range(2, probs.ndim)] if self.batch_dice else list(range(2, probs.ndim))
        intersection = (probs * one_hot).sum(axes)  # (K,) with batch_dice, else (B, K)
        denominator = probs.sum(axes) + one_hot.sum(axes)
        dice = (2 * intersection + self.smooth) / (denominator + self.smooth).clamp_min(1e-8)
        first = 0 if self.include_background else 1
        dice = dice[..., first:]
        if self.class_weights is None:
            return 1 - dice.mean()
        weights = self.class_weights.to(logits.device)[first:]
        return 1 - (dice * weights).sum(-1).mean() / weights.sum()


class DiceCELoss(nn.Module):
    """``dice + ce`` with weights 1:1, as nnU-Net."""

    def __init__(self, dice: SoftDiceLoss, ce: CrossEntropyLoss) -> None:
        super().__init__()
        self.dice = dice
        self.ce = ce

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = _check_inputs(logits, target, self.ce.class_weights)  # checked once for both terms
        return self.dice.compute(logits, target) + self.ce.compute(logits, target)


def deep_supervision_weights(num_outputs: int) -> list[float]:
    """nnU-Net's weights for ``num_outputs`` outputs (full resolution first): ``1 / 2**i``, the lowest
    resolution set to 0 when there are three or more outputs, normalised to sum to 1."""
    weights = [1 / 2**i for i in range(num_outputs)]
    if num_outputs >= 3:
        weights[-1] = 0.0
    total = sum(weights)
    return [w / total for w in weights]


def downsample_target(target: torch.Tensor, spatial_shape: Sequence[int]) -> torch.Tensor:
    """Nearest-neighbour resize of a label map ``(B, 1, *S)`` to ``spatial_shape``, choosing the same voxels as
    ``F.interpolate(mode="nearest-exact")`` (source index ``floor((i + 0.5) * in / out)``) for any dtype."""
    for axis, size in enumerate(spatial_shape, start=2):
        length = target.shape[axis]
        if size != length:
            index = ((torch.arange(size, device=target.device) + 0.5) * (length / size)).floor().long()
            target = target.index_select(axis, index.clamp_max(length - 1))
    return target


class DeepSupervisionLoss(nn.Module):
    """Weighted sum of ``loss`` over the outputs of a deeply supervised network.

    ``forward(outputs, target)``: ``outputs`` is a list of logits, full resolution first, or a single tensor (then
    it is just ``loss(outputs, target)``, e.g. for validation). The target of each lower-resolution output is the
    full-resolution ``target`` resized to that output's spatial shape by :func:`downsample_target`. ``weights``
    default to :func:`deep_supervision_weights` (nnU-Net: halving per level, lowest resolution 0 from three
    outputs on); given weights are normalised to sum to 1. Outputs with weight 0 are not evaluated.
    """

    def __init__(self, loss: nn.Module, num_outputs: int, weights: Sequence[float] | None = None) -> None:
        super().__init__()
        if isinstance(num_outputs, bool) or not isinstance(num_outputs, int) or num_outputs < 1:
            raise InputError(f"num_outputs must be a positive integer; got {num_outputs!r}.")
        if weights is None:
            weights = deep_supervision_weights(num_outputs)
        weights = [float(w) for w in weights]
        if len(weights) != num_outputs:
            raise InputError(f"Give one deep-supervision weight per output ({num_outputs}); got {len(weights)}.")
        if any(not math.isfinite(w) or w < 0 for w in weights) or sum(weights) == 0:
            raise InputError(f"Deep-supervision weights must be finite, >= 0 and not all 0; got {weights}.")
        self.loss = loss
        self.weights = [w / sum(weights) for w in weights]

    def forward(self, outputs: torch.Tensor | Sequence[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        if isinstance(outputs, torch.Tensor):
            return self.loss(outputs, target)
        if len(outputs) != len(self.weights):
            raise InputError(
                f"The network returned {len(outputs)} outputs but the deep-supervision loss expects "
                f"{len(self.weights)}; set num_outputs to the network's number of outputs."
            )
        total = None
        for weight, output in zip(self.weights, outputs, strict=True):
            if weight == 0:
                continue
            if output.ndim != target.ndim or any(
                o > t for o, t in zip(output.shape[2:], target.shape[2:], strict=False)
            ):
                raise InputError(
                    f"Deep-supervision output {tuple(output.shape)} does not fit target {tuple(target.shape)}: "
                    "outputs must have the target's dimensions and be no larger, full resolution first."
                )
            term = weight * self.loss(output, downsample_target(target, output.shape[2:]))
            total = term if total is None else total + term
        return total
