"""``medsegcnn export``: the bundled model and an imported nnU-Net model as ONNX files (and the bundled one as
OpenVINO IR) that reproduce the engine's segmentation of sample cases (Dice 1.0 per label) through onnxruntime, their
sidecars, and the refusals (an existing output, a bad format or file name), with nothing written."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from cli_support import SAMPLE, assert_clean_failure, medsegcnn
from model_support import save_tiny_model
from nnunet_support import NnunetResults

from MedSegCNNLib.checkpoint.model_card import read_model_card
from MedSegCNNLib.errors import CheckError, InputError, OutputExistsError
from MedSegCNNLib.export import exporter
from MedSegCNNLib.export.check import check_exported, check_image
from MedSegCNNLib.export.exporter import METADATA_KEY, ExportResult, OnnxRuntimeNetwork, export_model
from MedSegCNNLib.export.sidecar import model_licence
from MedSegCNNLib.inference.model import load_segmentation_model
from MedSegCNNLib.interop.nnunet_import import import_nnunet
from MedSegCNNLib.registry import resolve_model_folder
from MedSegCNNLib.runtime import openvino_version

BUNDLED = resolve_model_folder("hippocampus-tiny")
CASES = [SAMPLE / "imagesTr" / f"hippocampus_{number}.nii.gz" for number in ("004", "023")]


@pytest.fixture(scope="module")
def bundled_onnx(tmp_path_factory: pytest.TempPathFactory) -> ExportResult:
    """The bundled model as ONNX, checked on the first sample case."""
    output = tmp_path_factory.mktemp("export") / "hippo.onnx"
    return export_model(BUNDLED, "onnx", output, check=True, check_image_files=CASES[0])


@pytest.fixture(scope="module")
def nnunet_onnx(nnunet_results: NnunetResults, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ExportResult]:
    """An imported nnU-Net model (3d_fullres, mirroring) and its ONNX export, checked on a held-out sample case."""
    model = import_nnunet(nnunet_results.model_folder, tmp_path_factory.mktemp("imported") / "model")
    output = tmp_path_factory.mktemp("export") / "nnunet.onnx"
    return model, export_model(model, "onnx", output, check=True, check_image_files=CASES[1])


def _assert_reproduces(result: ExportResult) -> None:
    check = result.check
    assert check is not None and check.passed, check.describe()
    assert all(score == 1.0 for score in check.dice.values())
    assert all(engine > 0 and engine == exported for engine, exported in check.counts.values())  # labels present
    assert check.largest_difference <= check.tolerance


def test_the_bundled_model_as_onnx_segments_like_the_engine(bundled_onnx: ExportResult) -> None:
    _assert_reproduces(bundled_onnx)
    (network,) = bundled_onnx.files
    assert sorted(p.name for p in network.parent.iterdir()) == ["hippo.medsegcnn.json", "hippo.onnx"]
    model = load_segmentation_model(BUNDLED, torch.device("cpu"))
    image, name = check_image(model, CASES[1])  # a second case, through onnxruntime in the engine's sliding window
    again = check_exported(model, OnnxRuntimeNetwork(network, onnxruntime), "onnxruntime", image, name)
    assert again.passed and set(again.dice.values()) == {1.0}, again.describe()


def test_the_onnx_file_takes_any_batch_and_gives_the_network_s_logits(bundled_onnx: ExportResult) -> None:
    session = onnxruntime.InferenceSession(str(bundled_onnx.files[0]), providers=["CPUExecutionProvider"])
    (given,), (produced,) = session.get_inputs(), session.get_outputs()
    assert (given.name, given.shape) == ("image", ["batch", 1, 40, 56, 40])
    assert (produced.name, produced.shape) == ("logits", ["batch", 3, 40, 56, 40])
    model = load_segmentation_model(BUNDLED, torch.device("cpu"))
    windows = torch.randn(3, 1, 40, 56, 40, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model.networks[0](windows).numpy()
    logits = session.run(None, {"image": windows.numpy()})[0]
    assert np.abs(logits - expected).max() <= 1e-3 * max(1.0, float(np.abs(expected).max()))


def test_the_sidecar_describes_the_network(bundled_onnx: ExportResult) -> None:
    sidecar = json.loads(bundled_onnx.sidecar.read_text(encoding="utf-8"))
    card = read_model_card(BUNDLED)
    weights = hashlib.sha256((BUNDLED / "model.safetensors").read_bytes()).hexdigest()
    assert sidecar["format"] == "medsegcnn-export" and sidecar["format_version"] == 1
    assert sidecar["source_model"]["weights_sha256"] == weights and sidecar["licence"] == model_licence(card) is None
    assert sidecar["network"]["format"] == "onnx" and sidecar["network"]["files"] == ["hippo.onnx"]
    assert sidecar["input"] == {"name": "image", "shape": ["batch", 1, 40, 56, 40], "dynamic_axes": {"0": "batch"},
                                "dtype": "float32", "axes": ["batch", "channel", "z", "y", "x"]}  # fmt: skip
    assert sidecar["channels"] == [{"index": 0, "name": "MRI"}]
    assert sidecar["patch_size"] == [40, 56, 40] and sidecar["target_spacing"] == [1.0, 1.0, 1.0]
    assert sidecar["orientation"]["physical_frame"] == "LPS" and sidecar["orientation"]["array_order"] == [
        "z",
        "y",
        "x",
    ]
    (channel,) = sidecar["preprocessing"]["normalization"]
    assert channel["scheme"] == "zscore" and channel["channel"] == "MRI" and "std" in channel["definition"]
    assert [(label["value"], label["name"]) for label in sidecar["labels"]] == [
        (0, "background"), (1, "Anterior"), (2, "Posterior")]  # fmt: skip
    assert sidecar["labels"][1]["color"] == list(card.labels[1].color)
    assert sidecar["output"]["shape"] == ["batch", 3, 40, 56, 40] and sidecar["output"]["kind"] == "logits"
    assert [entry["label"] for entry in sidecar["output"]["channels"]] == [0, 1, 2]
    metadata = {entry.key: entry.value for entry in onnx.load(str(bundled_onnx.files[0])).metadata_props}
    assert json.loads(metadata[METADATA_KEY]) == sidecar


def test_an_imported_nnunet_model_as_onnx_segments_like_the_engine(nnunet_onnx: tuple[Path, ExportResult]) -> None:
    model, result = nnunet_onnx
    _assert_reproduces(result)
    plan = read_model_card(model).preprocessing
    sidecar = json.loads(result.sidecar.read_text(encoding="utf-8"))
    preprocessing = sidecar["preprocessing"]
    assert preprocessing["kind"] == "nnunet" and preprocessing["configuration"] == "3d_fullres"
    assert [entry["scheme"] for entry in preprocessing["normalization"]] == [n.scheme for n in plan.normalization]
    assert preprocessing["resampling"] == plan.resampling_data.to_dict()
    assert sidecar["target_spacing"] == list(plan.spacing)
    assert sidecar["orientation"]["transpose_forward"] == list(plan.transpose_forward)
    assert sidecar["sliding_window"]["average"] == "logits"
    assert sidecar["sliding_window"]["mirror_axes"] == list(plan.mirror_axes)


def test_a_2d_model_with_two_channels_and_a_licence(tmp_path: Path) -> None:
    """A 2D, 2-channel network checked on the synthetic sample case; the card's licence goes into the sidecar."""
    model = save_tiny_model(tmp_path / "model", channels=("T1", "T2"), spatial_dims=2, seed=0)
    card = json.loads((model / "model.json").read_text(encoding="utf-8"))
    licence = {"spdx": "CC-BY-4.0", "text": None}
    (model / "model.json").write_text(json.dumps({**card, "licence": licence}), encoding="utf-8")
    result = export_model(model, "onnx", tmp_path / "flat.onnx", check=True)
    assert result.check is not None and result.check.passed and result.check.case == "a synthetic sample case"
    sidecar = json.loads(result.sidecar.read_text(encoding="utf-8"))
    assert sidecar["licence"] == {"spdx": "CC-BY-4.0", "text": None}
    assert sidecar["input"]["shape"] == ["batch", 2, 32, 32] and sidecar["input"]["axes"][2:] == ["y", "x"]
    assert [channel["name"] for channel in sidecar["channels"]] == ["T1", "T2"]
    assert [entry["channel"] for entry in sidecar["preprocessing"]["normalization"]] == ["T1", "T2"]


@pytest.mark.skipif(openvino_version() is None, reason="OpenVINO is not installed")
def test_the_bundled_model_as_openvino_ir_is_checked_in_openvino(tmp_path: Path) -> None:
    result = export_model(BUNDLED, "openvino", tmp_path / "ir", check=True)  # on the synthetic sample case
    assert result.check is not None and result.check.passed and result.check.runtime.startswith("OpenVINO")
    assert sorted(p.name for p in (tmp_path / "ir").iterdir()) == ["network.bin", "network.medsegcnn.json",
                                                                   "network.xml"]  # fmt: skip
    sidecar = json.loads(result.sidecar.read_text(encoding="utf-8"))
    assert sidecar["input"]["shape"] == [1, 1, 40, 56, 40] and sidecar["input"]["dynamic_axes"] == {}


def test_an_existing_output_is_refused_without_overwrite(bundled_onnx: ExportResult, tmp_path: Path) -> None:
    network = bundled_onnx.files[0]
    before = {path: path.read_bytes() for path in network.parent.iterdir()}
    result = medsegcnn("export", BUNDLED, "--format", "onnx", "--output", network)
    assert_clean_failure(result, "already exists")
    assert {path: path.read_bytes() for path in network.parent.iterdir()} == before
    (tmp_path / "other.medsegcnn.json").write_text("{}")  # an existing sidecar alone counts too
    with pytest.raises(OutputExistsError, match=r"other\.medsegcnn\.json already exists; .* --overwrite"):
        export_model(BUNDLED, "onnx", tmp_path / "other.onnx")
    assert [p.name for p in tmp_path.iterdir()] == ["other.medsegcnn.json"]


def test_bad_formats_and_names_are_refused(tmp_path: Path) -> None:
    result = medsegcnn("export", BUNDLED, "--format", "tflite", "--output", tmp_path / "model.tflite")
    assert_clean_failure(result, "invalid choice: 'tflite'", status=2)
    with pytest.raises(InputError, match="Unknown export format 'tflite'; choose one of onnx, openvino"):
        export_model(BUNDLED, "tflite", tmp_path / "model.tflite")
    with pytest.raises(InputError, match=r"one \.onnx file; give --output model\.onnx"):
        export_model(BUNDLED, "onnx", tmp_path / "model")
    with pytest.raises(InputError, match="holds the model"):
        export_model(BUNDLED, "openvino", BUNDLED.parent, overwrite=True)
    assert list(tmp_path.iterdir()) == []


def test_a_network_that_differs_fails_the_check_and_nothing_is_written(
    bundled_onnx: ExportResult, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An exported network whose labels 1 and 2 are exchanged: the check fails with one line, nothing is written."""

    class Swapped(OnnxRuntimeNetwork):
        def __call__(self, windows: torch.Tensor) -> torch.Tensor:
            return super().__call__(windows)[:, [0, 2, 1]]

    proto = onnx.load(str(bundled_onnx.files[0]))
    monkeypatch.setattr(exporter, "_onnx_model", lambda network, shape: proto)  # the export made once already
    monkeypatch.setattr(exporter, "OnnxRuntimeNetwork", Swapped)
    with pytest.raises(CheckError, match=r"differ from the engine's by up to .*; nothing was written"):
        export_model(BUNDLED, "onnx", tmp_path / "swapped.onnx", check=True, check_image_files=CASES[0])
    assert list(tmp_path.iterdir()) == []
