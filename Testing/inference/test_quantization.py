"""int8 models: ``medsegcnn quantize`` writes a keyed int8 version into the model folder, prediction uses it through
OpenVINO, and every way of asking for int8 without one is a clear error."""

from __future__ import annotations

import importlib.util
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_support import SAMPLE, assert_clean_failure, medsegcnn
from model_support import save_tiny_model

from MedSegCNNLib.data.dataset import load_case
from MedSegCNNLib.data.preprocessing import preprocess_case
from MedSegCNNLib.errors import InputError
from MedSegCNNLib.inference.engine import engine_for
from MedSegCNNLib.inference.model import load_segmentation_model
from MedSegCNNLib.inference.openvino_backend import INT8_FOLDER, INT8_RECORD, compile_model, int8_model
from MedSegCNNLib.inference.options import PredictOptions
from MedSegCNNLib.inference.quantization import _calibration_cases, _calibration_windows, quantize_model
from MedSegCNNLib.inference.segment import segment
from MedSegCNNLib.runtime import openvino_version

pytestmark = pytest.mark.skipif(
    openvino_version() is None or importlib.util.find_spec("nncf") is None,
    reason='OpenVINO and NNCF are not installed (pip install ".[int8]")',
)

CALIBRATION = SAMPLE / "imagesTr"


def _first_sample() -> Path:
    return sorted(CALIBRATION.iterdir())[0]


@pytest.fixture(scope="module")
def quantized(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = save_tiny_model(tmp_path_factory.mktemp("int8") / "tiny")
    quantize_model(folder, CALIBRATION, cases=3, cache_folder=folder.parent / "cache")
    return folder


def test_quantize_writes_a_keyed_int8_version(quantized: Path) -> None:
    files = {path.name for path in (quantized / INT8_FOLDER).iterdir()}
    assert files == {"network.xml", "network.bin", INT8_RECORD}
    record = json.loads((quantized / INT8_FOLDER / INT8_RECORD).read_text())
    assert record["input_shape"] == [1, 1, 16, 16, 16]
    assert len(record["calibration"]) == 3 and record["windows"] >= 3
    assert len(record["weights_sha256"]) == 64
    check = record["check"]  # int8 against fp32 on the calibration cases
    assert set(check["min_dice"]) == {"1", "2"} and all(0.0 <= d <= 1.0 for d in check["min_dice"].values())
    assert check["accepted"] == all(d >= check["required"] for d in check["min_dice"].values())


def test_an_int8_version_that_failed_its_check_is_not_used(
    quantized: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    failed = _with_check(quantized, tmp_path / "failed", accepted=False)
    model = load_segmentation_model(failed, torch.device("cpu"))
    with caplog.at_level(logging.WARNING, logger="MedSegCNNLib"):
        engine = engine_for(model, "openvino", "int8", batch=2, cache_folder=tmp_path / "cache")
    assert engine.precision == "fp32" and engine.backend == "openvino"
    assert "predicting at fp32 instead" in caplog.text


def test_the_int8_network_computes_what_the_fp32_one_does(quantized: Path, tmp_path: Path) -> None:
    model = load_segmentation_model(quantized, torch.device("cpu"))
    network = compile_model(int8_model(quantized, model.networks[0], (1, 1, 16, 16, 16)).model, "int8")
    (source,) = _calibration_cases(CALIBRATION, 1)  # windows like those it was calibrated on, of a case it saw
    case = preprocess_case(load_case(source)[0], None, model.plan, name=source.name)
    windows = torch.from_numpy(np.concatenate(_calibration_windows([case], (1, 1, 16, 16, 16))[:4]))
    with torch.inference_mode():
        expected = model.networks[0](windows.contiguous(memory_format=torch.channels_last_3d))
    got = network(windows)
    relative = ((got - expected).norm() / expected.norm()).item()
    assert relative < 0.25  # int8 rounding of an untrained network; another network's logits differ by ~1


def _with_check(folder: Path, destination: Path, accepted: bool) -> Path:
    """A copy of the model ``folder`` whose int8 record says its calibration check passed (or failed)."""
    shutil.copytree(folder, destination)
    record_path = destination / INT8_FOLDER / INT8_RECORD
    record = json.loads(record_path.read_text())
    min_dice = {"1": 0.995, "2": 0.999} if accepted else {"1": 0.5, "2": 0.97}
    record["check"] = {**record["check"], "min_dice": min_dice, "accepted": accepted}
    record_path.write_text(json.dumps(record))
    return destination


def test_int8_prediction_goes_through_the_accuracy_gate(quantized: Path, tmp_path: Path) -> None:
    passed = _with_check(quantized, tmp_path / "passed", accepted=True)
    options = PredictOptions(backend="openvino", precision="int8", cache_dir=str(tmp_path / "cache"))
    result = segment(_first_sample(), passed, options)
    assert result.labels.array.ndim == 3
    entries = (tmp_path / "cache" / "precision").iterdir()
    (decision,) = [json.loads((entry / "decision.json").read_text()) for entry in entries]
    assert decision["precision"] == "int8" and set(decision["dice"]) == {"1", "2"}


def test_int8_without_an_int8_version_says_how_to_make_it(tmp_path: Path) -> None:
    folder = save_tiny_model(tmp_path / "plain")
    options = PredictOptions(backend="openvino", precision="int8", cache_dir=str(tmp_path / "cache"))
    with pytest.raises(InputError, match="has no int8 version; make it with: medsegcnn quantize"):
        segment(_first_sample(), folder, options)


def test_an_int8_version_of_other_weights_is_refused(quantized: Path, tmp_path: Path) -> None:
    model = load_segmentation_model(quantized, torch.device("cpu"))
    with torch.no_grad():  # as if the model had been retrained after its int8 version was made
        next(model.networks[0].parameters()).add_(1.0)
    with pytest.raises(InputError, match="made from other weights"):
        engine_for(model, "openvino", "int8", batch=2, cache_folder=tmp_path / "cache")


def test_int8_on_the_torch_backend_is_refused() -> None:
    with pytest.raises(InputError, match="int8 runs on the OpenVINO backend"):
        PredictOptions(backend="torch", precision="int8")


def test_quantize_without_calibration_data_is_one_clear_line(tmp_path: Path) -> None:
    folder = save_tiny_model(tmp_path / "tiny")
    result = medsegcnn("quantize", "--model", folder, "--calibration", tmp_path / "missing")
    assert_clean_failure(result, "is not a folder")
    (tmp_path / "empty").mkdir()
    result = medsegcnn("quantize", "--model", folder, "--calibration", tmp_path / "empty")
    assert_clean_failure(result, "No volumes found")
    assert not (folder / INT8_FOLDER).exists()


def test_quantize_does_not_replace_an_int8_version_unasked(quantized: Path) -> None:
    before = (quantized / INT8_FOLDER / "network.bin").read_bytes()
    result = medsegcnn("quantize", "--model", quantized, "--calibration", CALIBRATION, "--cases", "1")
    assert_clean_failure(result, "already exists")
    assert np.array_equal(
        np.frombuffer(before, np.uint8), np.frombuffer((quantized / INT8_FOLDER / "network.bin").read_bytes(), np.uint8)
    )


@pytest.mark.parametrize("damage", ['{"weights_sha256": 3}', '{"check": []}', "[1, 2]", "not json"])
def test_a_malformed_int8_record_is_refused_with_what_to_do(quantized: Path, tmp_path: Path, damage: str) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(quantized, broken)
    (broken / INT8_FOLDER / INT8_RECORD).write_text(damage)
    model = load_segmentation_model(broken, torch.device("cpu"))
    with pytest.raises(InputError, match="is unreadable; make it with: medsegcnn quantize"):
        engine_for(model, "openvino", "int8", batch=2, cache_folder=tmp_path / "cache")
