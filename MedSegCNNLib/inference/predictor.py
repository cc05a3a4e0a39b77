"""The per-window predictor: softmax probabilities (or raw logits) averaged over mirrored copies and ensemble
members.

Test-time augmentation by mirroring runs every flip combination of the chosen axes *in the same batch* as
the original window; each prediction is flipped back before averaging. With no flips and one network it
is just the network's softmax.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import torch


def mirror_combinations(axes: Sequence[int]) -> list[tuple[int, ...]]:
    """Every subset of ``axes`` (spatial axes, 0-based), the empty one first: 2**len(axes) flips."""
    return [combo for size in range(len(axes) + 1) for combo in itertools.combinations(axes, size)]


#: What :class:`Predictor` averages: the networks' softmax, or their logits (as nnU-Net does).
AVERAGES = ("probabilities", "logits")


class Predictor:
    """Callable (B, C, *patch) -> (B, K, *patch): the mean softmax (``average="probabilities"``) or the mean
    logits (``"logits"``) over ``networks`` × mirror flips, float32."""

    def __init__(
        self, networks: Sequence[torch.nn.Module], *, mirror_axes: Sequence[int] = (), average: str = "probabilities"
    ) -> None:
        if average not in AVERAGES:
            raise ValueError(f"average must be one of {AVERAGES}, got {average!r}")
        self.networks = list(networks)
        self.flips = mirror_combinations(tuple(mirror_axes))
        self.softmax = average == "probabilities"

    def __call__(self, windows: torch.Tensor) -> torch.Tensor:
        batch = windows.shape[0]
        copies = torch.cat([windows.flip([2 + a for a in flip]) if flip else windows for flip in self.flips])
        total: torch.Tensor | None = None
        for network in self.networks:
            outputs = network(copies).float()
            values = torch.softmax(outputs, dim=1) if self.softmax else outputs
            for index, flip in enumerate(self.flips):
                part = values[index * batch : (index + 1) * batch]
                part = part.flip([2 + a for a in flip]) if flip else part
                total = part if total is None else total + part
        return total / (len(self.networks) * len(self.flips))


class RememberedWindows:
    """Windows (their inputs, as given to a predictor) and the predictor's outputs for them."""

    def __init__(self) -> None:
        self.entries: list[tuple[torch.Tensor, torch.Tensor]] = []

    def output_for(self, window: torch.Tensor) -> torch.Tensor | None:
        """The output kept for a window of the same shape and values (whatever its memory layout), or None."""
        for seen, output in self.entries:
            if seen.shape == window.shape and torch.equal(seen, window):
                return output
        return None


class RememberingPredictor:
    """Callable like ``predictor``, (B, C, *patch) -> (B, K, *patch), that takes a window's output from ``memory``
    when the same window was predicted before, and, with ``record``, keeps each window it computes there with its
    output. The accuracy gate records its fp32 window so that the image's fp32 prediction that follows a refusal
    does not compute that window again. A few remembered windows cost one comparison per window and entry."""

    def __init__(
        self,
        predictor: Callable[[torch.Tensor], torch.Tensor],
        memory: RememberedWindows,
        *,
        record: bool = False,
    ) -> None:
        self.predictor, self.memory, self.record = predictor, memory, record

    def __call__(self, windows: torch.Tensor) -> torch.Tensor:
        known = [self.memory.output_for(window) for window in windows]
        missing = [index for index, output in enumerate(known) if output is None]
        if len(missing) == len(known):
            outputs = self.predictor(windows)
            if self.record:
                self.memory.entries.extend(zip(windows, outputs, strict=True))
            return outputs
        computed = dict(zip(missing, self.predictor(windows[missing]), strict=True)) if missing else {}
        if self.record:
            self.memory.entries.extend((windows[index], output) for index, output in computed.items())
        return torch.stack([computed[index] if output is None else output for index, output in enumerate(known)])
