"""Pictures for humans to check results: overlay montages of label maps on images."""

from .overlay import save_overlay, select_slices

__all__ = ["save_overlay", "select_slices"]
