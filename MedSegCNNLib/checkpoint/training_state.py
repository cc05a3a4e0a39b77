"""Resumable training checkpoints, without pickle: a folder (e.g. ``<model_dir>/checkpoints/last/``) holding

- ``training_state.safetensors``: every tensor (model weights, optimizer buffers such as momentum or Adam
  moments, RNG states), named by its path, e.g. ``model/encoder.0.weight``, ``optimizer/state/0/exp_avg``;
- ``training_state.json``: everything else (optimizer hyper-parameters, scheduler and GradScaler states,
  epoch, step, Python/numpy RNG states, the caller's ``rng`` and ``extra``), the tensor file's SHA-256 and the
  classes of the optimizer and scheduler. The encoding is :mod:`.state_codec`'s.

Resuming exactly: save ``rng=capture_rng_state()`` (plus any sampler states) with the checkpoint; after
:func:`load_training_state` call ``restore_rng_state(state.rng)`` (it is not called for you, so that objects
built after loading do not consume the restored random streams). Training then continues bit for bit as it
would have without the interruption, on the same device and library versions.
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from torch import nn

from .._version import __version__
from ..atomic import atomic_folder, incomplete_write, make_folder
from ..errors import InputError
from .json_file import read_json, write_json
from .model_folder import weights_mismatch
from .state_codec import decode_state, encode_state, read_tensors, write_tensors

logger = logging.getLogger(__name__)

TRAINING_STATE_FORMAT = "medsegcnn-training-state"
TRAINING_STATE_VERSION = 1
STATE_FILE = "training_state.json"
TENSORS_FILE = "training_state.safetensors"


@dataclass
class TrainingState:
    """What :func:`load_training_state` returns besides the objects it restores in place."""

    epoch: int
    step: int
    rng: dict[str, Any]
    extra: dict[str, Any]


def save_training_state(
    folder: str | os.PathLike[str],
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any | None,
    scaler: torch.amp.GradScaler | None,
    epoch: int,
    step: int,
    rng: Mapping[str, Any],
    extra: Mapping[str, Any],
    overwrite: bool = True,
) -> Path:
    """Write a training checkpoint to ``folder`` (missing parent folders are created); return the folder.

    ``scheduler`` is any object with ``state_dict()``/``load_state_dict()`` (a ``torch.optim.lr_scheduler``).
    ``rng`` and ``extra`` hold numbers, strings, lists, tuples, dicts, tensors and numpy arrays. The folder is
    replaced atomically: the previous checkpoint stays complete until the new one is.
    """
    for name, value in (("epoch", epoch), ("step", step)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise InputError(f"{name} must be an integer >= 0; got {value!r}.")
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": None if scheduler is None else scheduler.state_dict(),
        "scaler": None if scaler is None else scaler.state_dict(),
        "rng": dict(rng),
        "extra": dict(extra),
    }
    tree, tensors = encode_state(state)
    folder = Path(folder)
    make_folder(folder.parent, for_file=folder)
    with atomic_folder(folder, overwrite=overwrite) as partial:
        sha256 = write_tensors(partial / TENSORS_FILE, tensors)
        document = {
            "format": TRAINING_STATE_FORMAT,
            "format_version": TRAINING_STATE_VERSION,
            "library_version": __version__,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "epoch": epoch,
            "step": step,
            "optimizer_class": type(optimizer).__name__,
            "scheduler_class": None if scheduler is None else type(scheduler).__name__,
            "tensors": {"file": TENSORS_FILE, "sha256": sha256},
            "state": tree,
        }
        write_json(partial / STATE_FILE, document)
        _check_written(partial, folder, document, tensors)
    logger.debug("Saved the training state (epoch %d, step %d) to %s", epoch, step, folder)
    return folder


def _check_written(partial: Path, folder: Path, document: dict[str, Any], tensors: Mapping[str, torch.Tensor]) -> None:
    """Read back a checkpoint written to ``partial`` before it becomes ``folder``: the JSON document as meant,
    the tensors file with every tensor's name and shape (its length and SHA-256 were taken from the file).
    Raises :class:`WriteError` naming ``folder``."""
    try:
        same_document = read_json(partial / STATE_FILE, what="training state") == document
        with safe_open(str(partial / TENSORS_FILE), framework="pt") as file:
            shapes = {name: tuple(file.get_slice(name).get_shape()) for name in file.keys()}  # noqa: SIM118 - safe_open is not iterable
    except (InputError, SafetensorError, OSError) as error:
        raise incomplete_write(folder, f"it does not read back ({error})", replaced=folder.exists()) from None
    if not same_document or shapes != {name: tuple(tensor.shape) for name, tensor in tensors.items()}:
        raise incomplete_write(folder, "it reads back differently from what was written", replaced=folder.exists())


def load_training_state(
    folder: str | os.PathLike[str],
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any | None = None,
    scaler: torch.amp.GradScaler | None = None,
    map_location: str | torch.device = "cpu",
) -> TrainingState:
    """Restore ``model``, ``optimizer``, ``scheduler`` and ``scaler`` in place from a checkpoint written by
    :func:`save_training_state`, and return its epoch, step, ``rng`` and ``extra``. The model and optimizer
    tensors are read onto ``map_location`` before being copied into the objects (which keep their devices);
    tensors in ``rng`` and ``extra`` stay on the CPU. The objects must be built as for the saved run: same
    network, optimizer class and parameter groups, scheduler class (or none). A GradScaler state is applied when
    both sides have one; a missing one leaves ``scaler`` as it is, with a warning (e.g. resuming a CPU run on a
    GPU).
    """
    folder = Path(folder)
    if not folder.is_dir():
        leftovers = sorted(folder.parent.glob(f".{folder.name}.*.previous")) if folder.parent.is_dir() else []
        hint = f"; an earlier checkpoint survives as {leftovers[-1]} (rename it to {folder.name})" if leftovers else ""
        raise InputError(f"Training checkpoint {folder} does not exist{hint}.")
    try:
        device = torch.device(map_location)
    except (RuntimeError, TypeError):
        raise InputError(f"Unknown map_location {map_location!r}; use 'cpu', 'cuda', 'cuda:1', 'mps', ...") from None
    document = read_json(folder / STATE_FILE, what="training state")
    _check_document(document, folder)
    tensors = read_tensors(
        folder / TENSORS_FILE,
        sha256=document["tensors"]["sha256"],
        what="tensors",
        record=f"the SHA-256 in {STATE_FILE}",
    )
    tensors = {
        name: tensor.to(device) if name.startswith(("model/", "optimizer/")) else tensor
        for name, tensor in tensors.items()
    }
    state = decode_state(document["state"], tensors)
    if not isinstance(state, dict) or not {"model", "optimizer", "scheduler", "scaler", "rng", "extra"} <= set(state):
        raise InputError(f"The training state in {folder} lacks entries (corrupted?); use another checkpoint.")

    if document["optimizer_class"] != type(optimizer).__name__:
        raise InputError(
            f"The checkpoint {folder} was saved with a {document['optimizer_class']} optimizer, not a "
            f"{type(optimizer).__name__}; resume with the training configuration it was saved with."
        )
    saved_scheduler = document.get("scheduler_class")
    if saved_scheduler != (None if scheduler is None else type(scheduler).__name__):
        raise InputError(
            f"The checkpoint {folder} was saved with learning-rate scheduler {saved_scheduler}, but "
            f"{'none' if scheduler is None else type(scheduler).__name__} was given; resume with the same "
            "training configuration."
        )
    _load_model(model, state["model"], folder)
    try:
        optimizer.load_state_dict(state["optimizer"])
    except (ValueError, KeyError, TypeError) as error:
        raise InputError(f"The optimizer state in {folder} does not fit this optimizer: {error}") from None
    if scheduler is not None:
        scheduler.load_state_dict(state["scheduler"])
    if scaler is not None:
        if state["scaler"]:
            scaler.load_state_dict(state["scaler"])
        elif scaler.is_enabled():
            logger.warning("The checkpoint %s has no GradScaler state; the loss scale starts afresh.", folder)
    return TrainingState(
        epoch=document["epoch"], step=document["step"], rng=dict(state["rng"]), extra=dict(state["extra"])
    )


def capture_rng_state() -> dict[str, Any]:
    """The states of Python's ``random``, numpy's global RNG, torch's CPU RNG and, when in use, the CUDA RNGs
    (one per device; only when CUDA is initialised) and the MPS RNG, in a form :func:`save_training_state`
    stores without pickle."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),  # noqa: NPY002 - the global RNG is what we capture
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if torch.backends.mps.is_available():
        state["mps"] = torch.mps.get_rng_state()
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Set the RNGs from :func:`capture_rng_state`'s ``state`` (as stored and loaded back). Keys other than
    ``python``, ``numpy``, ``torch``, ``cuda`` and ``mps`` are left to the caller; a device's state that cannot
    be applied here (no CUDA, fewer GPUs) is skipped with a warning."""
    try:
        if "python" in state:
            random.setstate(state["python"])
        if "numpy" in state:
            np.random.set_state(state["numpy"])  # noqa: NPY002 - the global RNG is what we restore
        if "torch" in state:
            torch.set_rng_state(_byte_tensor(state["torch"]))
        if "cuda" in state:
            saved = list(state["cuda"])
            available = torch.cuda.device_count() if torch.cuda.is_available() else 0
            if len(saved) != available:
                logger.warning(
                    "The checkpoint holds CUDA RNG states for %d device(s), this machine has %d; %d restored.",
                    len(saved),
                    available,
                    min(len(saved), available),
                )
            for index, device_state in enumerate(saved[:available]):
                torch.cuda.set_rng_state(_byte_tensor(device_state), index)
        if "mps" in state:
            if torch.backends.mps.is_available():
                torch.mps.set_rng_state(_byte_tensor(state["mps"]))
            else:
                logger.warning("The checkpoint holds an MPS RNG state but MPS is not available; not restored.")
    except (TypeError, ValueError, RuntimeError) as error:
        raise InputError(
            f"The saved RNG state cannot be restored (corrupted or not from capture_rng_state): {error}"
        ) from None


def _byte_tensor(value: Any) -> torch.Tensor:
    if not isinstance(value, torch.Tensor) or value.dtype != torch.uint8:
        raise TypeError(f"expected a uint8 tensor, got {type(value).__name__}")
    return value.cpu()


def _check_document(document: Any, folder: Path) -> None:
    if not isinstance(document, dict) or document.get("format") != TRAINING_STATE_FORMAT:
        raise InputError(f"{folder} is not a MedSegCNN training checkpoint (wrong or missing format in {STATE_FILE}).")
    version = document.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise InputError(f"{folder / STATE_FILE} has an invalid format_version {version!r} (corrupted?).")
    if version > TRAINING_STATE_VERSION:
        raise InputError(
            f"{folder} was written by a newer MedSegCNN (training state format {version}; this is {__version__}); "
            "upgrade MedSegCNN to resume from it."
        )
    tensors = document.get("tensors")
    valid = (
        isinstance(tensors, dict)
        and tensors.get("file") == TENSORS_FILE
        and isinstance(tensors.get("sha256"), str)
        and all(isinstance(document.get(key), int) and document[key] >= 0 for key in ("epoch", "step"))
        and isinstance(document.get("optimizer_class"), str)
        and "state" in document
    )
    if not valid:
        raise InputError(f"{folder / STATE_FILE} lacks required entries (corrupted?); use another checkpoint.")


def _load_model(model: nn.Module, weights: Any, folder: Path) -> None:
    if not isinstance(weights, dict) or not all(isinstance(value, torch.Tensor) for value in weights.values()):
        raise InputError(f"The model weights in {folder} are malformed (corrupted?).")
    mismatch = weights_mismatch(model, weights)
    if mismatch:
        raise InputError(
            f"The checkpoint {folder} holds weights of another network ({mismatch}); resume with the network "
            "configuration it was saved with."
        )
    model.load_state_dict(weights, strict=True)
