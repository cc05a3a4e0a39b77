"""Trained models and training checkpoints on disk, in safetensors + JSON; nothing here unpickles a file.

- :mod:`.model_folder`: a trained model (``model.safetensors`` + the ``model.json`` model card) as a folder or
  a ``.zip``; import of plain PyTorch state dicts; partial loading for transfer learning.
- :mod:`.training_state`: resumable training checkpoints (model, optimizer, scheduler, GradScaler, RNG states).
- :mod:`.state_codec`: the encoding of nested state into tensors and JSON, and atomic folder writes.
"""

from .model_folder import (
    import_state_dict,
    load_matching_weights,
    load_model,
    read_model_card,
    save_model,
    zip_model,
)
from .training_state import (
    TrainingState,
    capture_rng_state,
    load_training_state,
    restore_rng_state,
    save_training_state,
)

__all__ = [
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
