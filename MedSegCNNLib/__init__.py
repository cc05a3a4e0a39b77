"""MedSegCNN: CNN segmentation of medical images for 3D Slicer, Python scripts and the command line.

The public API (scripts may rely on these names):

- :class:`Image`, :class:`LabelInfo`: a voxel array with spacing, origin and direction (LPS, ITK order).
- :func:`read_image`, :func:`write_image`: NIfTI, NRRD, MetaImage, Slicer ``.seg.nrrd``, DICOM series (read).
- :func:`to_sitk`, :func:`from_sitk`: conversion to and from ``SimpleITK.Image``.
- :func:`evaluate`, :class:`EvaluationResult`: Dice, IoU, HD95, ASSD, NSD, ... per case and label.
- :class:`MedSegCNNError`: the base class of every error caused by bad input.
"""

from ._version import __version__
from .errors import MedSegCNNError
from .image import Image, LabelInfo, from_sitk, to_sitk
from .image.io import read_image, write_image
from .metrics import EvaluationResult, evaluate

__all__ = [
    "EvaluationResult",
    "Image",
    "LabelInfo",
    "MedSegCNNError",
    "__version__",
    "evaluate",
    "from_sitk",
    "read_image",
    "to_sitk",
    "write_image",
]
