"""Reading one DICOM series from a folder (GDCM through SimpleITK), slices ordered by position."""

from __future__ import annotations

import os
from pathlib import Path

import SimpleITK as sitk

from ..errors import InputError
from .core import Image
from .io import sitk_error_reason
from .sitk_bridge import from_sitk

_SERIES_DESCRIPTION = "0008|103e"


def read_dicom_series(folder: str | os.PathLike[str], *, series_uid: str | None = None) -> Image:
    """Read the DICOM series in ``folder`` (not its sub-folders) as one image.

    ``series_uid`` (Series Instance UID, 0020|000e) selects a series when the folder holds several; without
    it such a folder raises :class:`InputError` listing the series.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"DICOM folder {folder} does not exist or is not a folder; check the path.")
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
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid))
    try:
        return from_sitk(reader.Execute())
    except RuntimeError as error:
        raise InputError(f"Could not read DICOM series {uid} in {folder}: {sitk_error_reason(error)}") from error


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
        reader.ReadImageInformation()
    except RuntimeError:
        return ""
    return reader.GetMetaData(_SERIES_DESCRIPTION).strip() if reader.HasMetaDataKey(_SERIES_DESCRIPTION) else ""
