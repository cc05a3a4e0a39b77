"""Measured training speed: seconds per optimisation step of a network on this device, cached per machine.

A *probe* builds the network, feeds it random batches of the planned patch and batch size, and times full
training steps (forward, Dice + cross-entropy, backward, AdamW update) after one untimed warm-up step; the
fastest timed step is the result (on a machine shared with other work the fastest step is the one least
disturbed; the budgeted run itself re-plans on the speed it really gets). A step whose loss is not finite
marks the mode unusable.

Results are cached in ``<user cache>/medsegcnn/step_times.json`` under a key made of the CPU model and
flags (or the GPU's name), torch's version and thread count, the network configuration, patch, batch,
precision and memory layout, so the same question on the same machine is measured once.

:func:`fastest_mode` is how training chooses its precision and memory layout on a CPU: fp32 in both layouts,
and bf16 autocast in both layouts when the CPU has bf16 units (:func:`MedSegCNNLib.runtime.cpu_has_bf16`);
the fastest mode with a finite loss wins. CUDA uses bf16 (fp16 where bf16 is unsupported) with channels-last
memory, MPS fp32, without measuring.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .._version import __version__
from ..atomic import write_text_atomic
from ..runtime import autocast, cpu_has_bf16, cpu_info, resolve_precision, user_cache_folder

logger = logging.getLogger(__name__)

CACHE_FILE = "step_times.json"
PROBE_STEPS = 3


@dataclass(frozen=True)
class Mode:
    """How the network runs: autocast precision and whether tensors use channels-last memory."""

    precision: str
    channels_last: bool

    def describe(self) -> str:
        return f"{self.precision}, {'channels-last' if self.channels_last else 'contiguous'} memory"


@dataclass(frozen=True)
class Probe:
    """One measurement: seconds per step (``inf`` when the loss was not finite) and whether it was cached."""

    seconds: float
    cached: bool


class StepTimer:
    """Measures (or recalls) the step time of a network configuration on ``device``; see the module docstring.

    ``cache`` is the cache file (``None``: the per-user one; ``False``: no cache). ``measure`` replaces the
    real probe (tests): it takes ``(network_config, patch, batch, mode)`` and returns seconds per step.
    """

    def __init__(
        self,
        device: torch.device,
        *,
        cache: Path | bool | None = None,
        measure: Callable[[Mapping[str, Any], Sequence[int], int, Mode], float] | None = None,
    ) -> None:
        self.device = device
        self.cache_path = (
            None if cache is False else (user_cache_folder() / CACHE_FILE if cache in (None, True) else cache)
        )
        self._measure = measure or self._probe

    def seconds(self, network: Mapping[str, Any], patch: Sequence[int], batch: int, mode: Mode) -> Probe:
        """Seconds per training step of ``network`` (a network config with dims and channels) in ``mode``."""
        key = self._key(network, patch, batch, mode)
        entries = self._read_cache()
        if key in entries:
            return Probe(float(entries[key]["seconds"]), cached=True)
        seconds = float(self._measure(network, patch, batch, mode))
        entries = self._read_cache()  # another process may have written meanwhile
        entries[key] = {"seconds": seconds, "measured": time.time()}
        self._write_cache(entries)
        return Probe(seconds, cached=False)

    # ----- the probe ------------------------------------------------------------------------------------

    def _probe(self, network_config: Mapping[str, Any], patch: Sequence[int], batch: int, mode: Mode) -> float:
        from ..losses import build_loss
        from ..networks import build_network

        generator = torch.Generator().manual_seed(0)
        network = build_network(dict(network_config)).to(self.device).train()
        memory = torch.channels_last_3d if len(patch) == 3 else torch.channels_last
        if mode.channels_last:
            network = network.to(memory_format=memory)
        channels, classes = network.config["in_channels"], network.config["out_channels"]
        images = torch.randn(batch, channels, *patch, generator=generator).to(self.device)
        labels = torch.randint(0, classes, (batch, 1, *patch), generator=generator).to(self.device)
        if mode.channels_last:
            images = images.contiguous(memory_format=memory)
        loss_function = build_loss("dice_ce")
        optimizer = torch.optim.AdamW(network.parameters(), lr=1e-4)
        times = []
        for index in range(PROBE_STEPS + 1):
            self._synchronize()
            started = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            with autocast(mode.precision, self.device):
                outputs = network(images)
                outputs = outputs[0] if isinstance(outputs, list | tuple) else outputs
                loss = loss_function(outputs, labels)
            if not torch.isfinite(loss):
                return float("inf")
            loss.backward()
            optimizer.step()
            self._synchronize()
            if index:  # the first step warms up kernels and allocators
                times.append(time.perf_counter() - started)
        return min(times)

    def _synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    # ----- the cache ------------------------------------------------------------------------------------

    def _key(self, network: Mapping[str, Any], patch: Sequence[int], batch: int, mode: Mode) -> str:
        if self.device.type == "cuda":
            hardware = torch.cuda.get_device_name(self.device)
        else:
            info = cpu_info()
            hardware = f"{info.model}|{' '.join(sorted(info.flags))}"
        described = {
            "hardware": hardware,
            "device": self.device.type,
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "library": __version__,
            "network": dict(network),
            "patch": list(patch),
            "batch": batch,
            "mode": [mode.precision, mode.channels_last],
        }
        return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:32]

    def _read_cache(self) -> dict[str, Any]:
        if self.cache_path is None or not self.cache_path.is_file():
            return {}
        try:
            entries = json.loads(self.cache_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            logger.warning("Ignoring an unreadable step-time cache %s; it will be rewritten.", self.cache_path)
            return {}
        return entries if isinstance(entries, dict) else {}

    def _write_cache(self, entries: dict[str, Any]) -> None:
        if self.cache_path is None:
            return
        try:
            self.cache_path.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomic(self.cache_path, json.dumps(entries, indent=1), overwrite=True)
        except OSError as error:  # a read-only home must not stop training
            logger.warning(
                "Could not write the step-time cache %s (%s); measuring again next time.",
                self.cache_path,
                error.strerror,
            )


def candidate_modes(device: torch.device, precision: str, channels_last: bool | None) -> list[Mode]:
    """The modes worth comparing for a requested ``precision`` (``auto`` or fixed) and layout (``None``: either)."""
    layouts = [True, False] if channels_last is None else [channels_last]
    if device.type == "mps":
        layouts = [False]
    if precision != "auto" or device.type != "cpu":
        return [Mode(resolve_precision(precision, device), layout) for layout in layouts]
    precisions = ["fp32", "bf16"] if cpu_has_bf16() else ["fp32"]
    return [Mode(p, layout) for p in precisions for layout in layouts]


def fastest_mode(
    timer: StepTimer, network: Mapping[str, Any], patch: Sequence[int], batch: int, modes: Sequence[Mode]
) -> tuple[Mode, float, dict[str, float]]:
    """The mode with the shortest finite step time, that time, and every mode's time (by description)."""
    times = {mode: timer.seconds(network, patch, batch, mode).seconds for mode in modes}
    finite = {mode: seconds for mode, seconds in times.items() if seconds != float("inf")}
    if not finite:  # bf16/fp16 can overflow; fp32 never runs through here without being measured finite
        fallback = Mode("fp32", modes[0].channels_last)
        return fallback, timer.seconds(network, patch, batch, fallback).seconds, {}
    best = min(finite, key=finite.__getitem__)
    return best, finite[best], {mode.describe(): seconds for mode, seconds in times.items()}
