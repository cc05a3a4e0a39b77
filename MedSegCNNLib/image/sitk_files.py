"""SimpleITK file access with integrity checks, shared by :mod:`.io`, :mod:`.dicom` and :mod:`.seg_nrrd`.

- Reads check the file first (:mod:`.integrity`: complete, geometry usable, NaN/±inf voxels kept) and turn a
  SimpleITK error into a one-line :class:`~MedSegCNNLib.errors.InputError` that includes what the native
  libraries printed on stderr (captured with :mod:`.native_stderr`).
- Writes are atomic (:mod:`MedSegCNNLib.atomic`) and verified: the written file is read back and must hold the
  size, pixel type, components and spacing meant before it takes its final name.

In-memory conversion between :class:`~MedSegCNNLib.image.core.Image` and ``SimpleITK.Image`` is
:mod:`.sitk_bridge`'s job; this module only moves ``SimpleITK.Image`` objects to and from files.
"""

from __future__ import annotations

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
from .integrity import NonFiniteVoxels, check_image_file, inspect_image_file
from .native_stderr import captured_native_stderr, library_text

T = TypeVar("T")

_DETACHED_HEADER_EXTENSIONS = (".nhdr", ".mhd")  # the header names a data file written beside it


def read_sitk_image(path: str | os.PathLike[str]) -> sitk.Image:
    """Read ``path`` with SimpleITK (metadata included); a missing, unreadable, truncated or corrupt file, or one
    whose header geometry is unusable, raises InputError (see :mod:`.integrity`)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"Input file {path} does not exist (or is a folder); check the path.")
    non_finite = inspect_image_file(path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    return restore_non_finite(sitk_read_step(reader.Execute, path), non_finite)


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


def sitk_read_step(action: Callable[[], T], path: Path) -> T:
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


def restore_non_finite(sitk_image: sitk.Image, non_finite: NonFiniteVoxels) -> sitk.Image:
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
