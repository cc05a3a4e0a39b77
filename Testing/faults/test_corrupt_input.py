"""Fault class 2 (corrupt input): truncated images are refused, never read as if whole.

Every case truncates an input (``.nii.gz``, ``.nii``, gzip ``.nrrd``, ``.mha``) and runs ``predict``, ``evaluate``
or ``train`` on it, or the library's ``read_image``: exit 1 with one exact line naming the file and the cause,
every pre-existing file unchanged, no output and nothing temporary left behind.
"""

from __future__ import annotations

import math
import shutil
import zlib
from pathlib import Path

import pytest
import SimpleITK as sitk
from cli_support import REF, ROOT, SAMPLE, medsegcnn
from fault_support import assert_unchanged, error_line, leftovers, snapshot

from MedSegCNNLib.errors import InputError
from MedSegCNNLib.image.io import read_image

MODEL = ROOT / "Resources" / "Models" / "hippocampus-tiny"
CASE = "hippocampus_004"
ADVICE = "copy or export it again from its source."

# (file name, SimpleITK compression, fraction of the file kept; -1 keeps all but the last byte)
TRUNCATIONS = [
    (f"{CASE}.nii.gz", True, 0.5),
    (f"{CASE}.nii.gz", True, -1),
    (f"{CASE}.nii", False, 0.5),
    (f"{CASE}.nrrd", True, 0.3),
    (f"{CASE}.mha", False, 0.9),
]


def truncated_copy(source: Path, folder: Path, name: str, compress: bool, keep: float) -> Path:
    """``source`` written as ``folder/name`` and then cut to ``keep`` of its bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    sitk.WriteImage(sitk.ReadImage(str(source)), str(path), compress)
    data = path.read_bytes()
    path.write_bytes(data[:-1] if keep == -1 else data[: int(len(data) * keep)])
    return path


def expected_message(path: Path, source: Path) -> str:
    """The refusal of a truncated ``path`` (a copy of ``source``), with the cause worked out from its bytes."""
    data = path.read_bytes()
    name = path.name
    if name.endswith(".nii.gz") or name.endswith(".nrrd"):
        start = 0 if name.endswith(".nii.gz") else data.index(b"\n\n") + 2
        inflated = len(zlib.decompressobj(31).decompress(data[start:]))
        cause = f"its compressed data stops before the end of the gzip stream (after {inflated} inflated bytes)"
    else:
        image = sitk.ReadImage(str(source))
        declared = math.prod(image.GetSize()) * image.GetSizeOfPixelComponent()
        marker = b"ElementDataFile = LOCAL\n"
        start = 352 if name.endswith(".nii") else data.index(marker) + len(marker)
        cause = f"it holds {len(data) - start} bytes of image data where the header declares {declared}"
    return f"{path} is truncated or corrupt: {cause}; {ADVICE}"


def check_refused(result, message: str, before: dict, *roots: Path) -> None:
    assert result.returncode == 1, result.stderr
    assert error_line(result) == message
    assert_unchanged(before)
    for root in roots:
        assert leftovers(root) == []


@pytest.mark.parametrize(("name", "compress", "keep"), TRUNCATIONS)
def test_predict_refuses_a_truncated_image(tmp_path, name, compress, keep):
    source = SAMPLE / "imagesTr" / f"{CASE}.nii.gz"
    image = truncated_copy(source, tmp_path / "in", name, compress, keep)
    out = tmp_path / "out"
    out.mkdir()
    shutil.copy(source, out / "earlier.nii.gz")
    before = snapshot(tmp_path)
    result = medsegcnn("predict", "--model", MODEL, "--input", image, "--output", out / "seg.nii.gz", "--device", "cpu")
    check_refused(result, expected_message(image, source), before, tmp_path)
    assert sorted(p.name for p in out.iterdir()) == ["earlier.nii.gz"]


@pytest.mark.parametrize("role", ["--pred", "--ref"])
@pytest.mark.parametrize(("name", "compress", "keep"), [TRUNCATIONS[0], TRUNCATIONS[2], TRUNCATIONS[4]])
def test_evaluate_refuses_a_truncated_label_map(tmp_path, role, name, compress, keep):
    source = REF / f"{CASE}.nii.gz"
    broken = truncated_copy(source, tmp_path / "maps", name, compress, keep)
    other = "--ref" if role == "--pred" else "--pred"
    csv = tmp_path / "metrics.csv"
    before = snapshot(tmp_path)
    result = medsegcnn("evaluate", role, broken, other, source, "--csv", csv, "--no-surface")
    check_refused(result, expected_message(broken, source), before, tmp_path)
    assert not csv.exists()


@pytest.mark.parametrize("sub", ["imagesTr", "labelsTr"])
def test_train_refuses_a_dataset_with_a_truncated_case(tmp_path, small_dataset, sub):
    source = small_dataset / sub / f"{CASE}.nii.gz"
    original = source.read_bytes()
    source.write_bytes(original[: len(original) // 2])
    output = tmp_path / "run"
    before = snapshot(tmp_path)
    result = medsegcnn(
        "train", "--data", small_dataset, "--output", output, "--epochs", "1", "--steps-per-epoch", "1",
        "--patch-size", "16,16,16", "--fold", "all", "--device", "cpu",
    )  # fmt: skip
    reference = SAMPLE / sub / f"{CASE}.nii.gz"
    check_refused(result, expected_message(source, reference), before, tmp_path)
    assert not output.exists()


@pytest.mark.parametrize(("name", "compress", "keep"), TRUNCATIONS)
def test_read_image_refuses_a_truncated_file(tmp_path, name, compress, keep):
    source = SAMPLE / "imagesTr" / f"{CASE}.nii.gz"
    path = truncated_copy(source, tmp_path, name, compress, keep)
    before = snapshot(tmp_path)
    with pytest.raises(InputError) as raised:
        read_image(path)
    assert str(raised.value) == expected_message(path, source)
    assert_unchanged(before)
    assert leftovers(tmp_path) == []
