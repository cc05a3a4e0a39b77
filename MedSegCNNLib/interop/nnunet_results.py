"""Reading an nnU-Net v2 results folder (``DatasetXXX_Name/<Trainer>__<Plans>__<configuration>/``) without
nnunetv2 and without unpickling anything outside an explicit allow-list.

The folder holds ``dataset.json``, ``plans.json`` and ``fold_K/checkpoint_final.pth`` (or ``_best``) per trained
fold. A checkpoint is a ``torch.save`` pickle (zip, or the legacy format; other files are refused by their kind,
:mod:`~MedSegCNNLib.checkpoint.weights_file`): it is read with ``torch.load(weights_only=True)``, whose restricted
unpickler builds only tensors, containers and plain values, plus exactly the numpy globals nnU-Net writes into
its checkpoints (:data:`CHECKPOINT_GLOBALS`: numpy scalars in its training logs). A checkpoint needing anything
else is refused, naming the global. ``postprocessing.pkl`` is never read.
"""

from __future__ import annotations

import json
import logging
import pickle
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..checkpoint.weights_file import foreign_weights_problem, weights_file_kind
from ..errors import InputError

logger = logging.getLogger(__name__)

CHECKPOINTS = {"final": "checkpoint_final.pth", "best": "checkpoint_best.pth"}
#: The largest dataset.json / plans.json read (bytes): real ones are kilobytes.
MAX_JSON_BYTES = 16 * 2**20
#: The largest checkpoint read (bytes): nnU-Net's biggest public checkpoints (with optimiser state) are < 2 GiB.
MAX_CHECKPOINT_BYTES = 8 * 2**30
#: Trainers whose network is built from the plans unchanged (nnunetv2 2.x's trainer and its variants that
#: change only training: epochs, losses, optimisers, augmentation, sampling, mirroring).
KNOWN_TRAINERS = frozenset(
    [
        "nnUNetTrainer",
        "nnUNetTrainerNoMirroring",
        "nnUNetTrainerNoDeepSupervision",
        "nnUNetTrainerNoDA",
        "nnUNetTrainerDA5",
        "nnUNetTrainerDA5Segord0",
        "nnUNetTrainerDA5ord0",
        "nnUNetTrainerDA5_10epochs",
        "nnUNetTrainer_DASegOrd0",
        "nnUNetTrainer_DASegOrd0_NoMirroring",
        "nnUNetTrainer_noDummy2DDA",
        "nnUNetTrainer_onlyMirror01",
        "nnUNetTrainer_onlyMirror01_1500ep",
        "nnUNetTrainer_onlyMirror01_DA5",
        "nnUNetTrainer_onlyMirror01_DASegOrd0",
        "nnUNetTrainerAdam",
        "nnUNetTrainerAdam1en3",
        "nnUNetTrainerAdam3en4",
        "nnUNetTrainerAdan",
        "nnUNetTrainerAdan1en1",
        "nnUNetTrainerAdan1en3",
        "nnUNetTrainerAdan3en4",
        "nnUNetTrainerAdanCosAnneal",
        "nnUNetTrainerVanillaAdam",
        "nnUNetTrainerVanillaAdam1en3",
        "nnUNetTrainerVanillaAdam3en4",
        "nnUNetTrainerCosAnneal",
        "nnUNetTrainer_warmup",
        "nnUNetTrainerCELoss",
        "nnUNetTrainerCELoss_5epochs",
        "nnUNetTrainerDiceCELoss_noSmooth",
        "nnUNetTrainerDiceLoss",
        "nnUNetTrainerDiceTopK10Loss",
        "nnUNetTrainerTopk10Loss",
        "nnUNetTrainerTopk10LossLS01",
        "nnUNetTrainer_probabilisticOversampling",
        "nnUNetTrainer_probabilisticOversampling_010",
        "nnUNetTrainer_probabilisticOversampling_033",
        "nnUNetTrainerBenchmark_5epochs",
        "nnUNetTrainerBenchmark_5epochs_noDataLoading",
    ]
)
#: Trainers that change the plans' network in a known way: the arch_kwargs they replace (``{dims}``: 2 or 3).
#: nnUNetTrainerBN builds the network with batch norm instead of the plans' instance norm.
ARCHITECTURE_TRAINERS: Mapping[str, Mapping[str, Any]] = {
    "nnUNetTrainerBN": {
        "norm_op": "torch.nn.modules.batchnorm.BatchNorm{dims}d",
        "norm_op_kwargs": {"eps": 1e-05, "affine": True},
    },
}
#: Epoch-count variants (``nnUNetTrainer_4000epochs``, ``..._NoMirroring``; TotalSegmentator's too).
_EPOCH_TRAINER = re.compile(r"nnUNetTrainer_\d+epochs?(_NoMirroring)?")


def _numpy_globals() -> list[Any]:
    """The numpy objects nnU-Net checkpoints pickle: scalars (the ``scalar`` reconstructor, pickled under numpy 1's
    name ``numpy.core.multiarray.scalar`` or numpy 2's ``numpy._core.multiarray.scalar``) and their ``dtype``."""
    try:
        from numpy._core.multiarray import scalar  # numpy 2
    except ImportError:  # numpy 1
        from numpy.core.multiarray import scalar  # type: ignore[no-redef]
    return [
        (scalar, "numpy.core.multiarray.scalar"),
        (scalar, "numpy._core.multiarray.scalar"),
        np.dtype,
        *(type(np.dtype(kind)) for kind in (np.float64, np.float32, np.int64)),
    ]


CHECKPOINT_GLOBALS = _numpy_globals()


@dataclass(frozen=True)
class Checkpoint:
    """What MedSegCNN uses of one fold's checkpoint."""

    fold: str
    path: Path
    network_weights: Mapping[str, torch.Tensor]
    trainer: str
    configuration: str
    mirror_axes: tuple[int, ...]


@dataclass(frozen=True)
class ResultsFolder:
    """An nnU-Net v2 results folder, its JSON files read and checked for consistency."""

    path: Path
    dataset: Mapping[str, Any]
    plans: Mapping[str, Any]
    configuration_name: str
    configuration: Mapping[str, Any]

    @property
    def dataset_name(self) -> str:
        return str(self.plans.get("dataset_name") or self.path.parent.name)


def open_results_folder(path: str | Path) -> ResultsFolder:
    """The results folder at ``path`` (the ``<Trainer>__<Plans>__<configuration>`` folder, or a dataset folder
    holding exactly one such folder), or :class:`InputError` saying what is missing or inconsistent."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise InputError(f"{folder} is not a folder; give an nnU-Net results folder (<Trainer>__<Plans>__<config>).")
    if not (folder / "plans.json").exists():
        candidates = sorted(p for p in folder.iterdir() if p.is_dir() and (p / "plans.json").is_file())
        if len(candidates) != 1:
            listed = ", ".join(p.name for p in candidates) or "none"
            raise InputError(
                f"{folder} is not an nnU-Net results folder: it has no plans.json (trained configurations inside: "
                f"{listed}); give the <Trainer>__<Plans>__<configuration> folder."
            )
        folder = candidates[0]
    missing = [name for name in ("dataset.json", "plans.json") if not (folder / name).is_file()]
    if missing:
        raise InputError(f"{folder} is not an nnU-Net results folder: {' and '.join(missing)} missing.")
    dataset = _read_json(folder / "dataset.json")
    plans = _read_json(folder / "plans.json")
    name = _configuration_name(folder, plans)
    configuration = _resolved_configuration(plans, name, folder)
    _check_dataset(dataset, folder)
    return ResultsFolder(folder, dataset, plans, name, configuration)


def fold_names(folder: ResultsFolder, checkpoint: str) -> list[str]:
    """The folds of ``folder`` that hold ``checkpoint`` ("final" or "best"), in order ("0".."4", "all")."""
    file = CHECKPOINTS[checkpoint]
    found = []
    for entry in folder.path.iterdir():
        match = re.fullmatch(r"fold_(\d+|all)", entry.name)
        if match and (entry / file).is_file():
            found.append(match.group(1))
    return sorted(found, key=lambda fold: (fold == "all", int(fold) if fold.isdigit() else 0))


def read_checkpoint(folder: ResultsFolder, fold: str, checkpoint: str) -> Checkpoint:
    """One fold's checkpoint, read safely (see the module docstring) and checked."""
    path = folder.path / f"fold_{fold}" / CHECKPOINTS[checkpoint]
    if not path.is_file():
        raise InputError(f"Fold {fold} has no {path.name} in {folder.path}; choose folds that were trained.")
    size = path.stat().st_size
    if size > MAX_CHECKPOINT_BYTES:
        raise InputError(f"{path} is {size / 2**30:.1f} GiB, more than an nnU-Net checkpoint can be; not read.")
    kind = weights_file_kind(path)
    problem = foreign_weights_problem(path, kind, "an nnU-Net checkpoint")
    if problem is not None:
        raise InputError(problem)
    try:
        with torch.serialization.safe_globals(CHECKPOINT_GLOBALS):  # the legacy format cannot be memory-mapped
            raw = torch.load(path, map_location="cpu", weights_only=True, mmap=kind != "torch-legacy")
    except pickle.UnpicklingError as error:
        found = re.search(r"(?:GLOBAL|global) ([\w.]+)", str(error))
        what = found.group(1) if found else str(error).splitlines()[0]
        raise InputError(
            f"{path} needs {what} to be read, which is not among the objects nnU-Net checkpoints hold; it was not "
            "loaded (loading it could run code). Re-save the weights from a trusted nnU-Net installation."
        ) from None
    except (RuntimeError, OSError, EOFError, ValueError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise InputError(f"{path} is not a readable checkpoint ({reason}); it may be truncated or corrupt.") from None
    return _checked_checkpoint(raw, path, fold)


def _checked_checkpoint(raw: Any, path: Path, fold: str) -> Checkpoint:
    if not isinstance(raw, Mapping) or "network_weights" not in raw:
        raise InputError(f"{path} is not an nnU-Net checkpoint (no network_weights).")
    weights = raw["network_weights"]
    if not isinstance(weights, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in weights.items()
    ):
        raise InputError(f"{path}: network_weights is not a mapping of names to tensors.")
    trainer = raw.get("trainer_name")
    init_args = raw.get("init_args")
    configuration = init_args.get("configuration") if isinstance(init_args, Mapping) else None
    if not isinstance(trainer, str) or not isinstance(configuration, str):
        raise InputError(f"{path} lacks its trainer_name or init_args.configuration; not an nnU-Net v2 checkpoint.")
    axes = raw.get("inference_allowed_mirroring_axes")
    if axes is None:
        mirror = ()
    elif isinstance(axes, Sequence) and all(isinstance(a, int) and not isinstance(a, bool) for a in axes):
        mirror = tuple(int(a) for a in axes)
    else:
        raise InputError(f"{path}: inference_allowed_mirroring_axes is {axes!r}, not a list of axes.")
    return Checkpoint(fold, path, dict(weights), trainer, configuration, mirror)


def check_trainer(name: str, path: Path) -> None:
    """Refuse trainers that may build another network than the plans describe."""
    if name in KNOWN_TRAINERS or name in ARCHITECTURE_TRAINERS or _EPOCH_TRAINER.fullmatch(name):
        return
    raise InputError(
        f"{path} was trained with {name}, which MedSegCNN does not know: it may build another network than the "
        "plans describe, so it is not imported. Known: nnUNetTrainer and its variants that change only training "
        "(e.g. nnUNetTrainerNoMirroring, nnUNetTrainer_4000epochs)."
    )


def _read_json(path: Path) -> dict[str, Any]:
    size = path.stat().st_size
    if size > MAX_JSON_BYTES:
        raise InputError(f"{path} is {size / 2**20:.0f} MiB, far more than an nnU-Net {path.name} can be; not read.")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(f"{path} is not valid JSON ({error}); restore it from the original results folder.") from None
    if not isinstance(data, dict):
        raise InputError(f"{path} must hold a JSON object.")
    return data


def _configuration_name(folder: Path, plans: Mapping[str, Any]) -> str:
    parts = folder.name.split("__")
    configurations = plans.get("configurations")
    if not isinstance(configurations, Mapping) or not configurations:
        raise InputError(f"{folder / 'plans.json'} has no configurations; it is not an nnU-Net v2 plans file.")
    if len(parts) != 3:
        raise InputError(
            f"{folder.name} is not named <Trainer>__<Plans>__<configuration> as nnU-Net names results folders; "
            "give the folder nnU-Net wrote."
        )
    name = parts[2]
    if name not in configurations:
        raise InputError(
            f"The plans in {folder} have no configuration {name!r} (they have {', '.join(configurations)}): the "
            "plans do not belong to this results folder."
        )
    return name


def _resolved_configuration(plans: Mapping[str, Any], name: str, folder: Path) -> dict[str, Any]:
    """The configuration with its ``inherits_from`` chain applied (nnU-Net's PlansManager)."""
    configurations = plans["configurations"]
    chain, current = [], name
    while True:
        entry = configurations.get(current)
        if not isinstance(entry, Mapping):
            raise InputError(f"{folder / 'plans.json'}: configuration {current!r} is missing or not an object.")
        chain.append(entry)
        parent = entry.get("inherits_from")
        if parent is None:
            break
        if len(chain) > len(configurations):
            raise InputError(f"{folder / 'plans.json'}: configuration {name!r} inherits in a circle.")
        current = parent
    resolved: dict[str, Any] = {}
    for entry in reversed(chain):
        resolved.update(entry)
    if "architecture" not in resolved:
        resolved["architecture"] = _architecture_of_old_plans(resolved, folder)
    if not isinstance(resolved["architecture"], Mapping) or not isinstance(
        resolved["architecture"].get("arch_kwargs"), Mapping
    ):
        raise InputError(f"{folder / 'plans.json'}: configuration {name!r} has no architecture with arch_kwargs.")
    return resolved


def _architecture_of_old_plans(configuration: Mapping[str, Any], folder: Path) -> dict[str, Any]:
    """The ``architecture`` entry of plans written before nnU-Net v2.3 (``UNet_class_name``...), as nnU-Net's
    PlansManager reconstructs it: instance norm, leaky ReLU, convolution biases."""
    keys = ("UNet_class_name", "UNet_base_num_features", "unet_max_num_features", "n_conv_per_stage_encoder",
            "n_conv_per_stage_decoder", "conv_kernel_sizes", "pool_op_kernel_sizes", "patch_size")  # fmt: skip
    missing = [key for key in keys if key not in configuration]
    if missing:
        raise InputError(f"{folder / 'plans.json'} has neither an architecture nor the older {', '.join(missing)}.")
    kind = configuration["UNet_class_name"]
    dims = len(configuration["patch_size"])
    stages = len(configuration["n_conv_per_stage_encoder"])
    base, largest = configuration["UNet_base_num_features"], configuration["unet_max_num_features"]
    blocks = "n_conv_per_stage" if kind == "PlainConvUNet" else "n_blocks_per_stage"
    return {
        "network_class_name": kind,
        "arch_kwargs": {
            "n_stages": stages,
            "features_per_stage": [min(base * 2**i, largest) for i in range(stages)],
            "conv_op": f"torch.nn.modules.conv.Conv{dims}d",
            "kernel_sizes": configuration["conv_kernel_sizes"],
            "strides": configuration["pool_op_kernel_sizes"],
            blocks: configuration["n_conv_per_stage_encoder"],
            "n_conv_per_stage_decoder": configuration["n_conv_per_stage_decoder"],
            "conv_bias": True,
            "norm_op": f"torch.nn.modules.instancenorm.InstanceNorm{dims}d",
            "norm_op_kwargs": {"eps": 1e-05, "affine": True},
            "dropout_op": None,
            "dropout_op_kwargs": None,
            "nonlin": "torch.nn.LeakyReLU",
            "nonlin_kwargs": {"inplace": True},
        },
        "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
    }


def _check_dataset(dataset: Mapping[str, Any], folder: Path) -> None:
    channels = dataset.get("channel_names", dataset.get("modality"))
    if not isinstance(channels, Mapping) or not channels:
        raise InputError(f"{folder / 'dataset.json'} has no channel_names; it is not an nnU-Net v2 dataset.json.")
    labels = dataset.get("labels")
    if not isinstance(labels, Mapping) or not labels:
        raise InputError(f"{folder / 'dataset.json'} has no labels; it is not an nnU-Net v2 dataset.json.")
