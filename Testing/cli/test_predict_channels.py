"""``medsegcnn predict`` with several input channels: several ``--input`` files, nnU-Net channel folders grouped by
case, folders of multi-component images, the torchrun plan carrying every channel, and the refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from cli_support import SAMPLE, assert_clean_failure, medsegcnn
from model_support import save_tiny_model

from MedSegCNNLib import Image, read_image, write_image
from MedSegCNNLib.errors import InputError
from MedSegCNNLib.inference.folder_plan import Job, Plan, input_cases, plan_outputs
from MedSegCNNLib.inference.options import FolderOptions, PredictOptions

CASES = ("hippocampus_004", "hippocampus_006")


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("models") / "two", channels=("T1", "T2"), features=(4, 8), seed=0)


@pytest.fixture(scope="module")
def channels(tmp_path_factory) -> dict[str, tuple[Image, Image]]:
    """Two channels per case: the sample image and a transformed copy (so that swapping them changes the
    z-scored input)."""
    result = {}
    for case in CASES:
        image = read_image(SAMPLE / "imagesTr" / f"{case}.nii.gz")
        second = image.with_array((np.sqrt(image.array.astype(np.float32)) * 7.0).astype(np.float32))
        result[case] = (image, second)
    return result


@pytest.fixture(scope="module")
def channel_folder(tmp_path_factory, channels) -> Path:
    """nnU-Net layout: ``<case>_0000.nrrd``, ``<case>_0001.nrrd``."""
    folder = tmp_path_factory.mktemp("nnunet") / "images"
    folder.mkdir()
    for case, (first, second) in channels.items():
        write_image(first, folder / f"{case}_0000.nrrd")
        write_image(second, folder / f"{case}_0001.nrrd")
    return folder


@pytest.fixture(scope="module")
def grouped_run(tmp_path_factory, model, channel_folder) -> Path:
    output = tmp_path_factory.mktemp("grouped") / "out"
    result = medsegcnn("predict", "--model", model, "--input", channel_folder, "--output", output,
                       "--progress", "none", "--device", "cpu")  # fmt: skip
    assert result.returncode == 0, result.stderr
    return output


def test_an_nnunet_channel_folder_is_grouped_by_case_and_outputs_are_named_by_case(grouped_run, channels):
    assert sorted(path.name for path in grouped_run.iterdir()) == [f"{case}.nii.gz" for case in CASES]
    for case in CASES:
        labels = read_image(grouped_run / f"{case}.nii.gz")
        assert labels.same_grid(channels[case][0]) and labels.spatial_dims == 3 and not labels.is_multichannel


def test_several_input_files_are_the_channels_of_one_case(tmp_path, model, channel_folder, grouped_run):
    files = [channel_folder / f"{CASES[0]}_000{c}.nrrd" for c in range(2)]
    output = tmp_path / "out"
    result = medsegcnn("predict", "--model", model, "--input", *files, "--output", f"{output}/",
                       "--progress", "none", "--device", "cpu")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert [path.name for path in output.iterdir()] == [f"{CASES[0]}.nii.gz"]  # named without _0000
    labels = read_image(output / f"{CASES[0]}.nii.gz").array
    assert np.array_equal(labels, read_image(grouped_run / f"{CASES[0]}.nii.gz").array)


def test_a_folder_of_multi_component_images_is_one_case_per_file(tmp_path, model, channels, grouped_run):
    folder = tmp_path / "vectors"
    folder.mkdir()
    for case, (first, second) in channels.items():
        stacked = np.stack([first.array.astype(np.float32), second.array])
        write_image(first.with_array(stacked), folder / f"{case}.nrrd")  # a 2-component NRRD
    assert read_image(folder / f"{CASES[0]}.nrrd").num_channels == 2
    output = tmp_path / "out"
    result = medsegcnn("predict", "--model", model, "--input", folder, "--output", output, "--progress", "none",
                       "--device", "cpu", "--format", ".nrrd")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert sorted(path.name for path in output.iterdir()) == [f"{case}.nrrd" for case in CASES]
    for case in CASES:  # the same network input as the channel files give
        assert np.array_equal(read_image(output / f"{case}.nrrd").array,
                              read_image(grouped_run / f"{case}.nii.gz").array)  # fmt: skip


def _plan(model: Path, inputs: list[Path], output: Path, existing: str) -> Plan:
    """The plan of ``medsegcnn predict`` with a two-channel model."""
    return plan_outputs(inputs, str(output), [model], ("T1", "T2"), PredictOptions(), FolderOptions(existing=existing))


def test_the_torchrun_plan_carries_every_channel_of_every_case(tmp_path, model, channel_folder):
    plan = _plan(model, [channel_folder], tmp_path / "out", "skip")
    assert plan.folder == tmp_path / "out"
    assert [(job.case, [path.name for path in job.sources]) for job in plan.jobs] == [
        (case, [f"{case}_0000.nrrd", f"{case}_0001.nrrd"]) for case in CASES
    ]
    assert Plan.from_json(plan.to_json()) == plan
    job = Job("c", (Path("a_0000.png"), Path("a_0001.png")), Path("o/c.png"), None, skip=False, replace=True)
    assert Job.from_dict(job.to_dict()) == job


def test_grouping_follows_the_model_channel_count(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    image = Image.from_array(np.zeros((4, 5, 6), np.float32))
    for name in ("a_0000", "b_0000"):
        write_image(image, folder / f"{name}.nrrd")
    cases, batch = input_cases([folder], ("CT",))
    assert batch and [(case, [p.name for p in paths]) for case, paths in cases] == [
        ("a", ["a_0000.nrrd"]),
        ("b", ["b_0000.nrrd"]),
    ]  # nnU-Net's one-channel layout: named by case
    write_image(image, folder / "a_0001.nrrd")
    write_image(image, folder / "b_0001.nrrd")
    cases, _ = input_cases([folder], ("CT",))  # numbered frames for a one-channel model: one case per file
    assert [case for case, _ in cases] == ["a_0000", "a_0001", "b_0000", "b_0001"]
    cases, _ = input_cases([folder], ("T1", "T2"))
    assert [(case, len(paths)) for case, paths in cases] == [("a", 2), ("b", 2)]
    with pytest.raises(InputError, match=r"model expects 3 channels \(T1, T2, FLAIR\).*a lacks _0002, b lacks _0002"):
        input_cases([folder], ("T1", "T2", "FLAIR"))


def test_missing_channel_files_are_refused_with_the_cases_that_lack_them(tmp_path, model, channel_folder):
    folder = tmp_path / "images"
    folder.mkdir()
    for path in channel_folder.iterdir():
        if path.name != f"{CASES[1]}_0001.nrrd":
            (folder / path.name).write_bytes(path.read_bytes())
    output = tmp_path / "out"
    result = medsegcnn("predict", "--model", model, "--input", folder, "--output", output)
    assert_clean_failure(result, f"Channel files missing or extra in {folder}")
    assert f"{CASES[1]} lacks _0001" in result.stderr and not output.exists()


def test_the_number_and_order_of_input_files_is_checked(tmp_path, model, channel_folder):
    first, second = (channel_folder / f"{CASES[0]}_000{c}.nrrd" for c in range(2))
    out = tmp_path / "o.nii.gz"
    refused = medsegcnn("predict", "--model", model, "--input", first, "--output", out)
    assert_clean_failure(refused, "The model expects 2 input channel(s) (T1, T2)")
    assert "has 1. Give one image per channel" in refused.stderr
    with pytest.raises(
        InputError, match=r"3 --input files given, but the model expects 2 input channel\(s\) \(T1, T2\)"
    ):
        input_cases([first, second, first], ("T1", "T2"))
    with pytest.raises(InputError, match="channels _0001, _0000 of case hippocampus_004; give them in"):
        input_cases([second, first], ("T1", "T2"))
    with pytest.raises(InputError, match="is a folder; give one image file per channel"):
        input_cases([first, channel_folder], ("T1", "T2"))
    assert not out.exists()


def test_label_maps_cannot_be_written_as_jpeg(tmp_path, model, channel_folder):
    files = [channel_folder / f"{CASES[0]}_000{c}.nrrd" for c in range(2)]
    with pytest.raises(InputError, match="JPEG is lossy"):
        _plan(model, files, tmp_path / "labels.jpg", "refuse")
    with pytest.raises(InputError, match="JPEG is lossy"):
        PredictOptions(output_format=".jpeg")
