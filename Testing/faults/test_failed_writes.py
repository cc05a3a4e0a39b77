"""Fault class 1: failed writes are reported, keep the old file and leave nothing temporary behind.

Faults: a full disk (a tiny tmpfs filled to the last byte; needs root and mount rights, skipped otherwise), a
read-only file system (tmpfs mounted read-only; root) or a read-only folder (non-root), a writer that silently
writes half a file (SimpleITK's behaviour on a full disk, monkeypatched so it runs for every user), and a
process killed while writing (its temporary file is removed by the next write there).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from cli_support import ROOT, SAMPLE, medsegcnn
from fault_support import assert_unchanged, error_line, fill, leftovers, mounted_tmpfs, snapshot

from MedSegCNNLib import Image
from MedSegCNNLib.atomic import is_temporary, temporary_path, write_text_atomic
from MedSegCNNLib.errors import WriteError
from MedSegCNNLib.image.io import RASTER_EXTENSIONS, SUPPORTED_EXTENSIONS, read_image, write_image

MODEL = ROOT / "Resources" / "Models" / "hippocampus-tiny"
IMAGE = SAMPLE / "imagesTr" / "hippocampus_004.nii.gz"
FORMATS = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd", ".seg.nrrd")
NO_SPACE = "no space left on the device"
ADVICE = "free some space or write elsewhere"


def predict(output: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return medsegcnn("predict", "--model", MODEL, "--input", IMAGE, "--output", output, "--progress", "none", *extra)


def test_full_disk_is_reported_and_keeps_the_old_output(tmp_path, make_image):
    """Every format through the library, new and replacing a good file; then the same through ``predict``."""
    image = make_image(shape=(20, 30, 40), dtype=np.int16)
    with mounted_tmpfs(tmp_path / "disk", "size=512k") as disk:
        old = [disk / f"old{extension}" for extension in FORMATS]
        for path in old:
            write_image(image, path)
        write_image(image, disk / "case.nii.gz")
        fill(disk)
        before = snapshot(disk)
        for target, overwrite in [(disk / f"new{extension}", False) for extension in FORMATS] + [
            (path, True) for path in old
        ]:
            with pytest.raises(WriteError) as caught:
                write_image(image, target, overwrite=overwrite)
            kept = f"; {target} was left as it was" if overwrite else ""
            assert str(caught.value) == f"Could not write {target}: {NO_SPACE}{kept}; {ADVICE}."
        output = disk / "case.nii.gz"
        result = predict(output, "--overwrite")
        assert result.returncode == 1, result.stderr
        assert error_line(result) == f"Could not write {output}: {NO_SPACE}; {output} was left as it was; {ADVICE}."
        assert_unchanged(before)
        assert leftovers(disk) == []
        assert sorted(p.name for p in disk.iterdir()) == sorted(path.name for path in before)


def test_read_only_file_system_or_folder(tmp_path):
    if os.name == "posix" and os.geteuid() == 0:
        target = tmp_path / "readonly"
        with mounted_tmpfs(target, "size=4m", "ro") as folder:
            result = predict(folder / "case.nii.gz")
            assert result.returncode == 1
            assert error_line(result) == (
                f"Could not write {folder / 'case.nii.gz'}: the file system is read-only; write to another folder."
            )
            assert list(folder.iterdir()) == []
        return
    folder = tmp_path / "readonly"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        result = predict(folder / "case.nii.gz")
        assert result.returncode == 1
        assert error_line(result) == (
            f"Could not write {folder / 'case.nii.gz'}: permission denied; write to a folder you may write to, "
            "or change its permissions."
        )
        assert list(folder.iterdir()) == []
    finally:
        folder.chmod(0o755)


@pytest.mark.parametrize("extension", FORMATS)
@pytest.mark.parametrize("kept_bytes", [0.0, 0.5, 0.99])
def test_silently_truncated_write_is_caught(tmp_path, make_image, monkeypatch, extension, kept_bytes):
    """SimpleITK returns without error after writing only part of a file (as on a full disk)."""
    real_write = sitk.WriteImage

    def write_part(image: sitk.Image, file_name: str, *args: object) -> None:
        real_write(image, file_name, *args)
        header = Path(file_name)
        detached = header.name.endswith((".nhdr", ".mhd"))  # written alone in a staging folder with its data file
        (written,) = [p for p in header.parent.iterdir() if p != header] if detached else [header]
        data = written.read_bytes()
        written.write_bytes(data[: int(len(data) * kept_bytes)])

    image = make_image(shape=(20, 30, 40), dtype=np.int16, direction="identity")
    old = tmp_path / f"old{extension}"
    write_image(image, old)
    before = snapshot(tmp_path)
    monkeypatch.setattr(sitk, "WriteImage", write_part)
    for target, overwrite in ((tmp_path / f"new{extension}", False), (old, True)):
        with pytest.raises(WriteError) as caught:
            write_image(image, target, overwrite=overwrite)
        message = str(caught.value)
        kept = f"; {target} was left as it was" if overwrite else ""
        assert message.startswith(f"Could not write {target}: the file written ")
        assert message.endswith(f"{kept}; check the disk and the folder's permissions.")
        assert ".partial" not in message and "\n" not in message
    assert_unchanged(before)
    assert leftovers(tmp_path) == []
    monkeypatch.undo()
    assert read_image(old).array.shape == image.array.shape


def test_write_errors_of_python_writers_name_the_target(tmp_path, monkeypatch):
    def no_space(self: Path, data: bytes) -> int:
        raise OSError(28, "No space left on device")

    target = tmp_path / "notes.json"
    target.write_text("old")
    monkeypatch.setattr(Path, "write_bytes", no_space)
    with pytest.raises(WriteError) as caught:
        write_text_atomic(target, "new", overwrite=True)
    monkeypatch.undo()
    assert str(caught.value) == (
        f"Could not write {target}: {NO_SPACE}; {target} was left as it was; free some space or write elsewhere."
    )
    assert target.read_text() == "old"
    assert leftovers(tmp_path) == []


def test_a_killed_writer_leaves_a_temporary_file_that_the_next_write_removes(tmp_path, make_image):
    """A writer killed mid-write (SIGKILL) leaves its temporary file; the next write into the folder removes it
    and keeps the temporary files of writers that still run (here: this test's own process)."""
    killed = subprocess.run(
        [
            sys.executable,
            "-c",
            "import os, signal, sys; from pathlib import Path; from MedSegCNNLib.atomic import temporary_path;"
            "tmp = temporary_path(Path(sys.argv[1]), suffix='.nii.gz'); tmp.write_bytes(b'half');"
            "os.kill(os.getpid(), signal.SIGKILL)",
            str(tmp_path / "case.nii.gz"),
        ],
        cwd=ROOT,
    )
    assert killed.returncode == -9
    (stale,) = leftovers(tmp_path)
    assert is_temporary(stale)
    alive = temporary_path(tmp_path / "other.nii.gz", suffix=".nii.gz")
    alive.write_bytes(b"being written")
    result = predict(tmp_path / "case.nii.gz")
    assert result.returncode == 0, result.stderr
    assert not stale.exists()
    assert alive.exists()
    assert (tmp_path / "case.nii.gz").is_file()


def test_verified_write_accepts_every_format(tmp_path, make_image):
    image = make_image(shape=(6, 7, 8), dtype=np.uint8)
    for extension in FORMATS:
        write_image(image, tmp_path / f"ok{extension}")
        assert np.array_equal(read_image(tmp_path / f"ok{extension}").array, image.array)
    assert leftovers(tmp_path) == []
    assert set(FORMATS) == set(SUPPORTED_EXTENSIONS) - set(RASTER_EXTENSIONS)  # 2D pictures: test_raster_io.py


@pytest.mark.parametrize("extension", RASTER_EXTENSIONS)
def test_full_disk_while_writing_a_picture_keeps_the_old_file(tmp_path, extension):
    """2D pictures (Pillow's and tifffile's writers) on a full disk: new and replacing a good file, one line each."""
    colour = extension in (".jpg", ".jpeg", ".bmp")  # pictures these formats hold; PNG and TIFF: a 16-bit label map
    array = np.random.default_rng(0).integers(0, 255 if colour else 300, (3, 64, 80) if colour else (64, 80))
    image = Image.from_array(array.astype(np.uint8 if colour else np.uint16), spatial_dims=2)
    with mounted_tmpfs(tmp_path / "disk", "size=512k") as disk:
        old = write_image(image, disk / f"old{extension}")
        fill(disk)
        before = snapshot(disk)
        for target, overwrite in ((disk / f"new{extension}", False), (old, True)):
            with pytest.raises(WriteError) as caught:
                write_image(image, target, overwrite=overwrite)
            kept = f"; {target} was left as it was" if overwrite else ""
            assert str(caught.value) == f"Could not write {target}: {NO_SPACE}{kept}; {ADVICE}."
        assert_unchanged(before)
        assert leftovers(disk) == []
