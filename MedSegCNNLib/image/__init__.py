"""Images: the :class:`Image` type, SimpleITK conversion, file I/O and geometry helpers."""

from .core import Image, LabelInfo
from .geometry import physical_overlap, resample_labels_onto
from .sitk_bridge import from_sitk, to_sitk

__all__ = ["Image", "LabelInfo", "from_sitk", "physical_overlap", "resample_labels_onto", "to_sitk"]
