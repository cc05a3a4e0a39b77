"""Fault class predict paths (what ``predict`` reads and writes): the paths around a prediction are judged as they are.

- a symbolic link at an output path, even one to a missing file, is an existing output: refused without
  ``--overwrite``, and with it the link itself is replaced, never the file it points to;
- ``--skip-existing`` skips only cases whose outputs read back whole: a truncated or empty output is redone, with
  a warning naming it;
- a folder of inputs is read and checked against the model before anything is written: a picture among volumes
  (or a truncated volume) stops the run with one line naming the file, and no output at all;
- an input folder without images is named as such (not as a problem of ``--output``);
- non-ASCII names of detached headers (``.nhdr``, ``.mhd``) and their data files are written, verified and read.

Each case asserts the exit code, the one line (or warning), every pre-existing file unchanged and nothing
temporary left behind.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from cli_support import ROOT, SAMPLE, medsegcnn
from fault_support import assert_unchanged, error_line, leftovers, snapshot
from PIL import Image as PillowImage

from MedSegCNNLib.errors import InputError
from MedSegCNNLib.image.integrity import check_image_file
from MedSegCNNLib.image.io import SUPPORTED_EXTENSIONS, read_image, write_image

MODEL = ROOT / "Resources" / "Models" / "hippocampus-tiny"
CASES = ("hippocampus_004", "hippocampus_006", "hippocampus_007")
ADVICE = "copy or export it again from its source."


def predict(source: Path, output: Path, *extra: str):
    return medsegcnn("predict", "--model", MODEL, "--input", source, "--output", output, "--progress", "none", *extra)


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> tuple[Path, Path]:
    """A folder of three input volumes and the output folder of a complete prediction of them."""
    root = tmp_path_factory.mktemp("finished")
    images = root / "images"
    images.mkdir()
    for case in CASES:
        shutil.copy(SAMPLE / "imagesTr" / f"{case}.nii.gz", images)
    output = root / "out"
    result = predict(images, output)
    assert result.returncode == 0, result.stderr
    return images, output


def test_dangling_link_as_output_is_an_existing_output(tmp_path):
    output = tmp_path / "out.nii.gz"
    output.symlink_to(tmp_path / "missing.nii.gz")
    before = snapshot(tmp_path)
    result = predict(SAMPLE / "imagesTr" / f"{CASES[0]}.nii.gz", output)
    assert result.returncode == 1, result.stderr
    assert error_line(result) == (
        f"1 output file(s) exist already (e.g. {output} (a link to a missing file)); pass --overwrite to replace "
        "them, or --skip-existing to keep the cases whose outputs all exist."
    )
    assert output.is_symlink() and output.readlink() == tmp_path / "missing.nii.gz"
    assert_unchanged(before)
    assert sorted(tmp_path.iterdir()) == [output]


def test_overwrite_replaces_a_dangling_link_itself(tmp_path, finished):
    images, done = finished
    output = tmp_path / "out.nii.gz"
    output.symlink_to(tmp_path / "missing.nii.gz")
    result = predict(images / f"{CASES[0]}.nii.gz", output, "--overwrite")
    assert result.returncode == 0, result.stderr
    assert (
        not output.is_symlink() and not (tmp_path / "missing.nii.gz").exists()
    )  # the link replaced, not written through
    assert np.array_equal(read_image(output).array, read_image(done / f"{CASES[0]}.nii.gz").array)
    assert leftovers(tmp_path) == []


def test_dangling_link_as_extra_output_in_a_folder(tmp_path, finished):
    """Sibling: ``--probabilities`` in folder mode, its file a link to a missing file."""
    images, _ = finished
    output = tmp_path / "out"
    output.mkdir()
    extra = output / f"{CASES[1]}_probabilities.nii.gz"
    extra.symlink_to(tmp_path / "gone.nii.gz")
    before = snapshot(tmp_path)
    result = predict(images, output, "--probabilities")
    assert result.returncode == 1, result.stderr
    assert error_line(result) == (
        f"1 output file(s) exist already (e.g. {extra} (a link to a missing file)); pass --overwrite to replace "
        "them, or --skip-existing to keep the cases whose outputs all exist."
    )
    assert extra.is_symlink() and sorted(output.iterdir()) == [extra]
    assert_unchanged(before)
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("where", ["folder", "parent"])
def test_dangling_link_as_output_folder(tmp_path, finished, where):
    """Sibling: a link to a missing folder as the output folder of a folder of inputs, or as its parent."""
    images, _ = finished
    link = tmp_path / "linked"
    link.symlink_to(tmp_path / "no-such-folder")
    result = predict(images, link if where == "folder" else link / "out")
    assert result.returncode == 1, result.stderr
    assert error_line(result) == (
        f"The input is a folder of images, so --output must be a folder; {link} is a link to a missing file."
    )
    assert sorted(tmp_path.iterdir()) == [link] and not (tmp_path / "no-such-folder").exists()


def test_skip_existing_redoes_truncated_and_empty_outputs(tmp_path, finished):
    """A truncated output (and, sibling, an empty one) is not a finished case: redone with a warning naming it;
    the whole one is kept as it is."""
    images, done = finished
    output = tmp_path / "out"
    shutil.copytree(done, output)
    truncated, empty, whole = (output / f"{case}.nii.gz" for case in CASES)
    truncated.write_bytes(truncated.read_bytes()[:300])
    empty.write_bytes(b"")
    kept = snapshot(whole)
    mtime = whole.stat().st_mtime_ns
    result = predict(images, output, "--skip-existing")
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("medsegcnn: WARNING: ")]
    prefix = "medsegcnn: WARNING: Case {} is not complete and is segmented again, its output files replaced: {} "
    assert len(warnings) == 2, result.stderr
    assert warnings[0].startswith(prefix.format(CASES[0], truncated) + "is truncated or corrupt: ")
    assert warnings[1].startswith(prefix.format(CASES[1], empty) + "is truncated or corrupt: ")
    assert "Skipping 1 of 3 case(s): their output files all exist." in result.stderr
    assert "Segmented 2 image(s)" in result.stdout
    for case in CASES[:2]:
        assert np.array_equal(read_image(output / f"{case}.nii.gz").array, read_image(done / f"{case}.nii.gz").array)
    assert_unchanged(kept)
    assert whole.stat().st_mtime_ns == mtime
    assert leftovers(tmp_path) == []


def picture(path: Path) -> Path:
    PillowImage.fromarray(np.zeros((8, 8), np.uint8)).save(path)
    return path


@pytest.mark.parametrize("bad", ["picture", "truncated"])
def test_bad_file_among_volumes_stops_before_writing(tmp_path, bad):
    """A PNG between two volumes for a 3D model; sibling: a truncated volume between good ones. Refused with the
    file named, and nothing written (the volume before it included)."""
    images = tmp_path / "images"
    images.mkdir()
    shutil.copy(SAMPLE / "imagesTr" / f"{CASES[0]}.nii.gz", images / "a.nii.gz")
    shutil.copy(SAMPLE / "imagesTr" / f"{CASES[1]}.nii.gz", images / "c.nii.gz")
    if bad == "picture":
        culprit = picture(images / "b.png")
        message = f"{culprit} is a 2D image, but this is a 3D model; use a 2D model or a 3D volume."
    else:
        culprit = images / "b.nii.gz"
        culprit.write_bytes((SAMPLE / "imagesTr" / f"{CASES[2]}.nii.gz").read_bytes()[:3000])
        message = f"{culprit} is truncated or corrupt: its compressed data stops before the end of the gzip stream"
    before = snapshot(tmp_path)
    output = tmp_path / "out"
    result = predict(images, output)
    assert result.returncode == 1, result.stderr
    line = error_line(result)
    assert line == message if bad == "picture" else line.startswith(message) and line.endswith(ADVICE)
    assert not output.exists()
    assert_unchanged(before)
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("content", ["empty", "no images"])
def test_input_folder_without_images(tmp_path, content):
    """An empty input folder; sibling: one with only a text file and hidden images."""
    images = tmp_path / "images"
    images.mkdir()
    if content == "no images":
        (images / "notes.txt").write_text("case list\n")
        shutil.copy(SAMPLE / "imagesTr" / f"{CASES[0]}.nii.gz", images / f".{CASES[0]}.nii.gz")
    before = snapshot(tmp_path)
    result = predict(images, tmp_path / "out")
    assert result.returncode == 1, result.stderr
    assert error_line(result) == (
        f"Input folder {images} holds no images: no files ending in {', '.join(SUPPORTED_EXTENSIONS)} (hidden "
        "files are ignored) and no DICOM series; give a folder of images, a DICOM folder or a file."
    )
    assert sorted(tmp_path.iterdir()) == [images]
    assert_unchanged(before)


@pytest.mark.parametrize(("source", "target"), [("Bild ö.mhd", "Ergebnis ü.nhdr"), ("Bild ö.nhdr", "Ergebnis ü.mhd")])
def test_non_ascii_detached_headers(tmp_path, finished, source, target):
    """Predict from a non-ASCII-named detached header (the sibling: as input) into another (the fault: as output)
    and read the result back; the data files keep the UTF-8 names ITK gives them."""
    images, done = finished
    folder = tmp_path / "Fälle"
    folder.mkdir()
    write_image(read_image(images / f"{CASES[0]}.nii.gz"), folder / source)
    output = folder / target
    result = predict(folder / source, output)
    assert result.returncode == 0, result.stderr
    labels = read_image(output)
    assert np.array_equal(labels.array, read_image(done / f"{CASES[0]}.nii.gz").array)
    data_files = sorted(path.name for path in folder.iterdir() if path.name.startswith("Ergebnis ü."))
    assert data_files == sorted([target, "Ergebnis ü.raw.gz" if target.endswith(".nhdr") else "Ergebnis ü.zraw"])
    assert leftovers(tmp_path) == []


@pytest.mark.skipif(os.name != "posix", reason="file names as bytes (not UTF-8) exist on POSIX only")
def test_detached_header_naming_its_data_file_in_latin1(tmp_path):
    """A header whose data file name is not UTF-8 (written by a tool in a Latin-1 locale) still names its file:
    the check reads the name's bytes as the file system keeps them, and a missing one is named as such."""
    source = read_image(SAMPLE / "imagesTr" / f"{CASES[0]}.nii.gz")
    write_image(source, tmp_path / "plain.nhdr", compress=False)
    header = (tmp_path / "plain.nhdr").read_bytes().replace(b"data file: plain.raw", b"data file: Bild \xf6.raw")
    data = tmp_path / os.fsdecode(b"Bild \xf6.raw")  # the name's bytes as the file system keeps them
    (tmp_path / "plain.raw").rename(data)
    (tmp_path / "plain.nhdr").write_bytes(header)
    check_image_file(tmp_path / "plain.nhdr")
    data.unlink()
    with pytest.raises(InputError, match=r"its data file .*Bild .* is missing"):
        check_image_file(tmp_path / "plain.nhdr")
