"""The learning-rate schedule: linear warm-up, then polynomial or cosine decay to zero over the planned steps,
re-plannable mid-run without a jump.

Definitions (``t`` = optimiser steps done, ``T`` = planned total steps, ``W`` = warm-up steps, ``lr₀`` = the
configured learning rate):

- warm-up, ``t < W``: ``lr = lr₀ · (t + 1) / W``;
- after it, the *progress* ``p`` runs from 0 to 1: ``p = p_a + (1 - p_a) · (t - t_a) / (T - t_a)``, where the
  anchor ``(t_a, p_a)`` is ``(W, 0)`` until the first re-plan;
- ``poly``: ``lr = lr₀ · (1 - p)^power`` (nnU-Net's schedule, ``power`` 0.9); ``cosine``:
  ``lr = lr₀ · (1 + cos(π p)) / 2``.

:meth:`LearningRateSchedule.replan` moves ``T`` (a machine that got slower or faster) and sets the anchor to
the current step and progress, so the rate continues from where it is and still reaches zero exactly at the
new ``T``. Without warm-up and re-plans, ``poly`` equals ``torch.optim.lr_scheduler.PolynomialLR``.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ..errors import InputError
from .config import SCHEDULES


class LearningRateSchedule:
    """Sets the learning rate of ``optimizer``'s parameter groups before each step (see the module docstring).

    Call :meth:`step` after each optimiser step. ``state_dict``/``load_state_dict`` make it resumable with the
    training checkpoint.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        *,
        total_steps: int,
        kind: str = "poly",
        warmup_steps: int = 0,
        power: float = 0.9,
    ) -> None:
        if kind not in SCHEDULES:
            raise InputError(f"lr_schedule must be one of {', '.join(SCHEDULES)}, got {kind!r}.")
        if total_steps < 1 or not 0 <= warmup_steps <= total_steps:
            raise InputError(
                "A learning-rate schedule needs total_steps >= 1 and 0 <= warmup_steps <= total_steps; "
                f"got {total_steps} and {warmup_steps}."
            )
        self.optimizer = optimizer
        self.base_lrs = [group.get("initial_lr", group["lr"]) for group in optimizer.param_groups]
        for group, lr in zip(optimizer.param_groups, self.base_lrs, strict=True):
            group["initial_lr"] = lr
        self.kind, self.power = kind, power
        self.total_steps, self.warmup_steps = int(total_steps), int(warmup_steps)
        self.steps_done = 0
        self.anchor_step, self.anchor_progress = self.warmup_steps, 0.0
        self._apply()

    def factor(self, step: int) -> float:
        """The multiplier of ``lr₀`` at step ``step`` (0-based)."""
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        progress = self.progress(step)
        if self.kind == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        return (1.0 - progress) ** self.power

    def progress(self, step: int) -> float:
        """The decay's progress ``p`` in [0, 1] at step ``step``."""
        span = self.total_steps - self.anchor_step
        if span <= 0:
            return 1.0
        fraction = (step - self.anchor_step) / span
        return min(1.0, max(0.0, self.anchor_progress + (1.0 - self.anchor_progress) * fraction))

    def replan(self, total_steps: int) -> None:
        """End the decay at ``total_steps`` instead, continuing from the current rate (never below the step done)."""
        total_steps = max(int(total_steps), self.steps_done)
        if self.steps_done >= self.warmup_steps:
            self.anchor_progress, self.anchor_step = self.progress(self.steps_done), self.steps_done
        self.total_steps = total_steps
        self._apply()

    def step(self) -> None:
        self.steps_done += 1
        self._apply()

    def get_last_lr(self) -> list[float]:
        return [group["lr"] for group in self.optimizer.param_groups]

    def _apply(self) -> None:
        factor = self.factor(self.steps_done)
        for group, lr in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            group["lr"] = lr * factor

    def state_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "power": self.power,
            "base_lrs": list(self.base_lrs),
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
            "steps_done": self.steps_done,
            "anchor_step": self.anchor_step,
            "anchor_progress": self.anchor_progress,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.kind, self.power = str(state["kind"]), float(state["power"])
        self.base_lrs = [float(lr) for lr in state["base_lrs"]]
        self.total_steps, self.warmup_steps = int(state["total_steps"]), int(state["warmup_steps"])
        self.steps_done = int(state["steps_done"])
        self.anchor_step, self.anchor_progress = int(state["anchor_step"]), float(state["anchor_progress"])
        self._apply()
