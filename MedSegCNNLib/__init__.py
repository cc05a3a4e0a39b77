"""MedSegCNN: CNN segmentation of medical images for 3D Slicer, Python scripts and the command line."""

from ._version import __version__

__all__ = ["__version__"]
