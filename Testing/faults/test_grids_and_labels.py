"""Fault class "grids and labels": images that do not line up, and label values that do not mean what they seem,
never pass in silence.

- Partial channels: a further channel file of a case (``--input t1 t2``, ``<case>_0001`` files of a training
  dataset) that leaves part of the first channel uncovered (a shorter scan, a shifted origin) is refused when over
  1 % of the first channel's voxels would be 0, naming the file and the share; ``--allow-partial-channels`` goes on
  with a warning that says the same.
- Label values: a label map whose one foreground value is an integer type's largest (0/255, 0/65535,
  0/2**31-1: a mask saved white on black) gets a warning naming ``--mask-values``; a prediction and a reference
  without a label in common get one too.
- Grid differences: every "on another grid" message says what differs: the origin by how many mm, the direction
  by how many degrees, size and spacing with both values (one wording, :func:`~MedSegCNNLib.image.geometry.
  grid_difference`), in ``evaluate`` and in a training dataset's label check.
- Matplotlib on stderr: glyphs missing for a case name (``Fall_Ω_中文``) and matplotlib's own log lines (a
  configuration folder it cannot use) stay off stderr; missing glyphs are drawn as ``?``.

Each refusal: exit 1, one exact line, every pre-existing file unchanged, nothing temporary left behind.
"""

from __future__ import annotations

import logging
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from cli_support import ROOT, SAMPLE, medsegcnn
from fault_support import assert_unchanged, error_line, leftovers, snapshot
from model_support import save_tiny_model

from MedSegCNNLib.metrics import evaluate

MODEL = ROOT / "Resources" / "Models" / "hippocampus-tiny"
CASE = "hippocampus_004"
IMAGE, LABEL = SAMPLE / "imagesTr" / f"{CASE}.nii.gz", SAMPLE / "labelsTr" / f"{CASE}.nii.gz"  # 36 x 52 x 38, 1 mm
SMALL = (slice(8, 28), slice(16, 36), slice(9, 29))
"""20³ voxels of the sample around the hippocampus (ITK order): few windows to predict."""


def only_our_lines(stderr: str) -> None:
    assert all(line.startswith("medsegcnn: ") for line in stderr.splitlines()), stderr


def warnings_of(stderr: str) -> list[str]:
    return [line.removeprefix("medsegcnn: WARNING: ") for line in stderr.splitlines() if "WARNING" in line]


def write(image: sitk.Image, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))
    return path


def moved(image: sitk.Image, shift_mm: tuple[float, float, float]) -> sitk.Image:
    """``image`` with its origin moved by ``shift_mm`` (LPS, mm)."""
    copy = sitk.Image(image)
    copy.SetOrigin(tuple(o + s for o, s in zip(image.GetOrigin(), shift_mm, strict=True)))
    return copy


def with_values(source: Path, foreground: int, dtype: type, path: Path) -> Path:
    """The label map ``source`` with every label set to ``foreground`` (a binary mask), stored as ``dtype``."""
    label = sitk.ReadImage(str(source))
    array = np.where(sitk.GetArrayFromImage(label) > 0, foreground, 0).astype(dtype)
    changed = sitk.GetImageFromArray(array)
    changed.CopyInformation(label)
    return write(changed, path)


# ----- partial channels -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_channels(tmp_path_factory) -> Path:
    """A 2-channel tiny model, a T1 (20³ voxels of the sample, 1 mm, few windows to predict) and T2 copies of it: 3
    slices shorter, moved 4 mm along x."""
    folder = tmp_path_factory.mktemp("channels")
    save_tiny_model(folder / "model", channels=("T1", "T2"))
    image = sitk.ReadImage(str(IMAGE))[SMALL]
    write(image, folder / "t1.nii.gz")
    write(image[:, :, :-3], folder / "t2_short.nii.gz")
    write(moved(image, (4.0, 0.0, 0.0)), folder / "t2_moved.nii.gz")
    return folder


def partial(image: Path, first: Path, share: str, difference: str) -> str:
    return (
        f"Case t1: image 1 ({image}) does not cover {share} of the voxels of image 0 ({first}) ({difference}); those "
        "voxels get 0 in this channel"
    )


@pytest.mark.parametrize(
    ("second", "share", "difference"),
    [
        ("t2_short", "15.0%", "size (20, 20, 17) vs (20, 20, 20)"),  # 3 of 20 slices
        ("t2_moved", "20.0%", "origin 4 mm apart ((-5, -17, 10) vs (-9, -17, 10) mm)"),  # 4 of 20 columns
    ],
)
def test_predict_refuses_a_channel_that_does_not_cover_the_first(two_channels, tmp_path, second, share, difference):
    first, other, output = two_channels / "t1.nii.gz", two_channels / f"{second}.nii.gz", tmp_path / "out.nii.gz"
    before = snapshot(two_channels, tmp_path)
    result = medsegcnn("predict", "--model", two_channels / "model", "--input", first, other, "--output", output)
    assert result.returncode == 1, result.stderr
    assert error_line(result) == (
        partial(other, first, share, difference) + ", more than the 1% allowed. Give channels that show the same "
        "region (check the files and their headers), or pass --allow-partial-channels (Python: "
        "allow_partial_channels=True) to go on with the zeros."
    )
    assert_unchanged(before)
    assert leftovers(two_channels, tmp_path) == []


def test_allow_partial_channels_goes_on_and_says_how_much(two_channels, tmp_path):
    first, other, output = two_channels / "t1.nii.gz", two_channels / "t2_short.nii.gz", tmp_path / "out.nii.gz"
    result = medsegcnn("predict", "--model", two_channels / "model", "--input", first, other, "--output", output,
                       "--allow-partial-channels", "--device", "cpu", "--backend", "torch", "--precision", "fp32",
                       "--progress", "none")  # fmt: skip
    assert result.returncode == 0, result.stderr
    only_our_lines(result.stderr)
    assert partial(other, first, "15.0%", "size (20, 20, 17) vs (20, 20, 20)") + "." in warnings_of(result.stderr)
    assert output.is_file()


def test_training_dataset_with_a_moved_channel_file(tmp_path, caplog):
    """Sibling: nnU-Net channel files (``<case>_0000``, ``<case>_0001``) of a training dataset; one T2 moved 3 mm
    along z (3 of 38 slices uncovered). ``plan`` refuses it; the library goes on with allow_partial_channels."""
    from MedSegCNNLib.data.dataset import load_case, load_dataset

    data = tmp_path / "data"
    for case in ("hippocampus_004", "hippocampus_006"):
        image = sitk.ReadImage(str(SAMPLE / "imagesTr" / f"{case}.nii.gz"))
        write(image, data / "imagesTr" / f"{case}_0000.nii.gz")
        write(moved(image, (0.0, 0.0, 3.0)) if case == CASE else image, data / "imagesTr" / f"{case}_0001.nii.gz")
        write(sitk.ReadImage(str(SAMPLE / "labelsTr" / f"{case}.nii.gz")), data / "labelsTr" / f"{case}.nii.gz")
    before = snapshot(tmp_path)
    result = medsegcnn("plan", "--data", data, "--device", "cpu", "--fold", "all")
    first, other = data / "imagesTr" / f"{CASE}_0000.nii.gz", data / "imagesTr" / f"{CASE}_0001.nii.gz"
    expected = (
        f"Case {CASE}: image 1 ({other}) does not cover 7.9% of the voxels of image 0 ({first}) (origin 3 mm apart "
        "((-1, -1, 4) vs (-1, -1, 1) mm)); those voxels get 0 in this channel"
    )
    assert result.returncode == 1, result.stderr
    assert error_line(result).startswith(expected + ", more than the 1% allowed.")
    assert_unchanged(before)
    assert leftovers(tmp_path) == []
    dataset = load_dataset(data, allow_partial_channels=True)
    with caplog.at_level(logging.WARNING, logger="MedSegCNNLib"):
        image, _ = load_case(dataset.cases[0])
    assert [record.getMessage() for record in caplog.records] == [expected + "."]
    assert image.num_channels == 2 and not image.array[1, :3].any()  # the first 3 slices of T2: zeros


# ----- label values -----------------------------------------------------------------------------------------


def test_evaluate_warns_about_a_reference_saved_white_on_black(tmp_path):
    reference = with_values(LABEL, 65535, np.uint16, tmp_path / "white" / f"{CASE}.nii.gz")
    prediction = with_values(LABEL, 1, np.uint8, tmp_path / "binary" / f"{CASE}.nii.gz")
    before = snapshot(tmp_path)
    result = medsegcnn("evaluate", "--pred", prediction, "--ref", reference)
    assert result.returncode == 0, result.stderr
    only_our_lines(result.stderr)
    assert warnings_of(result.stderr) == [
        f"Case {CASE}: the reference {reference} holds one label, 65535, the largest 16-bit integer: a binary mask "
        "saved white on black? It is evaluated as label 65535; pass --mask-values 0,65535 (Python: mask_values=(0, "
        "65535)) to read it as labels 0/1."
    ]
    mapped = medsegcnn("evaluate", "--pred", prediction, "--ref", reference, "--mask-values", "0,65535", "--json")
    assert mapped.returncode == 0 and warnings_of(mapped.stderr) == [], mapped.stderr
    assert '"dice": 1.0' in mapped.stdout
    assert_unchanged(before)


@pytest.mark.parametrize(("value", "dtype", "bits"), [(255, np.uint8, "8-bit"), (2**31 - 1, np.int32, "32-bit signed")])
def test_evaluate_warns_about_any_type_maximum(tmp_path, caplog, value, dtype, bits):
    reference = with_values(LABEL, value, dtype, tmp_path / "reference.nii.gz")
    prediction = with_values(LABEL, value, dtype, tmp_path / "prediction.nii.gz")
    with caplog.at_level(logging.WARNING, logger="MedSegCNNLib"):
        result = evaluate(prediction, reference, surface=False)
    assert [record.getMessage() for record in caplog.records] == [
        f"Case prediction: the {role} {path} holds one label, {value}, the largest {bits} integer: a binary mask "
        f"saved white on black? It is evaluated as label {value}; {advice}."
        for role, path, advice in (
            ("prediction", prediction, "--mask-values maps the references only, so save the prediction as labels 0/1"),
            ("reference", reference, f"pass --mask-values 0,{value} (Python: mask_values=(0, {value})) to read it "
                                     "as labels 0/1"),
        )
    ]  # fmt: skip
    assert result.labels == [value]


def test_evaluate_warns_about_labels_without_one_in_common(tmp_path):
    """Sibling: a one-label prediction (1) against a reference that calls the structure 2."""
    prediction = with_values(LABEL, 1, np.uint8, tmp_path / "prediction.nii.gz")
    reference = with_values(LABEL, 2, np.uint8, tmp_path / "reference.nii.gz")
    result = medsegcnn("evaluate", "--pred", prediction, "--ref", reference, "--no-surface")
    assert result.returncode == 0, result.stderr
    only_our_lines(result.stderr)
    assert warnings_of(result.stderr) == [
        f"Case prediction: the prediction {prediction} has labels 1 and the reference {reference} has labels 2: none "
        "in common, so every Dice is 0. Check that both use the same label values (--mask-values maps the "
        "references' raw values to labels 0, 1, 2, ...)."
    ]


# ----- grid differences -------------------------------------------------------------------------------------


def test_evaluate_says_what_differs_between_the_grids(tmp_path):
    label = sitk.ReadImage(str(LABEL))
    moved_reference = write(moved(label, (3.0, 0.0, 4.0)), tmp_path / "moved" / f"{CASE}.nii.gz")
    turned = sitk.Image(label)
    cos, sin = math.cos(math.radians(10)), math.sin(math.radians(10))
    rotation = np.array([[cos, -sin, 0], [sin, cos, 0], [0, 0, 1]])  # 10° about z
    turned.SetDirection(tuple((rotation @ np.reshape(label.GetDirection(), (3, 3))).ravel()))
    turned_reference = write(turned, tmp_path / "turned" / f"{CASE}.nii.gz")
    messages = []
    for reference in (moved_reference, turned_reference):
        result = medsegcnn("evaluate", "--pred", LABEL, "--ref", reference, "--no-surface")
        assert result.returncode == 0, result.stderr
        only_our_lines(result.stderr)
        messages += warnings_of(result.stderr)
    resampling = "resampling the reference onto the prediction's grid (nearest neighbour)."
    assert messages == [
        f"Case {CASE}: the reference is on another grid than the prediction (reference vs prediction: origin 5 mm "
        f"apart ((2, -1, 5) vs (-1, -1, 1) mm)); {resampling}",
        f"Case {CASE}: the reference is on another grid than the prediction (reference vs prediction: direction: "
        f"axes turned by up to 10°); {resampling}",
    ]


def test_training_label_with_a_moved_origin(small_dataset):
    """Sibling: a training dataset whose label map is moved 2 mm along y from its image (``plan``)."""
    path = small_dataset / "labelsTr" / f"{CASE}.nii.gz"
    write(moved(sitk.ReadImage(str(path)), (0.0, 2.0, 0.0)), path)
    before = snapshot(small_dataset)
    result = medsegcnn("plan", "--data", small_dataset, "--device", "cpu")
    assert result.returncode == 1, result.stderr
    assert error_line(result) == (
        f"Dataset data cannot be used: label and image geometry differ for {CASE}: label vs image: origin 2 mm apart "
        "((-1, 1, 1) vs (-1, -1, 1) mm) (resample the label maps onto their images, e.g. in Slicer, or fix the file "
        "headers)."
    )
    assert_unchanged(before)
    assert leftovers(small_dataset) == []


# ----- matplotlib on stderr ---------------------------------------------------------------------------------


def overlay_run(source: Path, output: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """``predict --overlay`` of ``source`` into the folder ``output``, with ``env`` added to the environment."""
    return subprocess.run(
        [sys.executable, "-m", "MedSegCNNLib", "predict", "--model", str(MODEL), "--input", str(source), "--output",
         f"{output}/", "--overlay", "--device", "cpu", "--backend", "torch", "--precision", "fp32", "--progress",
         "none"],
        capture_output=True, text=True, cwd=ROOT, timeout=120, env={**os.environ, **env},
    )  # fmt: skip


def test_overlay_of_a_case_named_in_chinese(tmp_path):
    source = write(sitk.ReadImage(str(IMAGE))[SMALL], tmp_path / "Fall_Ω_中文.nii.gz")
    result = overlay_run(source, tmp_path / "out")
    assert result.returncode == 0, result.stderr
    only_our_lines(result.stderr)
    assert (tmp_path / "out" / "Fall_Ω_中文_overlay.png").is_file()


def test_matplotlib_log_lines_stay_off_stderr(tmp_path):
    """Sibling: matplotlib logs that it made a temporary cache folder when its configuration folder is a file."""
    (tmp_path / "not-a-folder").write_text("")
    source = write(sitk.ReadImage(str(IMAGE))[SMALL], tmp_path / f"{CASE}.nii.gz")
    result = overlay_run(source, tmp_path / "out", MPLCONFIGDIR=str(tmp_path / "not-a-folder"))
    assert result.returncode == 0, result.stderr
    only_our_lines(result.stderr)
    assert (tmp_path / "out" / f"{CASE}_overlay.png").is_file()
