"""Reading and writing image files, dispatched by path.

- NIfTI (``.nii``, ``.nii.gz``), NRRD (``.nrrd``, ``.nhdr``) and MetaImage (``.mha``, ``.mhd``) go through
  SimpleITK; a 4D NIfTI or a vector image becomes a multi-channel 3D :class:`Image`.
- Slicer segmentations (``.seg.nrrd``, or any NRRD whose header lists Slicer segments) go through
  :mod:`.seg_nrrd`, so label names and colours come back in :attr:`Image.labels`.
- A folder is read as a DICOM series (:mod:`.dicom`); DICOM cannot be written.

Every write is atomic (see :mod:`MedSegCNNLib.atomic`): the file appears under its final name complete or not
at all, and an existing file is replaced only with ``overwrite=True``.

Format limits: NIfTI stores spacing and origin as float32 (about 7 significant digits) and can only hold an
orthonormal direction (rotations and flips are kept; a non-orthogonal one, e.g. from gantry-tilted CT, is
replaced by the nearest orthogonal matrix, so write such images as ``.nrrd`` or ``.mha``). NRRD and MetaImage
keep geometry exactly. Only ``.seg.nrrd`` keeps label names and colours.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
import SimpleITK as sitk

from ..atomic import atomic_path, check_writable
from ..errors import InputError
from .core import Image
from .sitk_bridge import from_sitk, to_sitk

logger = logging.getLogger(__name__)
T = TypeVar("T")

SEG_NRRD_EXTENSION = ".seg.nrrd"
SUPPORTED_EXTENSIONS: tuple[str, ...] = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", SEG_NRRD_EXTENSION)
"""File extensions :func:`read_image` and :func:`write_image` accept (a folder is read as a DICOM series)."""

_DETACHED_HEADER_EXTENSIONS = (".nhdr", ".mhd")  # the header names a data file written beside it
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


def read_image(path: str | os.PathLike[str], *, series_uid: str | None = None) -> Image:
    """Read an image file, a Slicer segmentation or a DICOM series folder (see the module docstring).

    ``series_uid`` selects one series of a DICOM folder that holds several.
    """
    from .dicom import read_dicom_series  # imported here: dicom and seg_nrrd use this module's helpers
    from .seg_nrrd import read_seg_nrrd

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
    if extension == SEG_NRRD_EXTENSION:
        return read_seg_nrrd(path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    _read_step(reader.ReadImageInformation, path)
    if extension in (".nrrd", ".nhdr") and reader.HasMetaDataKey(_SLICER_SEGMENT_KEY):
        return read_seg_nrrd(path)  # a segmentation saved from Slicer under a plain .nrrd name
    return from_sitk(_read_step(reader.Execute, path))


def write_image(image: Image, path: str | os.PathLike[str], *, overwrite: bool = False, compress: bool = True) -> Path:
    """Write ``image`` atomically to ``path``; the format follows the extension. Returns the path written.

    ``.seg.nrrd`` writes a Slicer segmentation (:func:`.seg_nrrd.write_seg_nrrd`). ``compress`` applies to
    NRRD and MetaImage (``.nii.gz`` is always and ``.nii`` never compressed). Label names are kept only by
    ``.seg.nrrd``. Raises :class:`~MedSegCNNLib.errors.OutputExistsError` if ``path`` exists and not ``overwrite``.
    """
    from .seg_nrrd import write_seg_nrrd  # imported here: seg_nrrd uses this module's helpers

    path = Path(path)
    extension = _image_extension(path)
    if extension is None and (path.is_dir() or path.suffix.lower() in _DICOM_SUFFIXES):
        raise InputError(f"Cannot write {path}: writing DICOM is not supported; {_supported_text()}.")
    if extension is None:
        raise InputError(f"Cannot write {path}: unsupported file type; {_supported_text()}.")
    if extension == SEG_NRRD_EXTENSION:
        return write_seg_nrrd(image, path, overwrite=overwrite)
    if extension in _NIFTI_EXTENSIONS and not _is_orthonormal(image.direction):
        logger.warning(
            "NIfTI cannot store the non-orthogonal direction of this image; %s gets the nearest orthogonal one "
            "(write .nrrd or .mha to keep it).",
            path,
        )
    return write_sitk_image(to_sitk(image), path, overwrite=overwrite, compress=compress)


# ----- SimpleITK file access shared with seg_nrrd and dicom -----------------------------------------------


def read_sitk_image(path: str | os.PathLike[str]) -> sitk.Image:
    """Read ``path`` with SimpleITK (metadata included); a missing or unreadable file raises InputError."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"Input file {path} does not exist (or is a folder); check the path.")
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    return _read_step(reader.Execute, path)


def write_sitk_image(
    sitk_image: sitk.Image, path: str | os.PathLike[str], *, overwrite: bool = False, compress: bool = True
) -> Path:
    """Write ``sitk_image`` (metadata included) atomically to ``path``; SimpleITK picks the format by extension.

    For a detached header (``.nhdr``, ``.mhd``) the data file is moved beside ``path`` before the header, so
    the header never names a missing file.
    """
    target = Path(path)
    with atomic_path(target, overwrite=overwrite) as tmp:
        if target.name.lower().endswith(_DETACHED_HEADER_EXTENSIONS):
            _write_detached(sitk_image, target, tmp, overwrite=overwrite, compress=compress)
        else:
            _write(sitk_image, tmp, target, compress=compress)
    return target


def sitk_error_reason(error: RuntimeError) -> str:
    """SimpleITK's reason for ``error`` on one line, without source locations and object addresses."""
    lines = [line.strip() for line in str(error).splitlines()]
    text = " ".join(line for line in lines if line and not line.startswith("Exception thrown in SimpleITK"))
    text = re.sub(r"(sitk::|itk::|ITK )ERROR:\s*", "", text)
    text = re.sub(r"\w+ ?\(0x[0-9a-fA-F]+\):\s*", "", text)
    return text or str(error).strip()


def _read_step(action: Callable[[], T], path: Path) -> T:
    """Call ``action()``, a SimpleITK reader method for ``path``; a SimpleITK error becomes an InputError."""
    try:
        return action()
    except RuntimeError as error:
        reason = sitk_error_reason(error)
        raise InputError(f"Could not read {path}: {reason} (is it complete and of the type its name says?)") from error


def _write(sitk_image: sitk.Image, file: Path, target: Path, *, compress: bool) -> None:
    try:
        sitk.WriteImage(sitk_image, str(file), compress)
    except RuntimeError as error:
        raise InputError(
            f"Could not write {target}: {sitk_error_reason(error)} (check free disk space and permissions)."
        ) from error


def _write_detached(sitk_image: sitk.Image, target: Path, tmp: Path, *, overwrite: bool, compress: bool) -> None:
    """Write header and data files in a staging folder under their final names, then move them into place."""
    with tempfile.TemporaryDirectory(prefix=f".{target.name}.", suffix=".partial", dir=target.parent) as staging:
        staged_header = Path(staging) / target.name
        _write(sitk_image, staged_header, target, compress=compress)
        data_files = [file for file in Path(staging).iterdir() if file != staged_header]
        for file in data_files:
            check_writable(target.with_name(file.name), overwrite=overwrite)
        for file in data_files:
            file.replace(target.with_name(file.name))
        staged_header.replace(tmp)


def _is_orthonormal(direction: np.ndarray) -> bool:
    return bool(np.allclose(direction.T @ direction, np.eye(len(direction)), atol=1e-6))


def _supported_text() -> str:
    return f"use a file ending in {', '.join(SUPPORTED_EXTENSIONS)}"
