"""Reading one DICOM series from a folder (GDCM through SimpleITK), slices ordered by position.

GDCM silently leaves out a file it cannot parse (e.g. a truncated slice) and ITK then reads the series with a
gap, warning only on stderr. So a file with a DICOM preamble that belongs to no series is refused as truncated
or corrupt, and a series whose slices ITK finds unevenly spaced or missing is refused.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import SimpleITK as sitk

from ..errors import InputError
from .core import Image
from .native_stderr import captured_native_stderr, library_text
from .sitk_bridge import from_sitk
from .sitk_files import sitk_error_reason

_SERIES_DESCRIPTION = "0008|103e"
_PREAMBLE = 128  # bytes before the "DICM" magic of a DICOM file
_UNEVEN_SLICES = "Non uniform sampling or missing slices"  # ITK's warning text


def read_dicom_series(folder: str | os.PathLike[str], *, series_uid: str | None = None) -> Image:
    """Read the DICOM series in ``folder`` (not its sub-folders) as one image.

    ``series_uid`` (Series Instance UID, 0020|000e) selects a series when the folder holds several; without
    it such a folder raises :class:`InputError` listing the series.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"DICOM folder {folder} does not exist or is not a folder; check the path.")
    with captured_native_stderr():
        uids = list(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)))
    if not uids:
        raise InputError(
            f"No DICOM series found in {folder}; pass the folder that directly holds the DICOM files, "
            "or pass an image file (.nii.gz, .nrrd, .mha, ...) instead of a folder."
        )
    if series_uid is None and len(uids) > 1:
        raise InputError(
            f"{folder} holds {len(uids)} DICOM series; choose one with series_uid: {_describe(folder, uids)}."
        )
    if series_uid is not None and series_uid not in uids:
        raise InputError(f"{folder} has no DICOM series {series_uid}; it holds: {_describe(folder, uids)}.")
    uid = series_uid or uids[0]
    _refuse_unparsable_files(folder, uids)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid))
    with captured_native_stderr() as captured:
        try:
            volume = reader.Execute()
        except RuntimeError as error:
            reason = sitk_error_reason(error)
            printed = library_text(captured.text, reason)
            details = f" ({printed})" if printed else ""
            raise InputError(f"Could not read DICOM series {uid} in {folder}: {reason}{details}.") from error
    if _UNEVEN_SLICES in captured.text:
        raise InputError(
            f"The slices of DICOM series {uid} in {folder} are unevenly spaced or some are missing "
            f"({library_text(captured.text)}); give a folder with the complete series, or resample it to even "
            "slices first (e.g. in Slicer)."
        )
    return from_sitk(volume)


def may_hold_dicom(folder: str | os.PathLike[str]) -> bool:
    """Whether ``folder`` may hold a DICOM series for :func:`read_dicom_series` (which says what is wrong with
    it): a file directly in it has the DICOM magic, or else GDCM finds a series (files without the preamble)."""
    folder = Path(folder)
    with contextlib.suppress(OSError):  # an unreadable file: the reader names it
        if any(file.is_file() and _has_dicom_magic(file) for file in folder.iterdir()):
            return True
    with captured_native_stderr():
        return bool(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)))


def _refuse_unparsable_files(folder: Path, uids: list[str]) -> None:
    """Refuse a file with the DICOM magic that GDCM placed in no series and cannot read (truncated, corrupt)."""
    listed = {
        Path(file).name for uid in uids for file in sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid)
    }
    for file in sorted(folder.iterdir()):
        if file.name in listed or file.name.upper() == "DICOMDIR" or not file.is_file() or not _has_dicom_magic(file):
            continue
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(file))
        try:
            with captured_native_stderr():
                reader.ReadImageInformation()
        except RuntimeError:
            raise InputError(
                f"DICOM file {file} is truncated or corrupt: the DICOM reader cannot parse it; copy the series "
                "again from its source."
            ) from None


def _has_dicom_magic(file: Path) -> bool:
    with file.open("rb") as stream:
        stream.seek(_PREAMBLE)
        return stream.read(4) == b"DICM"


def _describe(folder: Path, uids: list[str]) -> str:
    """``uid (N files, "description")`` for each series, separated by semicolons."""
    parts = []
    for uid in uids:
        files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid)
        description = _series_description(files[0]) if files else ""
        parts.append(f"{uid} ({len(files)} files" + (f', "{description}")' if description else ")"))
    return "; ".join(parts)


def _series_description(file: str) -> str:
    """Series Description (0008|103e) of a DICOM file, or "" when it has none or cannot be read."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(file)
    try:
        with captured_native_stderr():
            reader.ReadImageInformation()
    except RuntimeError:
        return ""
    return reader.GetMetaData(_SERIES_DESCRIPTION).strip() if reader.HasMetaDataKey(_SERIES_DESCRIPTION) else ""
