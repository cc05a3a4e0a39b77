"""Inference: sliding-window prediction of whole images.

:class:`PredictOptions` can be imported without torch; the other names import torch on first use.
"""

from .options import PredictOptions

_TORCH_NAMES = (
    "importance_map",
    "labels_dtype",
    "predict_image",
    "processing_order",
    "sliding_window_inference",
    "window_starts",
)


def __getattr__(name: str):
    if name in _TORCH_NAMES:  # imported on first use, so that the options do not import torch
        from . import sliding_window

        return getattr(sliding_window, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["PredictOptions", *_TORCH_NAMES]
