"""Reading and writing image files, dispatched by path.

- NIfTI (``.nii``, ``.nii.gz``), NRRD (``.nrrd``, ``.nhdr``) and MetaImage (``.mha``, ``.mhd``) go through
  SimpleITK; a 4D NIfTI or a vector image becomes a multi-channel 3D :class:`Image`.
- Slicer segmentations (``.seg.nrrd``, or any NRRD whose header lists Slicer segments) go through
  :mod:`.seg_nrrd`, so label names and colours come back in :attr:`Image.labels`.
- A folder is read as a DICOM series (:mod:`.dicom`); DICOM cannot be written.
- 2D raster files, PNG (``.png``), JPEG (``.jpg``, ``.jpeg``), TIFF (``.tif``, ``.tiff``) and BMP (``.bmp``), go
  through :mod:`.raster` (Pillow and tifffile): a 2D :class:`Image`, colour as channels (red, green, blue), spacing
  from the file's resolution metadata or 1.0 (:func:`has_physical_spacing`); see there for what is refused.

Every write is atomic and verified (see :mod:`.sitk_files`): the file appears under its final name complete or
not at all, and an existing file is replaced only with ``overwrite=True``.

Format limits: NIfTI stores spacing and origin as float32 (about 7 significant digits) and can only hold an
orthonormal direction (rotations and flips are kept; a non-orthogonal one, e.g. from gantry-tilted CT, is
replaced by the nearest orthogonal matrix, so write such images as ``.nrrd`` or ``.mha``). NRRD and MetaImage
keep geometry exactly. Only ``.seg.nrrd`` keeps label names and colours. Raster files keep no origin or direction,
PNG and BMP keep the spacing to whole pixels per metre, JPEG is lossy and refused for label maps
(:func:`.raster.write_raster`).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from .core import Image
from .dicom import read_dicom_series
from .integrity import check_header_geometry, inspect_image_file
from .raster import (
    COLOR_CHANNEL_NAMES,
    RASTER_EXTENSIONS,
    Pages,
    Palette,
    check_raster_options,
    is_raster_path,
    raster_has_physical_spacing,
    read_raster,
    write_raster,
)
from .seg_nrrd import read_seg_nrrd, write_seg_nrrd
from .sitk_bridge import from_sitk, to_sitk
from .sitk_files import restore_non_finite, sitk_read_step, write_sitk_image

logger = logging.getLogger(__name__)

SEG_NRRD_EXTENSION = ".seg.nrrd"
SUPPORTED_EXTENSIONS: tuple[str, ...] = (
    ".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", SEG_NRRD_EXTENSION, *RASTER_EXTENSIONS,
)  # fmt: skip
"""File extensions :func:`read_image` and :func:`write_image` accept (a folder is read as a DICOM series)."""

__all__ = [
    "COLOR_CHANNEL_NAMES",
    "RASTER_EXTENSIONS",
    "SUPPORTED_EXTENSIONS",
    "case_name",
    "has_physical_spacing",
    "is_image_path",
    "is_raster_path",
    "read_image",
    "write_image",
]

_NIFTI_EXTENSIONS = (".nii", ".nii.gz")
_SLICER_SEGMENT_KEY = "Segment0_ID"  # present in every NRRD that Slicer wrote from a segmentation
_DICOM_SUFFIXES = ("", ".dcm", ".ima")


def _image_extension(path: str | os.PathLike[str]) -> str | None:
    """The supported extension chain that ``path`` ends with (lower case, e.g. ``.nii.gz``), or ``None``."""
    name = Path(path).name.lower()
    return next((ext for ext in sorted(SUPPORTED_EXTENSIONS, key=len, reverse=True) if name.endswith(ext)), None)


def is_image_path(path: str | os.PathLike[str]) -> bool:
    """True when the file name of ``path`` ends with one of :data:`SUPPORTED_EXTENSIONS` (any case)."""
    return _image_extension(path) is not None


def case_name(path: str | os.PathLike[str]) -> str:
    """The file name without its format extension chain: ``/x/hippocampus_004.nii.gz`` -> ``hippocampus_004``.

    Names without a supported extension (e.g. a DICOM folder) are returned unchanged.
    """
    name = Path(path).name
    extension = _image_extension(name)
    return name[: -len(extension)] if extension and len(name) > len(extension) else name


def read_image(
    path: str | os.PathLike[str],
    *,
    series_uid: str | None = None,
    pages: Pages = "single",
    palette: Palette = "refuse",
) -> Image:
    """Read an image file, a Slicer segmentation, a 2D raster file or a DICOM series folder (module docstring).

    ``series_uid`` selects one series of a DICOM folder that holds several. ``pages`` and ``palette`` apply to
    raster files (:func:`.raster.read_raster`): ``pages="stack"`` reads a multi-page TIFF (or animated PNG) as a 3D
    image, z = page (``"single"`` refuses it); ``palette="indices"`` reads a palette PNG's indices (what label masks
    stored that way need; ``"refuse"`` refuses it, as its values are not intensities).
    """
    check_raster_options(pages, palette)
    path = Path(path)
    if not path.exists():
        raise InputError(f"Input {path} does not exist; check the path (and the current folder for relative paths).")
    if path.is_dir():
        return read_dicom_series(path, series_uid=series_uid)
    if series_uid is not None:
        raise InputError(f"series_uid selects a series in a DICOM folder, but {path} is a file; drop series_uid.")
    extension = _image_extension(path)
    if extension is None:
        raise InputError(f"Cannot read {path}: unsupported file type; {_supported_text()}, or a DICOM folder.")
    if extension in RASTER_EXTENSIONS:
        return read_raster(path, pages=pages, palette=palette)
    if extension == SEG_NRRD_EXTENSION:
        return read_seg_nrrd(path)
    if extension in (".nrrd", ".nhdr") and _is_slicer_segmentation(path):
        return read_seg_nrrd(path)  # a segmentation saved from Slicer under a plain .nrrd name (checked there)
    non_finite = inspect_image_file(path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    return from_sitk(restore_non_finite(sitk_read_step(reader.Execute, path), non_finite))


def write_image(image: Image, path: str | os.PathLike[str], *, overwrite: bool = False, compress: bool = True) -> Path:
    """Write ``image`` atomically to ``path``; the format follows the extension. Returns the path written.

    ``.seg.nrrd`` writes a Slicer segmentation (:func:`.seg_nrrd.write_seg_nrrd`); ``.png``, ``.jpg``/``.jpeg``,
    ``.tif``/``.tiff`` and ``.bmp`` a 2D raster file (:func:`.raster.write_raster`: 2D images or 3D ones with a
    single slice; label maps exact in PNG and TIFF; values never rescaled). ``compress`` applies to NRRD and
    MetaImage (``.nii.gz`` is always and ``.nii`` never compressed; PNG and TIFF are always losslessly
    compressed). Label names are kept only by ``.seg.nrrd``. Raises
    :class:`~MedSegCNNLib.errors.OutputExistsError` if ``path`` exists and not ``overwrite``.
    """
    path = Path(path)
    extension = _image_extension(path)
    if extension is None and (path.is_dir() or path.suffix.lower() in _DICOM_SUFFIXES):
        raise InputError(f"Cannot write {path}: writing DICOM is not supported; {_supported_text()}.")
    if extension is None:
        raise InputError(f"Cannot write {path}: unsupported file type; {_supported_text()}.")
    if extension in RASTER_EXTENSIONS:
        return write_raster(image, path, overwrite=overwrite)
    if extension == SEG_NRRD_EXTENSION:
        return write_seg_nrrd(image, path, overwrite=overwrite)
    if extension in _NIFTI_EXTENSIONS and not _is_orthonormal(image.direction):
        logger.warning(
            "NIfTI cannot store the non-orthogonal direction of this image; %s gets the nearest orthogonal one "
            "(write .nrrd or .mha to keep it).",
            path,
        )
    return write_sitk_image(to_sitk(image), path, overwrite=overwrite, compress=compress)


def has_physical_spacing(path: str | os.PathLike[str]) -> bool:
    """False only for a raster file (PNG, JPEG, TIFF, BMP) without pixel-size metadata in a physical unit, whose
    spacing of 1.0 is in pixel units; True for every other file or folder (their spacing is in mm)."""
    return not is_raster_path(path) or raster_has_physical_spacing(path)


def _is_slicer_segmentation(path: Path) -> bool:
    """Whether the NRRD header of ``path`` lists Slicer segments (the header only is read; the data are checked
    by whichever reader reads them)."""
    check_header_geometry(path)  # refuse a broken header before SimpleITK interprets it
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    sitk_read_step(reader.ReadImageInformation, path)
    return reader.HasMetaDataKey(_SLICER_SEGMENT_KEY)


def _is_orthonormal(direction: np.ndarray) -> bool:
    return bool(np.allclose(direction.T @ direction, np.eye(len(direction)), atol=1e-6))


def _supported_text() -> str:
    return f"use a file ending in {', '.join(SUPPORTED_EXTENSIONS)}"
