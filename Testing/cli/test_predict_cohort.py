"""``medsegcnn predict`` over a cohort: ``--skip-existing``, and torchrun sharing the cases out among processes
(two CPU processes, launched the way several machines would be: ``--master_addr``/``--master_port``)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from cli_support import REF, ROOT, SAMPLE, assert_clean_failure, medsegcnn
from model_support import save_tiny_model

from MedSegCNNLib.image.io import read_image

CASES = ("hippocampus_004", "hippocampus_006", "hippocampus_007", "hippocampus_008")
OLD = 1_000_000_000.0
"""The modification time (2001) given to outputs of an earlier run, so that a file written again shows."""


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> tuple[Path, Path]:
    """``(model folder, folder of the four images of CASES)``: an untrained tiny 3D U-Net and sample images."""
    root = tmp_path_factory.mktemp("cohort")
    images = root / "images"
    images.mkdir()
    for case in CASES:
        shutil.copyfile(SAMPLE / "imagesTr" / f"{case}.nii.gz", images / f"{case}.nii.gz")
    return save_tiny_model(root / "model"), images


@pytest.fixture(scope="module")
def single_run(cohort, tmp_path_factory) -> Path:
    """The outputs of a plain (single-process) run over the cohort: label maps and probabilities."""
    model, images = cohort
    output = tmp_path_factory.mktemp("single") / "out"
    result = medsegcnn("predict", "--model", model, "--input", images, "--output", output, "--probabilities",
                       "--progress", "none")  # fmt: skip
    assert result.returncode == 0, result.stderr
    return output


def torchrun(*args: str | os.PathLike[str]) -> subprocess.CompletedProcess[str]:
    """``medsegcnn ARGS`` under torchrun: two processes on this machine, rendezvous at a free local port."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    launcher = ["-m", "torch.distributed.run", "--nnodes=1", "--node_rank=0", "--nproc_per_node=2",
                "--master_addr=127.0.0.1", f"--master_port={port}"]  # fmt: skip
    return subprocess.run(
        [sys.executable, *launcher, "-m", "MedSegCNNLib", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=180,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def assert_same_outputs(folder: Path, expected: Path) -> None:
    """The same file names, and in each the same voxels (type and values), spacing, origin and direction."""
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in expected.iterdir())
    for path in expected.iterdir():
        got, want = read_image(folder / path.name), read_image(path)
        assert got.array.dtype == want.array.dtype and np.array_equal(got.array, want.array), path.name
        assert got.spacing == want.spacing and got.origin == want.origin, path.name
        assert np.array_equal(got.direction, want.direction), path.name


def partly_done(single_run: Path, output: Path) -> dict[Path, float]:
    """An output folder as an interrupted run leaves it: cases 004 and 007 complete, 006 with its label map but
    not its probabilities, 008 missing; every file dated :data:`OLD`. Returns each file's modification time."""
    output.mkdir()
    for name in ("hippocampus_004.nii.gz", "hippocampus_004_probabilities.nii.gz", "hippocampus_006.nii.gz",
                 "hippocampus_007.nii.gz", "hippocampus_007_probabilities.nii.gz"):  # fmt: skip
        shutil.copyfile(single_run / name, output / name)
        os.utime(output / name, (OLD, OLD))
    return {path: path.stat().st_mtime for path in output.iterdir()}


def assert_continued(output: Path, before: dict[Path, float], single_run: Path) -> None:
    """The complete cases were left alone, the partial and missing ones written, all as in ``single_run``."""
    assert {path.name for path, mtime in before.items() if path.stat().st_mtime == mtime} == {
        "hippocampus_004.nii.gz", "hippocampus_004_probabilities.nii.gz",
        "hippocampus_007.nii.gz", "hippocampus_007_probabilities.nii.gz",
    }  # fmt: skip
    assert_same_outputs(output, single_run)


def test_torchrun_over_a_folder_equals_a_single_process_run(cohort, single_run, tmp_path):
    model, images = cohort
    output = tmp_path / "out"
    result = torchrun("predict", "--model", model, "--input", images, "--output", output, "--probabilities",
                      "--ref", REF, "--progress", "none")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Rank 1 of 2: 2 of the 4 case(s) to segment, on cpu." in result.stderr
    assert "4 of 4 case(s) done (2 processes)." in result.stderr  # rank 0 counted the cases of both ranks
    assert result.stdout.count("Segmented 4 image(s)") == 1 and result.stdout.count("Mean over 4 cases") == 1
    assert_same_outputs(output, single_run)


def test_torchrun_continues_a_run_that_stopped(cohort, single_run, tmp_path):
    model, images = cohort
    output = tmp_path / "out"
    before = partly_done(single_run, output)
    result = torchrun("predict", "--model", model, "--input", images, "--output", output, "--probabilities",
                      "--progress", "none")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Skipping 2 of 4 case(s): their output files all exist." in result.stderr
    assert "Segmented 2 image(s)" in result.stdout
    assert_continued(output, before, single_run)


def test_torchrun_with_one_image_and_a_failing_rank(cohort, single_run, tmp_path):
    model, images = cohort
    output = tmp_path / "one.nii.gz"
    result = torchrun("predict", "--model", model, "--input", images / "hippocampus_006.nii.gz", "--output", output,
                      "--progress", "none")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("Segmented 1 image(s)") == 1
    assert "Rank 1 of 2: 0 of the 1 case(s) to segment" in result.stderr
    labels, expected = read_image(output), read_image(single_run / "hippocampus_006.nii.gz")
    assert np.array_equal(labels.array, expected.array) and labels.same_grid(expected)

    broken = tmp_path / "broken"
    shutil.copytree(images, broken)
    (broken / "hippocampus_006.nii.gz").write_bytes((images / "hippocampus_006.nii.gz").read_bytes()[:3000])
    result = torchrun("predict", "--model", model, "--input", broken, "--output", tmp_path / "out")
    assert result.returncode != 0
    assert "hippocampus_006.nii.gz is truncated or corrupt" in result.stderr  # rank 1's own error
    assert "Rank 1 of 2 failed (see its error above); rerun the same command to continue" in result.stderr


def test_skip_existing_in_a_plain_run(cohort, single_run, tmp_path):
    model, images = cohort
    output = tmp_path / "out"
    before = partly_done(single_run, output)
    args = ("predict", "--model", model, "--input", images, "--output", output, "--probabilities", "--progress", "none")
    assert_clean_failure(medsegcnn(*args), "--skip-existing")  # existing outputs stay an error without the flag
    assert_clean_failure(medsegcnn(*args, "--skip-existing", "--overwrite"), "pass only one of them")
    assert all(path.stat().st_mtime == OLD for path in before)

    result = medsegcnn(*args, "--skip-existing")
    assert result.returncode == 0, result.stderr
    assert "Skipping 2 of 4 case(s): their output files all exist." in result.stderr
    assert "Segmented 2 image(s)" in result.stdout
    assert_continued(output, before, single_run)
