"""Inference: sliding-window prediction of whole images."""

from .sliding_window import importance_map, sliding_window_inference, window_starts

__all__ = ["importance_map", "sliding_window_inference", "window_starts"]
