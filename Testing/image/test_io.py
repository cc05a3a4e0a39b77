"""read_image / write_image: round trips through every format, atomic writes, and errors a user can cause."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from MedSegCNNLib.errors import InputError, OutputExistsError, WriteError
from MedSegCNNLib.image.core import Image, LabelInfo
from MedSegCNNLib.image.io import (
    RASTER_EXTENSIONS,
    SUPPORTED_EXTENSIONS,
    case_name,
    is_image_path,
    is_raster_path,
    read_image,
    write_image,
)

FORMATS = [".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd"]
NIFTI = (".nii", ".nii.gz")


def assert_same_geometry(actual: Image, expected: Image, extension: str) -> None:
    """NRRD and MetaImage keep geometry exactly; NIfTI stores spacing and origin as float32."""
    rtol = 1e-7 if extension in NIFTI else 0.0
    np.testing.assert_allclose(actual.spacing, expected.spacing, rtol=rtol, atol=1e-9)
    np.testing.assert_allclose(actual.origin, expected.origin, rtol=rtol, atol=1e-9)
    np.testing.assert_allclose(actual.direction, expected.direction, rtol=0, atol=1e-6)


def files_in(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


@pytest.mark.parametrize("extension", FORMATS)
@pytest.mark.parametrize("direction", ["oblique", "flipped"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.float32])
def test_3d_round_trip_keeps_values_dtype_and_geometry(tmp_path, make_image, extension, direction, dtype):
    image = make_image((4, 5, 6), direction=direction, dtype=dtype)
    path = write_image(image, tmp_path / f"case{extension}")
    assert path == tmp_path / f"case{extension}"
    back = read_image(path)
    assert back.array.dtype == dtype
    np.testing.assert_array_equal(back.array, image.array)
    assert_same_geometry(back, image, extension)
    assert back.labels == ()


@pytest.mark.parametrize("extension", [".nii.gz", ".nrrd", ".mha"])
def test_2d_and_multichannel_round_trips(tmp_path, make_image, extension):
    for name, image in {
        "flat": make_image((5, 6), direction="flipped"),
        "multi": make_image((4, 5, 6), channels=3, dtype=np.float32),
    }.items():
        back = read_image(write_image(image, tmp_path / f"{name}{extension}"))
        assert back.spatial_dims == image.spatial_dims and back.num_channels == image.num_channels
        np.testing.assert_array_equal(back.array, image.array)
        assert_same_geometry(back, image, extension)


def test_4d_nifti_reads_as_a_multichannel_3d_image(tmp_path):
    array = np.random.default_rng(0).normal(size=(2, 3, 4, 5)).astype(np.float32)  # (modality, z, y, x)
    four_d = sitk.GetImageFromArray(array, isVector=False)
    four_d.SetSpacing((0.8, 0.9, 1.5, 1.0))
    four_d.SetOrigin((-10.0, 20.0, 5.0, 0.0))
    sitk.WriteImage(four_d, str(tmp_path / "BRATS_001.nii.gz"))
    image = read_image(tmp_path / "BRATS_001.nii.gz")
    assert image.spatial_dims == 3 and image.num_channels == 2 and image.size == (5, 4, 3)
    np.testing.assert_array_equal(image.array, array)
    np.testing.assert_allclose(image.spacing, (0.8, 0.9, 1.5), rtol=1e-7)


@pytest.mark.parametrize(("dtype", "stored"), [(np.bool_, np.uint8), (np.float16, np.float32)])
def test_dtypes_without_a_file_type_are_widened(tmp_path, make_image, dtype, stored):
    image = make_image(dtype=dtype)
    back = read_image(write_image(image, tmp_path / "x.nrrd"))
    assert back.array.dtype == stored
    np.testing.assert_array_equal(back.array, image.array.astype(stored))


def test_nifti_cannot_keep_a_non_orthogonal_direction(tmp_path, caplog):
    """A documented NIfTI limit: ITK replaces a non-orthogonal direction; write_image warns about it."""
    sheared = np.array([[1.0, 0.6, 0.0], [0.0, 0.8, 0.0], [0.0, 0.0, 1.0]])  # unit columns, 36.9 deg apart
    image = Image.from_array(np.arange(60, dtype=np.int16).reshape(3, 4, 5), (1.0, 1.0, 2.0), (1, 2, 3), sheared)
    with caplog.at_level(logging.WARNING):
        back = read_image(write_image(image, tmp_path / "tilted.nii.gz"))
    assert "non-orthogonal" in caplog.text
    np.testing.assert_allclose(back.direction.T @ back.direction, np.eye(3), atol=1e-6)
    assert not np.allclose(back.direction, sheared, atol=1e-3)
    for extension in (".nrrd", ".mha"):  # these keep it
        assert_same_geometry(read_image(write_image(image, tmp_path / f"tilted{extension}")), image, extension)


def test_compress_flag(tmp_path):
    image = Image.from_array(np.zeros((20, 20, 20), np.int16))
    small = write_image(image, tmp_path / "small.nrrd")
    large = write_image(image, tmp_path / "large.nrrd", compress=False)
    assert small.stat().st_size < large.stat().st_size
    np.testing.assert_array_equal(read_image(large).array, image.array)


@pytest.mark.parametrize("extension", [".mhd", ".nhdr"])
def test_detached_header_and_data_file_get_the_final_name(tmp_path, make_image, extension):
    image = make_image()
    write_image(image, tmp_path / f"case{extension}")
    names = files_in(tmp_path)
    assert len(names) == 2 and f"case{extension}" in names
    assert all(name.startswith("case.") for name in names)  # no temporary name, no staging folder
    data_file = next(name for name in names if name != f"case{extension}")
    assert data_file in (tmp_path / f"case{extension}").read_text(errors="replace")
    np.testing.assert_array_equal(read_image(tmp_path / f"case{extension}").array, image.array)


@pytest.mark.parametrize("extension", [".nii.gz", ".mhd", ".seg.nrrd"])
def test_existing_file_is_kept_unless_overwrite(tmp_path, make_image, extension):
    path = tmp_path / f"out{extension}"
    first = make_image(dtype=np.uint8, seed=1)
    write_image(first, path)
    before = {name: (tmp_path / name).read_bytes() for name in files_in(tmp_path)}
    with pytest.raises(OutputExistsError, match="already exists"):
        write_image(make_image(dtype=np.uint8, seed=2), path)
    assert {name: (tmp_path / name).read_bytes() for name in files_in(tmp_path)} == before
    second = make_image(dtype=np.uint8, seed=2)
    write_image(second, path, overwrite=True)
    np.testing.assert_array_equal(read_image(path).array, second.array)


@pytest.mark.parametrize("extension", [".nii.gz", ".mhd", ".seg.nrrd"])
def test_failing_write_leaves_no_file_and_keeps_the_old_one(tmp_path, make_image, monkeypatch, extension):
    def write_half_then_fail(image, file_name, *args, **kwargs):
        Path(file_name).write_bytes(b"half an image")
        raise RuntimeError("Exception thrown in SimpleITK WriteImage: x.cxx:1:\nitk::ERROR: No space left on device")

    monkeypatch.setattr(sitk, "WriteImage", write_half_then_fail)
    with pytest.raises(WriteError, match="No space left on device"):
        write_image(make_image(dtype=np.uint8), tmp_path / f"new{extension}")
    assert files_in(tmp_path) == []

    (tmp_path / f"old{extension}").write_bytes(b"precious")
    with pytest.raises(WriteError):
        write_image(make_image(dtype=np.uint8), tmp_path / f"old{extension}", overwrite=True)
    assert files_in(tmp_path) == [f"old{extension}"]
    assert (tmp_path / f"old{extension}").read_bytes() == b"precious"


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
def test_written_files_get_the_usual_permissions(tmp_path, make_image):
    umask = os.umask(0o022)
    os.umask(umask)
    for name in ("a.nii.gz", "b.mhd"):
        path = write_image(make_image(), tmp_path / name)
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_read_errors_say_what_is_wrong(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read_image(tmp_path / "missing.nii.gz")

    corrupt = tmp_path / "corrupt.nii.gz"
    corrupt.write_bytes(np.random.default_rng(0).bytes(512))
    with pytest.raises(InputError) as caught:
        read_image(corrupt)
    assert str(corrupt) in str(caught.value) and "\n" not in str(caught.value)

    truncated = tmp_path / "truncated.nrrd"
    truncated.write_text("NRRD0004\ntype: float\ndimension: 3\nsizes: 3 3 3\nencoding: raw\n\n")
    with pytest.raises(InputError, match=r"truncated\.nrrd") as caught:
        read_image(truncated)
    assert "\n" not in str(caught.value)

    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(InputError, match=r"unsupported file type.*\.nii\.gz.*\.seg\.nrrd"):
        read_image(text)

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match=r"No DICOM series found.*image file"):
        read_image(empty)

    with pytest.raises(InputError, match="series_uid"):
        read_image(corrupt, series_uid="1.2.3")


def test_write_errors_say_what_is_wrong(tmp_path, make_image):
    image = make_image()
    with pytest.raises(InputError, match=r"unsupported file type.*\.mha.*\.png"):
        write_image(image, tmp_path / "x.gif")
    with pytest.raises(InputError, match="DICOM is not supported"):
        write_image(image, tmp_path / "x.dcm")
    with pytest.raises(InputError, match="DICOM is not supported"):
        write_image(image, tmp_path)
    with pytest.raises(InputError, match="does not exist"):
        write_image(image, tmp_path / "no" / "such" / "folder" / "x.nii.gz")
    assert files_in(tmp_path) == []


def test_seg_nrrd_is_routed_and_keeps_names_and_colours(tmp_path, make_image):
    labels = [LabelInfo(1, "liver", (0.8, 0.2, 0.1)), LabelInfo(4, "tumour")]
    image = make_image(dtype=np.uint8, labels=labels)
    back = read_image(write_image(image, tmp_path / "case.seg.nrrd"))
    np.testing.assert_array_equal(back.array, image.array)
    assert back.label_info(1) == labels[0]
    assert back.label_info(4).name == "tumour"
    assert_same_geometry(back, image, ".nrrd")


def test_a_slicer_segmentation_saved_as_plain_nrrd_is_recognised(tmp_path, make_image):
    image = make_image(dtype=np.uint8, labels=[LabelInfo(2, "kidney")])
    write_image(image, tmp_path / "case.seg.nrrd")
    (tmp_path / "case.seg.nrrd").rename(tmp_path / "case.nrrd")
    assert read_image(tmp_path / "case.nrrd").label_info(2).name == "kidney"


@pytest.mark.parametrize(
    ("path", "name", "is_image"),
    [
        ("/x/hippocampus_004.nii.gz", "hippocampus_004", True),
        ("/x/case.1.NII.GZ", "case.1", True),
        ("case.nii", "case", True),
        ("/x/y/prostate_00.seg.nrrd", "prostate_00", True),
        ("liver.nrrd", "liver", True),
        ("liver.nhdr", "liver", True),
        ("ct.mha", "ct", True),
        ("ct.mhd", "ct", True),
        ("/x/fundus_07.PNG", "fundus_07", True),
        ("slice.tif", "slice", True),
        ("slice.tiff", "slice", True),
        ("photo.JPEG", "photo", True),
        ("photo.jpg", "photo", True),
        ("old.bmp", "old", True),
        ("anim.gif", "anim.gif", False),
        ("/data/dicom_series_7", "dicom_series_7", False),
        ("notes.txt", "notes.txt", False),
        ("archive.gz", "archive.gz", False),
    ],
)
def test_case_name_and_is_image_path(path, name, is_image):
    assert case_name(path) == name
    assert case_name(Path(path)) == name
    assert is_image_path(path) is is_image


def test_supported_extensions_are_lower_case_and_listed():
    assert set(FORMATS) | {".seg.nrrd"} | set(RASTER_EXTENSIONS) == set(SUPPORTED_EXTENSIONS)
    assert set(RASTER_EXTENSIONS) == {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}
    assert all(extension == extension.lower() for extension in SUPPORTED_EXTENSIONS)
    assert is_raster_path("a/b.Tiff") and is_raster_path("c.JPG") and not is_raster_path("c.nii.gz")
