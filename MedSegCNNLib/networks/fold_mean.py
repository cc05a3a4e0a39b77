"""A cross-validation ensemble as one network: the mean of the logits of ``folds`` networks of one architecture
(nnU-Net averages its folds' logits). Its configuration is the members' plus ``"folds": N``; its state dict
names are ``members.<i>.<member's name>``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..errors import InputError

#: The most members one network may average.
MAX_FOLDS = 16


class FoldMean(nn.Module):
    """(B, C, *S) → the mean over the members of their (B, K, *S) logits."""

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if not 2 <= len(members) <= MAX_FOLDS:
            raise InputError(f"A fold ensemble needs 2 to {MAX_FOLDS} members; got {len(members)}.")
        self.members = nn.ModuleList(members)

    @property
    def config(self) -> dict[str, Any]:
        return {**self.members[0].config, "folds": len(self.members)}

    @property
    def divisor(self) -> tuple[int, ...]:
        return self.members[0].divisor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = self.members[0](x)
        for member in self.members[1:]:
            total = total + member(x)
        return total / len(self.members)
