"""Fault class 3 (values and geometry): NaN voxels and broken header geometry never pass unnoticed.

- NaN/inf in an image to segment: replaced as documented, with a warning that gives the count and the file.
- NaN/inf in a label map (evaluate, training) or a training image: refused, naming the case and the file.
- Zero, negative or NaN voxel size (NIfTI ``pixdim``, MetaImage ``ElementSpacing``) and NaN orientation:
  refused with the exact value (see :mod:`MedSegCNNLib.image.integrity` for why not a warning).
- What ITK, MetaImage and Teem print on stderr is folded into our one line or kept off the terminal.

Each refusal: exit 1, one exact line, every pre-existing file unchanged, nothing temporary left behind.
"""

from __future__ import annotations

import re
import struct
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from cli_support import PRED, REF, ROOT, SAMPLE, medsegcnn
from fault_support import assert_unchanged, error_line, leftovers, snapshot

MODEL = ROOT / "Resources" / "Models" / "hippocampus-tiny"
CASE = "hippocampus_004"
NAN_VOXELS = 100
GEOMETRY_ADVICE = (
    " (readers would silently make it 1 mm, a flipped axis or a moved image); fix the header, e.g. save the image "
    "again with its true voxel size, orientation and origin."
)


def with_nan(source: Path, path: Path) -> Path:
    """``source`` as float32 with :data:`NAN_VOXELS` NaN/inf voxels, written to ``path``."""
    image = sitk.ReadImage(str(source))
    array = sitk.GetArrayFromImage(image).astype(np.float32)
    block = array[5, 5:15, 5:15]
    block[:] = np.nan
    block[0, :3] = [np.inf, -np.inf, np.inf]
    changed = sitk.GetImageFromArray(array)
    changed.CopyInformation(image)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(changed, str(path))
    return path


def only_our_lines(stderr: str) -> None:
    """No library chatter: every stderr line is one of ours."""
    assert all(line.startswith("medsegcnn: ") for line in stderr.splitlines()), stderr


def check_refused(result, message: str, before: dict, root: Path) -> None:
    assert result.returncode == 1, result.stderr
    assert error_line(result) == message
    only_our_lines(result.stderr)
    assert_unchanged(before)
    assert leftovers(root) == []


# ----- non-finite voxels ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [f"{CASE}.nii.gz", f"{CASE}.nrrd"])
def test_predict_replaces_nan_voxels_with_a_warning_naming_the_file(tmp_path, name):
    image = with_nan(SAMPLE / "imagesTr" / f"{CASE}.nii.gz", tmp_path / name)
    output = tmp_path / "seg.nii.gz"
    result = medsegcnn("predict", "--model", MODEL, "--input", image, "--output", output, "--device", "cpu")
    assert result.returncode == 0, result.stderr
    size = sitk.ReadImage(str(image)).GetNumberOfPixels()
    warning = (
        f"medsegcnn: WARNING: {image} has {NAN_VOXELS} non-finite voxels (NaN or infinite) of {size}; they were set to "
        "their channel's smallest finite value before prediction."
    )
    assert warning in result.stderr.splitlines()
    only_our_lines(result.stderr)
    assert sitk.ReadImage(str(output)).GetSize() == sitk.ReadImage(str(image)).GetSize()


@pytest.mark.parametrize("role", ["prediction", "reference"])
@pytest.mark.parametrize("name", [f"{CASE}.nii.gz", f"{CASE}.nii", f"{CASE}.nrrd"])
def test_evaluate_refuses_a_label_map_with_nan(tmp_path, role, name):
    broken = with_nan(REF / f"{CASE}.nii.gz", tmp_path / "maps" / name)
    pred, ref = (broken, REF / f"{CASE}.nii.gz") if role == "prediction" else (PRED / f"{CASE}.nii.gz", broken)
    before = snapshot(tmp_path)
    result = medsegcnn("evaluate", "--pred", pred, "--ref", ref, "--no-surface")
    message = (
        f"Case {CASE}: the {role} {broken} has {NAN_VOXELS} non-finite voxel(s) (NaN or infinite); a label map holds "
        "integers >= 0. Fix the label map (every voxel needs a label) and evaluate again."
    )
    check_refused(result, message, before, tmp_path)


def train(data: Path, output: Path):
    return medsegcnn(
        "train", "--data", data, "--output", output, "--epochs", "1", "--steps-per-epoch", "1",
        "--patch-size", "16,16,16", "--fold", "all", "--device", "cpu",
    )  # fmt: skip


def test_train_refuses_an_image_with_nan_naming_the_case(tmp_path, small_dataset):
    image = with_nan(SAMPLE / "imagesTr" / f"{CASE}.nii.gz", small_dataset / "imagesTr" / f"{CASE}.nii.gz")
    size = sitk.ReadImage(str(image)).GetNumberOfPixels()
    before = snapshot(tmp_path)
    result = train(small_dataset, tmp_path / "run")
    message = (
        f"Case {CASE}: image {image} has {NAN_VOXELS} non-finite voxel(s) (NaN or infinite) of {size}; training needs "
        "finite intensities. Fix the image (e.g. set them to the background value) or leave the case out."
    )
    check_refused(result, message, before, tmp_path)
    assert "loss" not in result.stderr and not (tmp_path / "run").exists()


def test_train_refuses_a_label_map_with_nan_naming_the_case(tmp_path, small_dataset):
    label = with_nan(SAMPLE / "labelsTr" / f"{CASE}.nii.gz", small_dataset / "labelsTr" / f"{CASE}.nii.gz")
    before = snapshot(tmp_path)
    result = train(small_dataset, tmp_path / "run")
    message = (
        f"Case {CASE}: label map {label} has {NAN_VOXELS} non-finite voxel(s) (NaN or infinite); a label map holds "
        "integers >= 0. Fix the label map (every voxel needs a label) and try again."
    )
    check_refused(result, message, before, tmp_path)
    assert not (tmp_path / "run").exists()


# ----- geometry ---------------------------------------------------------------------------------------------


def nifti_with(folder: Path, edits: list[tuple[int, str, float]]) -> Path:
    """The reference label map as an uncompressed NIfTI-1 with header fields overwritten (offset, format, value)."""
    path = folder / f"{CASE}.nii"
    sitk.WriteImage(sitk.ReadImage(str(REF / f"{CASE}.nii.gz")), str(path))
    data = bytearray(path.read_bytes())
    for offset, fmt, value in edits:
        struct.pack_into(fmt, data, offset, value)
    path.write_bytes(bytes(data))
    return path


def metaimage_with(folder: Path, key: str, value: str) -> Path:
    path = folder / f"{CASE}.mha"
    sitk.WriteImage(sitk.ReadImage(str(REF / f"{CASE}.nii.gz")), str(path))
    data = path.read_bytes()
    line = re.search(rf"^{key} = .*$".encode(), data, flags=re.MULTILINE)
    path.write_bytes(data[: line.start()] + f"{key} = {value}".encode() + data[line.end() :])
    return path


GEOMETRY_CASES = [
    ("pixdim 0", lambda d: nifti_with(d, [(80, "<f", 0.0)]), "NIfTI voxel size pixdim[1] = 0, not positive"),
    ("pixdim -2", lambda d: nifti_with(d, [(84, "<f", -2.0)]), "NIfTI voxel size pixdim[2] = -2, not positive"),
    (
        "pixdim nan",
        lambda d: nifti_with(d, [(88, "<f", float("nan"))]),
        "NIfTI voxel size pixdim[3] = nan, not positive",
    ),
    (
        "sform nan",
        lambda d: nifti_with(d, [(254, "<h", 1), (280, "<f", float("nan"))]),
        "NIfTI sform srow_x/y/z = nan 0 -0 1 0 1 -0 1 0 0 1 1, not finite",
    ),
    (
        "spacing 0",
        lambda d: metaimage_with(d, "ElementSpacing", "0 1 1"),
        "MetaImage ElementSpacing = 0 1 1, not positive on axis 0",
    ),
    (
        "spacing -2",
        lambda d: metaimage_with(d, "ElementSpacing", "1 -2 1"),
        "MetaImage ElementSpacing = 1 -2 1, not positive on axis 1",
    ),
    (
        "spacing nan",
        lambda d: metaimage_with(d, "ElementSpacing", "1 1 nan"),
        "MetaImage ElementSpacing = 1 1 nan, not positive on axis 2",
    ),
    ("offset nan", lambda d: metaimage_with(d, "Offset", "nan 1 1"), "MetaImage Offset = nan 1 1, not finite"),
]


@pytest.mark.parametrize(("label", "make", "problem"), GEOMETRY_CASES, ids=[case[0] for case in GEOMETRY_CASES])
def test_evaluate_refuses_broken_geometry_with_the_exact_value(tmp_path, label, make, problem):
    folder = tmp_path / "maps"
    folder.mkdir()
    broken = make(folder)
    before = snapshot(tmp_path)
    result = medsegcnn("evaluate", "--pred", broken, "--ref", REF / f"{CASE}.nii.gz", "--no-surface")
    message = f"{broken} has an unusable geometry in its header: {problem}{GEOMETRY_ADVICE}"
    check_refused(result, message, before, tmp_path)


def test_predict_refuses_an_image_with_a_nan_voxel_size(tmp_path):
    image = tmp_path / "in" / f"{CASE}.nii"
    image.parent.mkdir()
    sitk.WriteImage(sitk.ReadImage(str(SAMPLE / "imagesTr" / f"{CASE}.nii.gz")), str(image))
    data = bytearray(image.read_bytes())
    struct.pack_into("<f", data, 80, float("nan"))
    image.write_bytes(bytes(data))
    output = tmp_path / "seg.nii.gz"
    before = snapshot(tmp_path)
    result = medsegcnn("predict", "--model", MODEL, "--input", image, "--output", output, "--device", "cpu")
    message = f"{image} has an unusable geometry in its header: NIfTI voxel size pixdim[1] = nan, not positive"
    check_refused(result, message + GEOMETRY_ADVICE, before, tmp_path)
    assert not output.exists()


# ----- library chatter --------------------------------------------------------------------------------------


def test_a_library_error_is_folded_into_our_one_line(tmp_path):
    broken = metaimage_with(tmp_path, "NDims", "x")
    before = snapshot(tmp_path)
    result = medsegcnn("evaluate", "--pred", broken, "--ref", REF / f"{CASE}.nii.gz", "--no-surface")
    assert result.returncode == 1, result.stderr
    line = error_line(result)
    assert line.startswith(f"Could not read {broken}: ") and "DimSize required and not defined" in line
    assert line.endswith("; is it complete and of the type its name says?")
    only_our_lines(result.stderr)
    assert_unchanged(before)
    assert leftovers(tmp_path) == []


def test_library_warnings_of_a_successful_read_stay_off_the_terminal(tmp_path):
    odd = nifti_with(tmp_path, [(80, "<f", 2.0)])  # pixdim disagrees with the sform: ITK prints a warning
    result = medsegcnn("evaluate", "--pred", odd, "--ref", odd, "--no-surface")
    assert result.returncode == 0, result.stderr
    only_our_lines(result.stderr)
