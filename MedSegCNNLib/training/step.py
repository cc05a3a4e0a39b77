"""One optimisation step: forward under autocast, loss, backward (scaled for fp16), clip, step."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..runtime import autocast


def train_step(
    network: torch.nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    loss_function: Callable[[torch.Tensor | list[torch.Tensor], torch.Tensor], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    *,
    precision: str,
    gradient_clip: float | None,
) -> float:
    """Run one step on a batch and return its loss (a Python float, before the update)."""
    optimizer.zero_grad(set_to_none=True)
    with autocast(precision, images.device):
        outputs = network(images)
        loss = loss_function(outputs, labels)
    if not torch.isfinite(loss):
        raise FloatingPointError(f"The training loss became {loss.item()}; lower the learning rate or use fp32.")
    scaler.scale(loss).backward()
    if gradient_clip is not None:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(network.parameters(), gradient_clip)
    scaler.step(optimizer)
    scaler.update()
    return float(loss.detach())
