"""Training: configuration, the training run, and the pieces it is made of.

``train`` and ``TrainingResult`` are imported on first use, so that reading a ``TrainingConfig`` (e.g. by the
command line) does not import torch.
"""

from typing import Any

from .config import TrainingConfig

__all__ = ["TrainingConfig", "TrainingResult", "train"]


def __getattr__(name: str) -> Any:
    if name in ("train", "TrainingResult"):
        from . import trainer

        return getattr(trainer, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
