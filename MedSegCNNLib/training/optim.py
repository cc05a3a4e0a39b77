"""Optimisers, the learning-rate schedule and mixed-precision settings of a training run."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

import torch

from .config import TrainingConfig


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


def build_scheduler(optimizer: torch.optim.Optimizer, config: TrainingConfig) -> torch.optim.lr_scheduler.LRScheduler:
    """Polynomial decay per step: ``lr_t = lr_0 · (1 - t / T)^power`` over ``T = epochs × steps_per_epoch``."""
    return torch.optim.lr_scheduler.PolynomialLR(
        optimizer, total_iters=config.epochs * config.steps_per_epoch, power=config.poly_power
    )


def resolve_precision(choice: str, device: torch.device) -> str:
    """``auto``: bf16 on CUDA GPUs that support it, else fp16 on CUDA; fp32 on CPU and MPS."""
    if choice != "auto":
        return choice
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The autocast context of ``precision`` (a no-op for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def build_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler:
    """A gradient scaler, enabled only for fp16 (bf16 and fp32 need none)."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")
