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
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
import SimpleITK as sitk

from ..atomic import Verifier, atomic_path, check_writable, flush_to_disk, incomplete_write, temporary_path
from ..errors import InputError
from .core import Image
from .integrity import NonFiniteVoxels, check_image_file, inspect_image_file
from .native_stderr import captured_native_stderr, library_text
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
    non_finite = inspect_image_file(path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    _read_step(reader.ReadImageInformation, path)
    if extension in (".nrrd", ".nhdr") and reader.HasMetaDataKey(_SLICER_SEGMENT_KEY):
        return read_seg_nrrd(path)  # a segmentation saved from Slicer under a plain .nrrd name
    return from_sitk(_with_non_finite(_read_step(reader.Execute, path), non_finite))


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
    """Read ``path`` with SimpleITK (metadata included); a missing, unreadable, truncated or corrupt file, or one
    whose header geometry is unusable, raises InputError (see :mod:`.integrity`)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"Input file {path} does not exist (or is a folder); check the path.")
    non_finite = inspect_image_file(path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    return _with_non_finite(_read_step(reader.Execute, path), non_finite)


def write_sitk_image(
    sitk_image: sitk.Image, path: str | os.PathLike[str], *, overwrite: bool = False, compress: bool = True
) -> Path:
    """Write ``sitk_image`` (metadata included) atomically to ``path``; SimpleITK picks the format by extension.

    The written file is read back before it takes the final name: it must be complete (see
    :func:`.integrity.check_image_file`) and hold the size, pixel type, components and spacing of
    ``sitk_image``. For a detached header (``.nhdr``, ``.mhd``) the data file is checked, then moved beside
    ``path`` before the header, so the header never names a missing file.
    """
    target = Path(path)
    verify = _written_like(sitk_image)
    with atomic_path(target, overwrite=overwrite, verify=verify) as tmp:
        if target.name.lower().endswith(_DETACHED_HEADER_EXTENSIONS):
            _write_detached(sitk_image, target, tmp, overwrite=overwrite, compress=compress, verify=verify)
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
    """Call ``action()``, a SimpleITK reader method for ``path``, with the libraries' stderr output captured; a
    SimpleITK error becomes a one-line InputError that includes what the libraries printed about it."""
    with captured_native_stderr() as captured:
        try:
            return action()
        except RuntimeError as error:
            failure = error
    reason = sitk_error_reason(failure)
    printed = library_text(captured.text, reason)
    details = f" ({printed})" if printed else ""
    raise InputError(
        f"Could not read {path}: {reason}{details}; is it complete and of the type its name says?"
    ) from failure


def _with_non_finite(sitk_image: sitk.Image, non_finite: NonFiniteVoxels) -> sitk.Image:
    """``sitk_image`` with the NaN/±inf voxels that ITK's NIfTI reader turned into 0 put back."""
    if not non_finite.count:
        return sitk_image
    vector = sitk_image.GetNumberOfComponentsPerPixel() > 1
    array = sitk.GetArrayViewFromImage(sitk_image)
    file_order = np.moveaxis(array, -1, 0) if vector else array  # NIfTI stores components slowest
    restored = non_finite.restore(file_order)
    restored_image = sitk.GetImageFromArray(np.moveaxis(restored, 0, -1) if vector else restored, isVector=vector)
    restored_image.CopyInformation(sitk_image)
    for key in sitk_image.GetMetaDataKeys():
        restored_image.SetMetaData(key, sitk_image.GetMetaData(key))
    return restored_image


def _write(sitk_image: sitk.Image, file: Path, target: Path, *, compress: bool) -> None:
    """Write with SimpleITK, the libraries' stderr output captured (logged at debug level; the check of the
    written file reports what went wrong)."""
    with captured_native_stderr():
        try:
            sitk.WriteImage(sitk_image, str(file), compress)
        except RuntimeError as error:
            failure = error
        else:
            return
    reason = sitk_error_reason(failure).replace(str(file), str(target)).replace(file.name, target.name)
    raise incomplete_write(target, reason, replaced=target.exists()) from None


def _write_detached(
    sitk_image: sitk.Image, target: Path, tmp: Path, *, overwrite: bool, compress: bool, verify: Verifier
) -> None:
    """Write header and data files in a staging folder under their final names, check them, then move them into
    place (the header to ``tmp``)."""
    staging = temporary_path(target)
    staging.mkdir()
    try:
        staged_header = staging / target.name
        _write(sitk_image, staged_header, target, compress=compress)
        try:
            verify(staged_header)
        except InputError as error:
            reason = f"the file written failed its check: {str(error).replace(str(staged_header), str(target))}"
            raise incomplete_write(target, reason, replaced=target.exists()) from None
        data_files = [file for file in staging.iterdir() if file != staged_header]
        for file in data_files:
            check_writable(target.with_name(file.name), overwrite=overwrite)
        for file in data_files:
            flush_to_disk(file)
            file.replace(target.with_name(file.name))
        staged_header.replace(tmp)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _written_like(expected: sitk.Image) -> Verifier:
    """A check that a written image file is complete and holds ``expected``'s size, pixel type and spacing."""

    def check(path: Path) -> None:
        check_image_file(path)
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        try:
            reader.ReadImageInformation()
        except RuntimeError as error:
            raise InputError(f"it cannot be read back: {sitk_error_reason(error)}") from None
        found = (reader.GetSize(), reader.GetNumberOfComponents(), _component_type(reader.GetPixelID()))
        meant = (expected.GetSize(), expected.GetNumberOfComponentsPerPixel(), _component_type(expected.GetPixelID()))
        if found != meant:
            raise InputError(f"it reads back as (size, components, component type) {found}, not {meant}")
        if not np.allclose(reader.GetSpacing(), expected.GetSpacing(), rtol=1e-5, atol=0):
            raise InputError(f"it reads back with spacing {reader.GetSpacing()}, not {expected.GetSpacing()}")

    return check


_VECTOR_COMPONENTS = {
    getattr(sitk, f"sitkVector{name}"): getattr(sitk, f"sitk{name}")
    for name in ("UInt8", "Int8", "UInt16", "Int16", "UInt32", "Int32", "UInt64", "Int64", "Float32", "Float64")
}


def _component_type(pixel_id: int) -> int:
    """The scalar pixel type of one component (a one-component vector image reads back as a scalar one)."""
    return _VECTOR_COMPONENTS.get(pixel_id, pixel_id)


def _is_orthonormal(direction: np.ndarray) -> bool:
    return bool(np.allclose(direction.T @ direction, np.eye(len(direction)), atol=1e-6))


def _supported_text() -> str:
    return f"use a file ending in {', '.join(SUPPORTED_EXTENSIONS)}"
