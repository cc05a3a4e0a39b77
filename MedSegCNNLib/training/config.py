"""``TrainingConfig``: every choice a training run makes, as one typed, self-validating record.

The config is stored in the model card and in resumable checkpoints (``to_dict``/``from_dict``) with every
planned value filled in, so a run can be repeated or resumed exactly. Values left to the planner are
described in :mod:`.planner`; the others follow nnU-Net where it has one (Dice + cross-entropy, a third of
patches centred on foreground).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..checkpoint.model_card import Licence
from ..data.dataset import checked_mask_values
from ..errors import InputError
from ..records import record_from_dict
from ..runtime import DEVICES, PRECISIONS

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("poly", "cosine")
_AXES = {3: "z,y,x", 2: "y,x"}


@dataclass(frozen=True)
class TrainingConfig:
    """Hyper-parameters of one training run. Units: learning rate per step, times in minutes.

    ``None`` (and a U-Net ``network`` without ``features``) means *planned*: :mod:`.planner` chooses the value for the
    data, the device and the time budget; a value given here is kept. ``network`` holds network options (``name`` and
    those of :func:`MedSegCNNLib.networks.build_network`); ``spatial_dims``, ``in_channels`` and ``out_channels`` are
    filled in from the data (``spatial_dims`` ``None``: 2 for 2D images and single-slice volumes, 3 for volumes).
    ``patch_size`` is in array order (z, y, x; y, x in 2D). ``mask_values`` maps the raw values of the label files to
    the labels 0, 1, ... in that order (e.g. ``(0, 255)`` for masks saved as 0/255 pictures; see
    :mod:`MedSegCNNLib.data.dataset`); ``allow_partial_channels`` lets a case's further channels leave more than 1 % of
    its first channel uncovered (filled with 0; :func:`MedSegCNNLib.data.dataset.load_case`). Without a time budget the
    run lasts ``epochs`` × ``steps_per_epoch`` steps. With ``time_budget_minutes`` the plan measures the step time and
    runs as many steps as fit in the budget (loading and planning included), with the learning-rate schedule
    (``lr_schedule`` after ``warmup_steps``, see :mod:`.schedule`) ending exactly at the last step, re-planned when the
    measured speed drifts; ``epochs`` is then ignored. ``precision`` ``auto`` and ``channels_last`` ``None`` are
    measured on CPUs. ``checkpoint_minutes`` is the longest time between two resumable checkpoints. ``compile`` runs the
    network through ``torch.compile`` (slower start, faster steps: worth it for long runs). ``fold`` selects the
    validation fold of a ``folds``-fold split (``None``: train on all cases, validate on none). ``licence`` is the
    licence of the weights written into the model card: an SPDX identifier (e.g. ``CC-BY-4.0``) or free text
    (:meth:`~MedSegCNNLib.checkpoint.model_card.Licence.parse`); ``None``: none given, the card says it is unknown.
    """

    network: Mapping[str, Any] = field(default_factory=lambda: {"name": "unet"})
    spatial_dims: int | None = None
    epochs: int | None = None
    steps_per_epoch: int | None = None
    batch_size: int | None = None
    patch_size: tuple[int, ...] | None = None
    optimizer: str | None = None
    learning_rate: float | None = None
    momentum: float = 0.99
    weight_decay: float | None = None
    lr_schedule: str | None = None
    warmup_steps: int | None = None
    poly_power: float = 0.9
    gradient_clip: float | None = 12.0
    loss: str = "dice_ce"
    batch_dice: bool = False
    foreground_fraction: float = 0.33
    augmentation: Mapping[str, Any] | None = None
    precision: str = "auto"
    channels_last: bool | None = None
    compile: bool = False
    validate_every: int = 1
    early_stopping_patience: int | None = None
    folds: int = 5
    fold: int | None = 0
    seed: int = 0
    device: str = "auto"
    time_budget_minutes: float | None = None
    checkpoint_minutes: float = 5.0
    init_from: str | None = None
    freeze_encoder: bool = False
    mask_values: tuple[int, ...] | None = None
    allow_partial_channels: bool = False
    licence: str | None = None

    def __post_init__(self) -> None:
        def require(condition: bool, message: str) -> None:
            if not condition:
                raise InputError(message)

        require(isinstance(self.network, Mapping) and "name" in self.network, "network must be a mapping with a name.")
        require(self.spatial_dims in (None, 2, 3), f"spatial_dims must be 2 or 3, got {self.spatial_dims}.")
        for name in ("epochs", "steps_per_epoch", "batch_size"):
            value = getattr(self, name)
            require(
                value is None or _whole(value, 1),
                f"{name} (--{name.replace('_', '-')}) must be a whole number >= 1, got {value!r}.",
            )
        if self.patch_size is not None:
            given = self.patch_size
            sizes = tuple(given) if isinstance(given, list | tuple) else ()
            dims = self.spatial_dims or len(sizes)
            require(
                len(sizes) == dims and dims in (2, 3) and all(_whole(size, 1) for size in sizes),
                f"patch_size (--patch-size) must be {dims if dims in (2, 3) else '2 or 3'} whole numbers >= 1 "
                f"(voxels, array order {_AXES.get(dims, 'z,y,x or y,x')}), got {given!r}.",
            )
            object.__setattr__(self, "patch_size", tuple(int(size) for size in sizes))
        require(
            self.optimizer is None or self.optimizer in OPTIMIZERS, f"optimizer must be one of {', '.join(OPTIMIZERS)}."
        )
        require(
            self.learning_rate is None or (math.isfinite(self.learning_rate) and self.learning_rate > 0),
            f"learning_rate must be > 0, got {self.learning_rate}.",
        )
        require(0 <= self.momentum < 1, f"momentum must be in [0, 1), got {self.momentum}.")
        require(
            self.weight_decay is None or self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}."
        )
        require(
            self.lr_schedule is None or self.lr_schedule in SCHEDULES,
            f"lr_schedule must be one of {', '.join(SCHEDULES)}.",
        )
        require(self.warmup_steps is None or _whole(self.warmup_steps, 0), "warmup_steps must be a whole number >= 0.")
        require(
            math.isfinite(self.checkpoint_minutes) and self.checkpoint_minutes > 0, "checkpoint_minutes must be > 0."
        )
        require(self.gradient_clip is None or self.gradient_clip > 0, "gradient_clip must be > 0 or None.")
        require(0 <= self.foreground_fraction <= 1, "foreground_fraction must be in [0, 1].")
        require(self.precision in PRECISIONS, f"precision must be one of {', '.join(PRECISIONS)}.")
        require(
            self.device in DEVICES or self.device.startswith("cuda:"), f"device must be one of {', '.join(DEVICES)}."
        )
        require(self.validate_every >= 1, "validate_every must be >= 1.")
        require(self.licence is None or isinstance(self.licence, str), "licence must be a string or None.")
        if self.licence is not None:
            Licence.parse(self.licence)
        require(
            self.early_stopping_patience is None or self.early_stopping_patience >= 1,
            "early_stopping_patience must be >= 1 or None.",
        )
        require(self.folds >= 2, f"folds must be >= 2, got {self.folds}.")
        require(
            self.fold is None or 0 <= self.fold < self.folds,
            f"fold must be between 0 and {self.folds - 1} (or None to train on all cases), got {self.fold}.",
        )
        require(
            self.time_budget_minutes is None
            or (math.isfinite(self.time_budget_minutes) and self.time_budget_minutes > 0),
            f"time_budget_minutes must be a positive number of minutes, got {self.time_budget_minutes}.",
        )
        if self.mask_values is not None:
            object.__setattr__(self, "mask_values", checked_mask_values(self.mask_values))
        object.__setattr__(self, "network", dict(self.network))
        if self.augmentation is not None:
            object.__setattr__(self, "augmentation", dict(self.augmentation))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data (tuples become lists)."""
        data = dataclasses.asdict(self)
        for name in ("patch_size", "mask_values"):
            if data[name] is not None:
                data[name] = list(data[name])
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainingConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error (a typo must not pass silently)."""
        if isinstance(data, Mapping):
            data = {
                key: tuple(value) if key in ("patch_size", "mask_values") and isinstance(value, list) else value
                for key, value in data.items()
            }
        return record_from_dict(cls, data, "training configuration")

    def replace(self, **changes: Any) -> TrainingConfig:
        return dataclasses.replace(self, **changes)


def _whole(value: Any, minimum: int) -> bool:
    """Whether ``value`` is an integer (not a bool) of at least ``minimum``."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= minimum
