"""Reading DICOM series written slice by slice with SimpleITK (as in its DicomSeriesFromArray example)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from MedSegCNNLib.errors import InputError
from MedSegCNNLib.image.core import Image
from MedSegCNNLib.image.dicom import read_dicom_series
from MedSegCNNLib.image.io import read_image

SERIES_A = "1.2.826.0.1.3680043.2.1125.1.11"
SERIES_B = "1.2.826.0.1.3680043.2.1125.1.22"


def write_series(folder: Path, image: Image, uid: str, description: str) -> None:
    """One CT file per slice with position, orientation, spacing, series UID and instance number."""
    volume = sitk.GetImageFromArray(image.array)
    volume.SetSpacing(image.spacing)
    volume.SetOrigin(image.origin)
    volume.SetDirection(image.direction.ravel())
    row, column = image.direction[:, 0], image.direction[:, 1]
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for z in range(image.size[2]):
        dicom_slice = volume[:, :, z]
        tags = {
            "0008|0060": "CT",
            "0008|103e": description,
            "0020|000d": "1.2.826.0.1.3680043.2.1125.1.1",
            "0020|000e": uid,
            "0020|0013": str(z + 1),
            "0020|0032": "\\".join(f"{p:.10g}" for p in volume.TransformIndexToPhysicalPoint((0, 0, z))),
            "0020|0037": "\\".join(f"{c:.10g}" for c in (*row, *column)),
            "0028|0030": f"{image.spacing[1]:.10g}\\{image.spacing[0]:.10g}",  # row spacing (y), then column (x)
            "0018|0050": f"{image.spacing[2]:.10g}",
            "0008|0018": f"{uid}.{z + 1}",
        }
        for tag, value in tags.items():
            dicom_slice.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"{uid[-2:]}_{z:03d}.dcm"))
        writer.Execute(dicom_slice)


@pytest.fixture
def ct(make_image) -> Image:
    image = make_image((5, 6, 7), direction="oblique")  # a proper rotation, as DICOM slice stacks have
    return image.with_array((image.array * 100 - 50).astype(np.int16))


def assert_recovers(read: Image, written: Image) -> None:
    assert read.size == written.size
    np.testing.assert_array_equal(read.array, written.array)
    np.testing.assert_allclose(read.spacing, written.spacing, atol=1e-6)
    np.testing.assert_allclose(read.origin, written.origin, atol=1e-6)
    np.testing.assert_allclose(read.direction, written.direction, atol=1e-6)


def test_series_geometry_and_voxels_are_recovered(tmp_path, ct):
    write_series(tmp_path, ct, SERIES_A, "chest")
    assert_recovers(read_dicom_series(tmp_path), ct)
    assert_recovers(read_image(tmp_path), ct)  # a folder given to read_image is a DICOM series


def test_a_folder_with_two_series_needs_a_series_uid(tmp_path, ct):
    other = ct.with_array(ct.array[:3] + 1)
    write_series(tmp_path, ct, SERIES_A, "chest")
    write_series(tmp_path, other, SERIES_B, "scout")
    with pytest.raises(InputError, match="2 DICOM series") as caught:
        read_dicom_series(tmp_path)
    message = str(caught.value)
    assert f'{SERIES_A} (5 files, "chest")' in message and f'{SERIES_B} (3 files, "scout")' in message
    assert_recovers(read_dicom_series(tmp_path, series_uid=SERIES_B), other)
    assert_recovers(read_image(tmp_path, series_uid=SERIES_A), ct)
    with pytest.raises(InputError, match=r"no DICOM series 9\.9\.9; it holds: .*\(3 files"):
        read_dicom_series(tmp_path, series_uid="9.9.9")


def test_folders_without_dicom(tmp_path):
    (tmp_path / "notes.txt").write_text("not DICOM")
    with pytest.raises(InputError, match="No DICOM series found"):
        read_dicom_series(tmp_path)
    with pytest.raises(InputError, match="does not exist"):
        read_dicom_series(tmp_path / "missing")
