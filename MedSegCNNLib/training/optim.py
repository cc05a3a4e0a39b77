"""Optimisers, the learning-rate schedule and the gradient scaler of a training run."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from .config import TrainingConfig
from .schedule import LearningRateSchedule


def build_optimizer(parameters: Iterable[torch.nn.Parameter], config: TrainingConfig) -> torch.optim.Optimizer:
    """SGD with Nesterov momentum (nnU-Net's default), Adam or AdamW, with ``config``'s lr and decay."""
    trainable = [p for p in parameters if p.requires_grad]
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            trainable,
            lr=config.learning_rate,
            momentum=config.momentum,
            nesterov=config.momentum > 0,
            weight_decay=config.weight_decay,
        )
    optimizer_class = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    return optimizer_class(trainable, lr=config.learning_rate, weight_decay=config.weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, config: TrainingConfig, total_steps: int) -> LearningRateSchedule:
    """``config``'s schedule (warm-up, then poly or cosine decay) ending at ``total_steps``; see :mod:`.schedule`."""
    return LearningRateSchedule(
        optimizer,
        total_steps=total_steps,
        kind=config.lr_schedule or "poly",
        warmup_steps=min(config.warmup_steps or 0, total_steps),
        power=config.poly_power,
    )


def build_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler:
    """A gradient scaler, enabled only for fp16 (bf16 and fp32 need none)."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")
