"""Inference: sliding-window prediction of whole images."""

from .sliding_window import (
    OUTPUTS,
    PRECISIONS,
    importance_map,
    labels_dtype,
    processing_order,
    sliding_window_inference,
    window_starts,
)

__all__ = [
    "OUTPUTS",
    "PRECISIONS",
    "importance_map",
    "labels_dtype",
    "processing_order",
    "sliding_window_inference",
    "window_starts",
]
