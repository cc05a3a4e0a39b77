"""Integrity checks of image files (:mod:`MedSegCNNLib.image.integrity`): truncated and corrupt files of every
format are refused, valid ones pass, NaN voxels of NIfTI files are read back as NaN, broken geometry is refused,
and native stderr output is captured."""

from __future__ import annotations

import gzip
import logging
import os
import re
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from MedSegCNNLib.errors import InputError
from MedSegCNNLib.image.integrity import check_header_geometry, check_image_file, inspect_image_file
from MedSegCNNLib.image.io import read_image
from MedSegCNNLib.image.native_stderr import captured_native_stderr, library_text

# (file name, compress, data file written beside a detached header or None)
FORMATS = [
    ("a.nii", False, None),
    ("a.nii.gz", True, None),
    ("a.nrrd", False, None),
    ("g.nrrd", True, None),
    ("a.nhdr", False, "a.raw"),
    ("g.nhdr", True, "g.raw.gz"),
    ("a.mha", False, None),
    ("g.mha", True, None),
    ("a.mhd", False, "a.raw"),
    ("g.mhd", True, "g.zraw"),
]
CUTS = [0.0, 0.1, 0.5, 0.9, -1]  # fraction of the file kept; -1: all but the last byte


def sample_image() -> sitk.Image:
    """A float32 image (12 x 10 x 8) with smooth, poorly compressible values and an oblique, flipped grid."""
    rng = np.random.default_rng(3)
    image = sitk.GetImageFromArray(rng.normal(100, 20, (8, 10, 12)).astype(np.float32))
    image.SetSpacing((0.7, 1.3, 2.9))
    image.SetOrigin((-12.5, 7.25, 3.0))
    image.SetDirection((0, 1, 0, 1, 0, 0, 0, 0, -1))
    return image


def written(folder: Path, name: str, compress: bool) -> Path:
    path = folder / name
    with captured_native_stderr():  # MetaImage warns about NIfTI-only metadata; nothing here has any
        sitk.WriteImage(sample_image(), str(path), compress)
    return path


def cut(path: Path, keep: float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:-1] if keep == -1 else data[: int(len(data) * keep)])


@pytest.mark.parametrize(("name", "compress", "data_file"), FORMATS)
def test_complete_files_pass(tmp_path, name, compress, data_file):
    path = written(tmp_path, name, compress)
    check_image_file(path)
    assert inspect_image_file(path).count == 0
    assert read_image(path).size == (12, 10, 8)


@pytest.mark.parametrize("keep", CUTS)
@pytest.mark.parametrize(("name", "compress", "data_file"), FORMATS)
def test_truncated_files_are_refused(tmp_path, name, compress, data_file, keep):
    path = written(tmp_path, name, compress)
    cut(tmp_path / (data_file or name), keep)
    pattern = rf"^{re.escape(str(path))} is truncated or corrupt: .+; copy or export it again from its source\.$"
    with pytest.raises(InputError, match=pattern):
        check_image_file(path)
    with pytest.raises(InputError, match=pattern):
        read_image(path)


def test_the_cause_is_exact_for_raw_and_gzip_data(tmp_path):
    raw = written(tmp_path, "a.nii", False)
    cut(raw, 0.5)
    expected = f"it holds {raw.stat().st_size - 352} bytes of image data where the header declares {12 * 10 * 8 * 4}"
    with pytest.raises(InputError, match=re.escape(expected)):
        check_image_file(raw)
    packed = written(tmp_path, "a.nii.gz", True)
    cut(packed, 0.5)
    inflated = len(__import__("zlib").decompressobj(31).decompress(packed.read_bytes()))
    with pytest.raises(InputError, match=re.escape(f"stops before the end of the gzip stream (after {inflated} ")):
        check_image_file(packed)
    data = tmp_path / "a.raw"
    header = written(tmp_path, "a.nhdr", False)
    cut(data, 0.25)
    with pytest.raises(InputError, match=re.escape(f"its data file {data} holds {data.stat().st_size} bytes")):
        check_image_file(header)


@pytest.mark.parametrize(
    ("damage", "cause"),
    [
        (lambda b: b[:-8] + bytes([b[-8] ^ 0xFF]) + b[-7:], "incorrect data check"),  # CRC-32
        (lambda b: b[:-2] + bytes([b[-2] ^ 0xFF]) + b[-1:], "incorrect length check"),  # ISIZE
        (lambda b: b + b"junk", "unexpected bytes follow the end of its compressed data"),
    ],
)
def test_a_damaged_gzip_trailer_is_refused(tmp_path, damage, cause):
    path = written(tmp_path, "a.nii.gz", True)
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(InputError, match=re.escape(cause)):
        check_image_file(path)


def test_several_gzip_members_and_zero_padding_are_accepted(tmp_path):
    path = written(tmp_path, "a.nii.gz", True)
    data = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(data[:1000]) + gzip.compress(data[1000:]) + b"\0" * 7)
    check_image_file(path)
    assert np.array_equal(read_image(path).array, sitk.GetArrayFromImage(sample_image()))


def test_unchecked_extensions_and_folders_pass(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    check_image_file(tmp_path / "notes.txt")
    check_image_file(tmp_path)


@pytest.mark.parametrize("name", ["a.nii", "a.nii.gz", "a.nrrd", "a.mha"])
def test_nan_and_inf_voxels_are_read_as_written(tmp_path, name):
    array = sitk.GetArrayFromImage(sample_image())
    array[1, 2, 3], array[4, 5, 6], array[7, 9, 11] = np.nan, np.inf, -np.inf
    image = sitk.GetImageFromArray(array)
    sitk.WriteImage(image, str(tmp_path / name))
    read = read_image(tmp_path / name).array
    assert np.isnan(read[1, 2, 3]) and read[4, 5, 6] == np.inf and read[7, 9, 11] == -np.inf
    assert np.count_nonzero(~np.isfinite(read)) == 3
    assert np.array_equal(read[np.isfinite(read)], array[np.isfinite(array)])


@pytest.mark.parametrize("vector", [False, True])
def test_nan_voxels_of_a_multichannel_nifti_are_put_back_in_their_channel(tmp_path, vector):
    array = np.ones((2, 3, 4, 5), np.float32)  # 4D: channels (t), z, y, x; or z, y, x, components
    array[1, 0, 2, 3] = np.nan
    sitk.WriteImage(sitk.GetImageFromArray(array, isVector=vector), str(tmp_path / "c.nii"))
    read = read_image(tmp_path / "c.nii").array
    expected = np.moveaxis(array, -1, 0) if vector else array
    assert read.shape == expected.shape and np.array_equal(np.isnan(read), np.isnan(expected))


# ----- geometry -------------------------------------------------------------------------------------------


def patched_nifti(folder: Path, edits: list[tuple[int, str, float]]) -> Path:
    path = written(folder, "a.nii", False)
    data = bytearray(path.read_bytes())
    for offset, fmt, value in edits:
        struct.pack_into(fmt, data, offset, value)
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize(
    ("edits", "problem"),
    [
        ([(80, "<f", 0.0)], "NIfTI voxel size pixdim[1] = 0, not positive"),
        ([(84, "<f", -1.3)], "NIfTI voxel size pixdim[2] = -1.3, not positive"),
        ([(88, "<f", float("nan"))], "NIfTI voxel size pixdim[3] = nan, not positive"),
        ([(88, "<f", float("inf"))], "NIfTI voxel size pixdim[3] = inf, not positive"),
        ([(252, "<h", 1), (268, "<f", float("nan"))], "NIfTI qform quaternion and offset"),
        ([(254, "<h", 1), (280, "<f", float("nan"))], "NIfTI sform srow_x/y/z = nan"),
        ([(252, "<h", 0), (254, "<h", 1), (280, "<f", 0.0), (284, "<f", 0.0), (288, "<f", 0.0)], "singular"),
    ],
)
def test_unusable_nifti_geometry_is_refused(tmp_path, edits, problem):
    path = patched_nifti(tmp_path, edits)
    with pytest.raises(InputError, match=re.escape(problem)):
        check_header_geometry(path)
    with pytest.raises(InputError, match=re.escape(f"{path} has an unusable geometry in its header: ")):
        read_image(path)


def test_qfac_and_time_step_are_not_judged(tmp_path):
    path = patched_nifti(tmp_path, [(76, "<f", 0.0), (92, "<f", -5.0)])  # pixdim[0] (qfac), pixdim[4]
    check_header_geometry(path)


def test_a_singular_sform_with_a_qform_is_a_warning(tmp_path, caplog):
    path = patched_nifti(
        tmp_path, [(252, "<h", 1), (254, "<h", 1), (280, "<f", 0.0), (284, "<f", 0.0), (288, "<f", 0.0)]
    )
    with caplog.at_level(logging.WARNING, logger="MedSegCNNLib"):
        check_header_geometry(path)
    assert "singular; it is ignored and the geometry comes from the qform" in caplog.text


@pytest.mark.parametrize(
    ("name", "key", "value", "problem"),
    [
        ("a.mha", "ElementSpacing", "0 1.3 2.9", "MetaImage ElementSpacing = 0 1.3 2.9, not positive on axis 0"),
        ("a.mha", "ElementSpacing", "0.7 -1.3 2.9", "MetaImage ElementSpacing = 0.7 -1.3 2.9, not positive on axis 1"),
        ("a.mha", "ElementSpacing", "0.7 1.3 nan", "MetaImage ElementSpacing = 0.7 1.3 nan, not positive on axis 2"),
        ("a.mha", "TransformMatrix", "0 0 0 1 0 0 0 0 -1", "MetaImage TransformMatrix = 0 0 0 1 0 0 0 0 -1, singular"),
        ("a.mha", "Offset", "nan 7.25 3", "MetaImage Offset = nan 7.25 3, not finite"),
        ("a.nrrd", "space directions", "(0,0,0) (1.3,0,0) (0,0,-2.9)", "NRRD space direction (0,0,0)"),
        ("a.nrrd", "space origin", "(nan,7.25,3)", "NRRD space origin (nan,7.25,3), not finite"),
    ],
)
def test_unusable_metaimage_and_nrrd_geometry_is_refused(tmp_path, name, key, value, problem):
    path = written(tmp_path, name, False)
    separator = " = " if name.endswith(".mha") else ": "
    data = path.read_bytes()
    line = re.search(rf"^{re.escape(key)}{separator}.*$".encode(), data, flags=re.MULTILINE)
    path.write_bytes(data[: line.start()] + f"{key}{separator}{value}".encode() + data[line.end() :])
    with pytest.raises(InputError, match=re.escape(problem)):
        read_image(path)


@pytest.mark.parametrize(("spacings", "problem"), [("2 1 1", None), ("-2 1 1", "= -2"), ("nan 1 1", "= nan")])
def test_nrrd_spacings_without_space_directions(tmp_path, spacings, problem):
    path = tmp_path / "s.nrrd"
    header = f"NRRD0004\ntype: uint8\ndimension: 3\nsizes: 2 3 4\nspacings: {spacings}\nencoding: raw\n\n"
    path.write_bytes(header.encode() + bytes(24))
    if problem is None:
        assert read_image(path).spacing == (2.0, 1.0, 1.0)
    else:
        with pytest.raises(InputError, match=re.escape(f"NRRD spacing of axis 0 {problem}, not positive")):
            read_image(path)


# ----- native stderr --------------------------------------------------------------------------------------


def test_native_stderr_is_captured_and_restored(capfd):
    with captured_native_stderr() as captured:
        os.write(2, b"WARNING: In /src/itkThing.cxx, line 12\nThing (0x55aa): scales are odd\n")
    os.write(2, b"after\n")
    assert captured.text.endswith("scales are odd\n")
    assert capfd.readouterr().err == "after\n"
    assert library_text(captured.text) == "scales are odd"
    assert library_text(captured.text, known="x: scales are odd") == ""


def test_native_stderr_is_restored_after_an_exception(capfd):
    with pytest.raises(RuntimeError), captured_native_stderr():
        os.write(2, b"inside\n")
        raise RuntimeError("boom")
    os.write(2, b"outside\n")
    assert capfd.readouterr().err == "outside\n"


def test_a_failed_read_folds_the_library_output_into_one_line(tmp_path, capfd):
    path = written(tmp_path, "a.mha", False)
    path.write_bytes(path.read_bytes().replace(b"NDims = 3", b"NDims = x"))
    with pytest.raises(InputError) as raised:
        read_image(path)
    message = str(raised.value)
    assert "\n" not in message and "DimSize required and not defined" in message
    assert capfd.readouterr().err == ""


def test_a_truncated_dicom_slice_is_refused(tmp_path, make_image):
    from image.test_dicom import SERIES_A, write_series

    from MedSegCNNLib.image.dicom import read_dicom_series

    image = make_image(shape=(4, 6, 5), dtype=np.int16)
    write_series(tmp_path, image, SERIES_A, "ct")
    victim = sorted(tmp_path.iterdir())[1]
    cut(victim, 0.9)
    with pytest.raises(InputError, match=re.escape(f"DICOM file {victim} is truncated or corrupt")):
        read_dicom_series(tmp_path)
    victim.unlink()  # a missing slice in the middle
    with pytest.raises(InputError, match="unevenly spaced or some are missing"):
        read_dicom_series(tmp_path)
    shutil.rmtree(tmp_path)
