"""Trained models and training checkpoints on disk, in safetensors + JSON; nothing here unpickles a file.

- :mod:`.model_folder`: a trained model (``model.safetensors`` + the ``model.json`` model card) as a folder or
  a ``.zip``; import of plain PyTorch state dicts; partial loading for transfer learning.
- :mod:`.model_card`: the typed, validated :class:`ModelCard` (its documented schema and size bounds), without
  torch (for listing models).
- :mod:`.model_archive`: the safe opening of a model folder or ``.zip`` (streamed, capped extraction, SHA-256
  checks, temporary folders), without torch.
- :mod:`.training_state`: resumable training checkpoints (model, optimizer, scheduler, GradScaler, RNG states).
- :mod:`.state_codec`: the encoding of nested state into tensors and JSON, and atomic folder writes.
- :mod:`.weights_file`: what a weights file of another tool is (torch.save zip or legacy, pickle, zip,
  safetensors), told by its first bytes.

The names below are imported from their modules on first use, so that reading a model card does not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .model_card import ModelCard, read_model_card
    from .model_folder import import_state_dict, load_matching_weights, load_model, save_model, zip_model
    from .training_state import (
        TrainingState,
        capture_rng_state,
        load_training_state,
        restore_rng_state,
        save_training_state,
    )

_MODULE_OF = {
    "ModelCard": "model_card",
    "read_model_card": "model_card",
    "import_state_dict": "model_folder",
    "load_matching_weights": "model_folder",
    "load_model": "model_folder",
    "save_model": "model_folder",
    "zip_model": "model_folder",
    "TrainingState": "training_state",
    "capture_rng_state": "training_state",
    "load_training_state": "training_state",
    "restore_rng_state": "training_state",
    "save_training_state": "training_state",
}

__all__ = [
    "ModelCard",
    "TrainingState",
    "capture_rng_state",
    "import_state_dict",
    "load_matching_weights",
    "load_model",
    "load_training_state",
    "read_model_card",
    "restore_rng_state",
    "save_model",
    "save_training_state",
    "zip_model",
]


def __getattr__(name: str) -> Any:
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_MODULE_OF[name]}", __name__), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
