"""The training plan: network, patch, batch, precision, optimiser and number of steps for a dataset, a device
and a time budget.

:func:`plan_training` fills in every :class:`~MedSegCNNLib.training.config.TrainingConfig` field left at
``None`` (or a U-Net without ``features``); a value the user gave is kept. For the same fingerprint, device,
budget and step-time measurements it returns the same plan. The rules:

0. **Dimension**: as asked, else 2D for 2D images and single-slice volumes and 3D for volumes
   (:func:`~MedSegCNNLib.data.planning.data_spatial_dims`). A 2D model on 2D images trains on whole images
   (or 2D patches of larger ones), on volumes on their slices.
1. **Patch** (array order): the median case after resampling, rounded up to the network's divisor, at most
   96³ voxels (3D) / 256² (2D) on a CPU or MPS and 128³ / 512² on a CUDA GPU; the physically longest side
   shrinks first (:func:`~MedSegCNNLib.data.planning.suggest_patch_size`).
2. **U-Net topology** (after nnU-Net): an axis is halved at the next level while it has at least 8 voxels
   there and its spacing is at most twice the finest spacing; kernels are 3 on such axes and 1 on axes
   coarser than that (anisotropic data); at most 6 levels (3D) / 7 (2D). The patch and the topology are
   recomputed until they agree.
3. **Batch**: on a CPU, ``2^19`` voxels per batch, clamped to 2..4 samples (3D) or 2..32 (2D); on a CUDA GPU
   the largest batch whose estimated activations (:func:`activation_bytes`) use at most 60 % of the GPU's
   memory, at least 2; everywhere at most 5 % of the training voxels per batch (nnU-Net's cap), at least 2.
   **Memory bound**: a patch or batch the user gave is refused before anything is allocated when a training
   step would need more than 60 % of the device's memory (a GPU's, else the machine's;
   :func:`training_memory_bytes`); the message gives the largest patch or batch that fits.
4. **Precision and memory layout**: measured (:mod:`.speed`) for each candidate width: on a CPU fp32 and, where
   the CPU has bf16 units, bf16 autocast, each in channels-last and contiguous layout; the fastest with a
   finite loss wins. CUDA: bf16, else fp16, channels-last; MPS: fp32.
5. **Width**: channels ``w · 2^level`` up to 320 (3D) / 512 (2D). Without a time budget ``w`` = 32 (nnU-Net).
   With one, ``w`` is the widest of 8, 16, 24, 32 whose measured step time still buys at least
   :data:`MIN_STEPS_PER_WIDTH` (4000) steps in the budget (8 when none does): a budget of a few hundred steps
   trains a small network well and a large one badly. (One run each, 160 hippocampus cases, 15 minutes on a
   2-core AVX512-BF16 CPU: width 8 made 3678 steps and reached a held-out Dice of 0.870, width 16 made 2064
   steps and 0.863.)
6. **Steps**: with a budget, the time left after loading, planning and a reserve for validation and saving
   (3 % of the budget, at least 10 s) divided by the measured time of a step (network + data pipeline);
   epochs are then only a reporting unit of ``steps_per_epoch`` = total / 10 clamped to 25..250 steps.
   Without a budget, ``epochs × steps_per_epoch`` (100 × 250), with the measured time as an estimate.
7. **Optimiser and schedule**: with a budget, AdamW (lr 3e-3, weight decay 0.01) with a linear warm-up over
   3 % of the steps (5..250) and cosine decay to zero at the last step; without one, nnU-Net's SGD (Nesterov
   momentum 0.99, lr 0.01, weight decay 3e-5) with polynomial decay and no warm-up.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..data.dataset import Dataset, load_dataset, validate_dataset
from ..data.planning import (
    data_spatial_dims,
    dataset_fingerprint,
    plan_preprocessing,
    resampled_median_shape,
    suggest_patch_size,
)
from ..data.preprocessing import PreprocessingPlan
from ..errors import InputError
from ..networks import build_network
from ..networks.base import cached_feature_map_bytes
from ..records import record_from_dict
from ..runtime import describe_device, resolve_device
from ..runtime import device_memory_bytes as machine_memory_bytes
from .config import TrainingConfig
from .speed import StepTimer, candidate_modes, fastest_mode
from .splits import make_splits

logger = logging.getLogger(__name__)

U_NETS = ("unet", "resunet")
MAX_PATCH_VOXELS = {"cpu": {2: 256**2, 3: 96**3}, "cuda": {2: 512**2, 3: 128**3}}
MAX_LEVELS = {2: 7, 3: 6}
MAX_FEATURES = {2: 512, 3: 320}
MIN_AXIS_SIZE = 8
ANISOTROPY = 2.0
CPU_BATCH_VOXELS = 2**19
CPU_BATCH_LIMITS = {2: (2, 32), 3: (2, 4)}
MEMORY_FRACTION = 0.6
DATASET_BATCH_FRACTION = 0.05
DEFAULT_WIDTH = 32
WIDTH_LADDER = (8, 16, 24, 32)
MIN_STEPS_PER_WIDTH = 4000
MIN_STEPS = 50
RESERVE_FRACTION, RESERVE_MIN_SECONDS = 0.03, 10.0
WARMUP_FRACTION, WARMUP_LIMITS = 0.03, (5, 250)
EPOCHS_PER_RUN, STEPS_PER_EPOCH_LIMITS = 10, (25, 250)
BUDGET_RECIPE = {"optimizer": "adamw", "learning_rate": 3e-3, "weight_decay": 0.01, "lr_schedule": "cosine"}
DEFAULT_RECIPE = {"optimizer": "sgd", "learning_rate": 0.01, "weight_decay": 3e-5, "lr_schedule": "poly"}
DEFAULT_EPOCHS, DEFAULT_STEPS_PER_EPOCH = 100, 250


class BudgetTooShortError(InputError):
    """A time budget too short for :data:`MIN_STEPS` steps; ``needed_seconds`` is the shortest that fits them."""

    def __init__(self, message: str, needed_seconds: float) -> None:
        super().__init__(message)
        self.needed_seconds = needed_seconds


@dataclass(frozen=True)
class TrainingPlan:
    """A planned run (module docstring). Times in seconds; ``step_seconds`` includes the data pipeline."""

    network: dict[str, Any]
    patch_size: tuple[int, ...]
    batch_size: int
    precision: str
    channels_last: bool
    optimizer: str
    learning_rate: float
    weight_decay: float
    lr_schedule: str
    warmup_steps: int
    total_steps: int
    steps_per_epoch: int
    step_seconds: float
    expected_seconds: float
    budget_seconds: float | None
    device: str
    notes: tuple[str, ...] = ()
    mode_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def epochs(self) -> int:
        return math.ceil(self.total_steps / self.steps_per_epoch)

    def apply(self, config: TrainingConfig) -> TrainingConfig:
        """``config`` with every planned value filled in (what the run executes and the model card records)."""
        return config.replace(
            network=self.network,
            spatial_dims=self.network["spatial_dims"],
            patch_size=self.patch_size,
            batch_size=self.batch_size,
            precision=self.precision,
            channels_last=self.channels_last,
            optimizer=self.optimizer,
            learning_rate=self.learning_rate,
            weight_decay=self.weight_decay,
            lr_schedule=self.lr_schedule,
            warmup_steps=self.warmup_steps,
            epochs=self.epochs,
            steps_per_epoch=self.steps_per_epoch,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "network": dict(self.network),
            "patch_size": list(self.patch_size),
            "batch_size": self.batch_size,
            "precision": self.precision,
            "channels_last": self.channels_last,
            "optimizer": self.optimizer,
            "learning_rate": self.learning_rate,
            "weight_decay": self.weight_decay,
            "lr_schedule": self.lr_schedule,
            "warmup_steps": self.warmup_steps,
            "total_steps": self.total_steps,
            "steps_per_epoch": self.steps_per_epoch,
            "step_seconds": self.step_seconds,
            "expected_seconds": self.expected_seconds,
            "budget_seconds": self.budget_seconds,
            "device": self.device,
            "notes": list(self.notes),
            "mode_seconds": dict(self.mode_seconds),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainingPlan:
        """Inverse of :meth:`to_dict`; unknown or missing keys raise :class:`InputError`."""
        if isinstance(data, Mapping):
            data = {key: tuple(value) if key in ("patch_size", "notes") else value for key, value in data.items()}
        return record_from_dict(cls, data, "training plan")

    def describe(self) -> str:
        """The plan in a few lines, for the terminal and the log."""
        net = self.network
        levels = f"features {list(net.get('features', []))}" if "features" in net else "default features"
        budget = f"{self.budget_seconds / 60:.1f} min budget" if self.budget_seconds is not None else "no time budget"
        lines = [
            f"Plan ({budget}) on {self.device}:",
            f"  network {net['name']} {net['spatial_dims']}D, {levels}; patch {list(self.patch_size)}, "
            f"batch {self.batch_size}; {self.precision}, {'channels-last' if self.channels_last else 'contiguous'}",
            f"  {self.optimizer} lr {self.learning_rate:g} (weight decay {self.weight_decay:g}), {self.warmup_steps} "
            f"warm-up steps then {self.lr_schedule} decay over {self.total_steps} steps "
            f"({self.epochs} epochs of {self.steps_per_epoch})",
            f"  {self.step_seconds:.3f} s per step measured: about {_duration(self.expected_seconds)} on this device"
            + ("" if self.budget_seconds is not None else "; add --time-budget MIN to fit it into less time"),
        ]
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)


def plan_training(
    config: TrainingConfig,
    *,
    fingerprint: Mapping[str, Any],
    preprocessing: PreprocessingPlan,
    in_channels: int,
    out_channels: int,
    device: torch.device,
    timer: StepTimer,
    available_seconds: float | None = None,
    pipeline_seconds: float = 0.0,
    device_memory_bytes: int | None = None,
    device_name: str | None = None,
) -> TrainingPlan:
    """Plan the run of ``config`` (module docstring).

    ``available_seconds`` is the time left for training steps (the budget minus what loading, preprocessing
    and planning already took; ``None`` without a budget); ``pipeline_seconds`` the data pipeline's time per
    batch (sampling and augmentation) to add to each measured network step; ``device_memory_bytes`` the
    device's memory (read from the device or the machine when ``None``).
    """
    dims = data_spatial_dims(dict(fingerprint), config.spatial_dims)
    config = config.replace(spatial_dims=dims)
    kind = "cuda" if device.type == "cuda" else "cpu"
    budget = config.time_budget_minutes * 60 if config.time_budget_minutes is not None else None
    notes: list[str] = []
    spacing = _array_spacing(fingerprint, preprocessing, dims)
    median = resampled_median_shape(dict(fingerprint), preprocessing)
    median = tuple(median[-dims:])
    network_request = dict(config.network)
    given_features = network_request.get("features")
    plan_topology = (
        network_request["name"] in U_NETS and "strides" not in network_request and "kernel_sizes" not in network_request
    )

    def network_for(width: int, patch: Sequence[int]) -> dict[str, Any]:
        network = {**network_request, "spatial_dims": dims, "in_channels": in_channels, "out_channels": out_channels}
        if network["name"] not in U_NETS:
            return network
        if plan_topology:
            levels = len(given_features) if given_features is not None else MAX_LEVELS[dims]
            strides, kernels = unet_topology(patch, spacing, max_levels=levels)
            if given_features is None or len(strides) == levels - 1:  # else the network's default strides
                network.update(strides=strides, kernel_sizes=kernels)
        if given_features is None:
            levels = len(network["strides"]) + 1 if "strides" in network else 5
            network["features"] = [min(width * 2**level, MAX_FEATURES[dims]) for level in range(levels)]
        return network

    patch = _plan_patch(config, median, spacing, dims, kind, network_for)
    train_voxels = _training_voxels(fingerprint, preprocessing, dims)
    batch = config.batch_size or _batch_size(
        config, patch, train_voxels, kind, network_for(DEFAULT_WIDTH, patch), device, device_memory_bytes
    )

    widths = _width_candidates(config, budget)
    if config.patch_size is not None or config.batch_size is not None:
        memory = device_memory_bytes or machine_memory_bytes(device)
        _check_memory(config, network_for(widths[0], patch), patch, batch, memory, gpu=kind == "cuda")
    modes = candidate_modes(device, config.precision, config.channels_last)
    if budget is not None and (budget if available_seconds is None else available_seconds) <= reserve_seconds(budget):
        modes = modes[:1]  # refused below in any mode: one measurement gives the minimum budget to suggest
    # each width in its own fastest mode: the best precision and layout differ between small and large networks
    chosen = network_for(widths[0], patch)
    mode, seconds, mode_seconds = fastest_mode(timer, chosen, patch, batch, modes)
    seconds += pipeline_seconds
    for width in widths[1:]:
        network = network_for(width, patch)
        width_mode, step, width_seconds = fastest_mode(timer, network, patch, batch, modes)
        step += pipeline_seconds
        if available_seconds is not None and available_seconds / step < MIN_STEPS_PER_WIDTH:
            break  # this width buys too few steps; keep the narrower one
        chosen, seconds, mode, mode_seconds = network, step, width_mode, width_seconds
    if len(widths) > 1:
        notes.append(
            f"width {chosen['features'][0]}: the widest of {list(widths)} that buys at least "
            f"{MIN_STEPS_PER_WIDTH} steps in the budget"
        )

    recipe = BUDGET_RECIPE if budget is not None else DEFAULT_RECIPE
    if budget is not None:
        reserve = reserve_seconds(budget)
        usable = (available_seconds if available_seconds is not None else budget) - reserve
        total = math.floor(usable / seconds) if usable > 0 else 0
        if total < MIN_STEPS:
            needed = (budget - usable) + MIN_STEPS * seconds + reserve
            raise BudgetTooShortError(
                f"The time budget of {budget / 60:g} min is too short: loading and planning left "
                f"{max(usable, 0):.0f} s for training, and {MIN_STEPS} steps of {seconds:.2f} s each need "
                f"{MIN_STEPS * seconds:.0f} s; give --time-budget {math.ceil(needed / 60)} or more.",
                needed_seconds=needed,
            )
        if config.epochs is not None:
            notes.append(f"the time budget decides the number of steps ({total}); epochs={config.epochs} is ignored")
        steps_per_epoch = config.steps_per_epoch or _clamp(total // EPOCHS_PER_RUN, *STEPS_PER_EPOCH_LIMITS)
    else:
        steps_per_epoch = config.steps_per_epoch or DEFAULT_STEPS_PER_EPOCH
        total = (config.epochs or DEFAULT_EPOCHS) * steps_per_epoch
    warmup = config.warmup_steps
    if warmup is None:
        warmup = _clamp(round(WARMUP_FRACTION * total), *WARMUP_LIMITS) if budget is not None else 0
    warmup = min(warmup, total)
    return TrainingPlan(
        network=chosen,
        patch_size=tuple(patch),
        batch_size=int(batch),
        precision=mode.precision,
        channels_last=mode.channels_last,
        optimizer=config.optimizer or recipe["optimizer"],
        learning_rate=config.learning_rate or recipe["learning_rate"],
        weight_decay=config.weight_decay if config.weight_decay is not None else recipe["weight_decay"],
        lr_schedule=config.lr_schedule or recipe["lr_schedule"],
        warmup_steps=int(warmup),
        total_steps=int(total),
        steps_per_epoch=int(steps_per_epoch),
        step_seconds=float(seconds),
        expected_seconds=float(total * seconds),
        budget_seconds=budget,
        device=device_name or str(device),
        notes=tuple(notes),
        mode_seconds=mode_seconds,
    )


def plan_dataset(
    data: str | os.PathLike[str] | Dataset,
    config: TrainingConfig,
    *,
    timer: StepTimer | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> tuple[TrainingPlan, PreprocessingPlan]:
    """The plan :func:`~MedSegCNNLib.training.train` would make for ``data`` (a dataset folder or
    :class:`~MedSegCNNLib.data.dataset.Dataset`) and ``config``, without training (``medsegcnn plan``).

    The fingerprint comes from the training cases of ``config.fold`` (all cases when ``fold`` is None); the
    budget counts from the call, so reading the data counts as it does in a training run.
    """
    started = clock()
    dataset = load_dataset(data, mask_values=config.mask_values, allow_partial_channels=config.allow_partial_channels)
    validate_dataset(dataset)
    names = [case.name for case in dataset.cases]
    if config.fold is not None:
        names = make_splits(names, config.folds, seed=config.seed)[config.fold]["train"]
    subset = dataset.subset(names)
    fingerprint = dataset_fingerprint(subset)
    config = config.replace(spatial_dims=data_spatial_dims(fingerprint, config.spatial_dims))
    preprocessing = plan_preprocessing(subset, spatial_dims=config.spatial_dims, fingerprint=fingerprint)
    device = resolve_device(config.device)
    budget = config.time_budget_minutes
    plan = plan_training(
        config,
        fingerprint=fingerprint,
        preprocessing=preprocessing,
        in_channels=len(fingerprint["intensity"]),
        out_channels=len(dataset.label_names),
        device=device,
        timer=timer or StepTimer(device),
        available_seconds=None if budget is None else budget * 60 - (clock() - started),
        device_name=describe_device(device),
    )
    return plan, preprocessing


def reserve_seconds(budget_seconds: float) -> float:
    """Time a budgeted run keeps for its last validation and saving the model."""
    return max(RESERVE_MIN_SECONDS, RESERVE_FRACTION * budget_seconds)


def unet_topology(
    patch: Sequence[int], spacing: Sequence[float], *, max_levels: int | None = None
) -> tuple[list[list[int]], list[list[int]]]:
    """Strides (one list per downsampling) and kernel sizes (one list per level) for ``patch`` (rule 2), with
    at most ``max_levels`` levels (default 6 in 3D, 7 in 2D)."""
    dims = len(patch)
    sizes, spacings = [float(s) for s in patch], [float(s) for s in spacing]
    kernels = [[3 if s <= ANISOTROPY * min(spacings) else 1 for s in spacings]]
    strides: list[list[int]] = []
    while len(strides) < (max_levels or MAX_LEVELS[dims]) - 1:
        finest = min(spacings)
        axes = [a for a in range(dims) if sizes[a] >= MIN_AXIS_SIZE and spacings[a] <= ANISOTROPY * finest]
        if not axes:
            break
        stride = [2 if a in axes else 1 for a in range(dims)]
        sizes = [size / s for size, s in zip(sizes, stride, strict=True)]
        spacings = [sp * s for sp, s in zip(spacings, stride, strict=True)]
        strides.append(stride)
        kernels.append([3 if s <= ANISOTROPY * min(spacings) else 1 for s in spacings])
    if not strides:  # a tiny patch still needs an encoder and a decoder
        strides, kernels = [[2] * dims], [[3] * dims, [3] * dims]
    return strides, kernels


def activation_bytes(network: Mapping[str, Any], patch: Sequence[int]) -> int:
    """Estimated training memory of one sample: 12 fp32 values per feature-map voxel summed over the levels
    (two conv-norm-activation layers, encoder and decoder, kept for the backward pass)."""
    voxels, total = float(math.prod(patch)), 0.0
    strides = network.get("strides", [[2] * len(patch)] * (len(network["features"]) - 1))
    for level, channels in enumerate(network["features"]):
        if level:
            voxels /= math.prod(strides[level - 1])
        total += channels * voxels
    return int(12 * 4 * total)


def training_memory_bytes(network: Mapping[str, Any], patch: Sequence[int], batch: int) -> int:
    """Estimated memory of one training step of ``network`` (a :func:`~MedSegCNNLib.networks.build_network`
    configuration) on ``batch`` patches of ``patch`` voxels, in bytes: every layer's float32 output twice per
    sample (kept for the backward pass, and its gradient; counted exactly on the "meta" device, nothing
    allocated) and the parameters four times (weights, gradients and two optimiser moments). It errs high: for a
    32-wide 3D U-Net on two 96³ patches it gives 5.3 GiB where a CPU step's peak grew by 3.5 GiB."""
    with torch.device("meta"):
        built = build_network(dict(network))
    parameters = sum(parameter.numel() for parameter in built.parameters())
    window = (network["in_channels"], *patch)
    return 2 * batch * cached_feature_map_bytes(built, network, window) + 4 * 4 * parameters


# ----- helpers -------------------------------------------------------------------------------------------


def _plan_patch(config, median, spacing, dims, kind, network_for) -> tuple[int, ...]:
    if config.patch_size is not None:
        return tuple(config.patch_size)
    limit = MAX_PATCH_VOXELS[kind][dims]
    patch = tuple(int(n) for n in median)
    for _ in range(8):  # the topology depends on the patch and the patch's rounding on the topology
        network = network_for(DEFAULT_WIDTH, patch)
        divisor = build_network(network).divisor
        rounded = suggest_patch_size(
            median, dims, divisor=divisor, max_voxels=max(limit, math.prod(divisor)), spacing=spacing
        )
        if rounded == patch:
            break
        patch = rounded
    return patch


def _check_memory(
    config: TrainingConfig,
    network: dict[str, Any],
    patch: tuple[int, ...],
    batch: int,
    memory: int | None,
    *,
    gpu: bool,
) -> None:
    """Refuse (:class:`InputError`) a user-given patch or batch whose training step needs more than
    :data:`MEMORY_FRACTION` of ``memory`` (bytes; ``None``: unknown, nothing checked), naming the largest patch
    or batch that fits."""
    if memory is None:
        return
    allowed = MEMORY_FRACTION * memory
    needed = training_memory_bytes(network, patch, batch)
    if needed <= allowed:
        return
    fixed = training_memory_bytes(network, patch, 0)  # the parameters' share
    per_sample = (needed - fixed) / batch
    fitting_batch = math.floor((allowed - fixed) / per_sample) if allowed > fixed else 0
    where = "this GPU's" if gpu else "this machine's"
    what = f"Training {batch} patch{'es' if batch > 1 else ''} of {' x '.join(map(str, patch))} voxels at once"
    limit = f"more than {MEMORY_FRACTION:.0%} of {where} {_gib(memory)} of memory"
    if config.batch_size is not None and fitting_batch >= 1:
        advice = f"give a --batch-size of at most {fitting_batch}"
        if config.patch_size is not None:
            advice += " or a smaller --patch-size"
    elif config.patch_size is not None:
        advice = _smaller_patch_advice(network, patch, needed - fixed, allowed - fixed)
    else:
        advice = "use a machine with more memory"
    raise InputError(f"{what} needs about {_gib(needed)}, {limit}; {advice}.")


def _smaller_patch_advice(network: dict[str, Any], patch: tuple[int, ...], needed: float, allowed: float) -> str:
    """What to give instead of ``patch``, whose feature maps need ``needed`` bytes where ``allowed`` fit: the
    same shape scaled down (memory grows with the voxels) to multiples of the network's divisor."""
    with torch.device("meta"):
        divisor = build_network(dict(network)).divisor
    scale = (max(allowed, 0.0) / needed) ** (1 / len(patch))
    smaller = [max(0, math.floor(size * scale / step) * step) for size, step in zip(patch, divisor, strict=True)]
    if not all(smaller):
        return "even the smallest patch does not fit: use a machine with more memory"
    return f"give a --patch-size of at most about {','.join(map(str, smaller))} (or leave it out to have it planned)"


def _batch_size(config, patch, train_voxels, kind, network, device, device_memory_bytes) -> int:
    dims = config.spatial_dims
    cap = max(2, math.floor(DATASET_BATCH_FRACTION * train_voxels / math.prod(patch)))
    if kind == "cuda":
        memory = device_memory_bytes or torch.cuda.get_device_properties(device).total_memory
        batch = max(2, math.floor(MEMORY_FRACTION * memory / activation_bytes(network, patch)))
    else:
        low, high = CPU_BATCH_LIMITS[dims]
        batch = _clamp(CPU_BATCH_VOXELS // math.prod(patch), low, high)
    return int(max(2, min(batch, cap)))


def _width_candidates(config: TrainingConfig, budget: float | None) -> tuple[int, ...]:
    if config.network["name"] not in U_NETS or "features" in config.network:
        return (0,)
    return WIDTH_LADDER if budget is not None else (DEFAULT_WIDTH,)


def _array_spacing(fingerprint, preprocessing: PreprocessingPlan, dims: int) -> tuple[float, ...]:
    median = np.asarray(fingerprint["median_spacing"], dtype=np.float64)
    target = preprocessing.target_spacing or tuple(median)
    spacing = [float(t) if t is not None else float(m) for t, m in zip(target, median, strict=False)]
    return tuple(spacing[::-1][-dims:])


def _training_voxels(fingerprint, preprocessing: PreprocessingPlan, dims: int) -> float:
    median = resampled_median_shape(dict(fingerprint), preprocessing)
    return float(math.prod(median)) * int(fingerprint["num_cases"])


def _clamp(value: int, low: int, high: int) -> int:
    return max(low, min(high, int(value)))


def _gib(size: float) -> str:
    return f"{size / 2**30:,.1f} GiB"


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
