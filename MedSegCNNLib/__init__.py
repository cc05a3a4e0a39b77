"""MedSegCNN: CNN segmentation of medical images for 3D Slicer, Python scripts and the command line.

The public API (scripts may rely on these names):

- :class:`Image`, :class:`LabelInfo`: a voxel array with spacing, origin and direction (LPS, ITK order).
- :func:`read_image`, :func:`write_image`: NIfTI, NRRD, MetaImage, Slicer ``.seg.nrrd``, DICOM series (read).
- :func:`to_sitk`, :func:`from_sitk`: conversion to and from ``SimpleITK.Image``.
- :func:`evaluate`, :class:`EvaluationResult`: Dice, IoU, HD95, ASSD, NSD, ... per case and label.
- :func:`segment`: a whole image through a trained model, back on the image's grid (lazy: imports torch).
- :class:`PredictOptions`: what :func:`segment` does (device, precision, TTA, extra outputs, post-processing).
- :func:`predict_folder`, :class:`FolderOptions`, :class:`FolderResult`, :class:`CaseResult`: every case of a
  folder segmented into files with one loaded model (existing outputs, failed cases recorded; lazy: imports torch).
- :class:`MedSegCNNError`: the base class of every error caused by bad input.
"""

from ._version import __version__
from .errors import MedSegCNNError
from .image import Image, LabelInfo, from_sitk, to_sitk
from .image.io import read_image, write_image
from .inference.options import FolderOptions, PredictOptions
from .metrics import EvaluationResult, evaluate


def __getattr__(name: str):
    if name == "segment":  # imported on first use, so that ``import MedSegCNNLib`` does not import torch
        from .inference.segment import segment

        return segment
    if name == "predict_folder":
        from .inference.folder import predict_folder

        return predict_folder
    if name in ("CaseResult", "FolderResult"):
        from .inference import folder_run

        return getattr(folder_run, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "CaseResult",
    "EvaluationResult",
    "FolderOptions",
    "FolderResult",
    "Image",
    "LabelInfo",
    "MedSegCNNError",
    "PredictOptions",
    "__version__",
    "evaluate",
    "from_sitk",
    "predict_folder",
    "read_image",
    "segment",
    "to_sitk",
    "write_image",
]
