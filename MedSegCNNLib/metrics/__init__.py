"""Segmentation metrics: overlap, surface distances, per-case evaluation and summaries."""
