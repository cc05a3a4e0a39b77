"""Argument lists for background runs parse with the real command line parser; the Slicer interpreter is found."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from MedSegCNNLib.cli.main import build_parser
from MedSegCNNLib.errors import InputError
from MedSegCNNLib.inference.options import PredictOptions
from MedSegCNNLib.jobs import predict_args, python_executable, train_args
from MedSegCNNLib.jobs.commands import PYTHON_SLICER
from MedSegCNNLib.training.arguments import build_config
from MedSegCNNLib.training.config import TrainingConfig


def _parse(args: list[str]):
    return build_parser().parse_args(args)


def test_predict_args_parse_with_the_cli_parser(tmp_path):
    args = predict_args(
        [tmp_path / "fold0", "-odd"], tmp_path / "in.nii.gz", "out.seg.nrrd", PredictOptions(device="cpu", tta=True,
        uncertainty=True, keep_largest=True, min_size_mm3=12.5, fill_holes=True), overwrite=True,
    )  # fmt: skip
    assert args[-2:] == ["--progress", "json"]
    parsed = _parse(args)
    assert parsed.command == "predict" and parsed.model == [str(tmp_path / "fold0"), f".{os.sep}-odd"]
    assert (parsed.input, parsed.output, parsed.device) == ([str(tmp_path / "in.nii.gz")], "out.seg.nrrd", "cpu")
    assert parsed.tta and parsed.uncertainty and parsed.keep_largest and parsed.fill_holes and parsed.overwrite
    assert not parsed.probabilities and parsed.min_size == 12.5 and parsed.progress == "json"
    defaults = _parse(predict_args("model", "in.nii.gz", "out.nii.gz"))
    assert defaults.model == ["model"] and not defaults.tta and defaults.min_size == 0.0 and defaults.device == "auto"
    channels = _parse(predict_args("model", ["case_0000.png", tmp_path / "-case_0001.png"], "out/"))
    assert channels.input == ["case_0000.png", str(tmp_path / "-case_0001.png")]


def test_predict_args_refuse_bad_options():
    for options, fragment in (({"device": "gpu"}, "Unknown device"), ({"min_size_mm3": -1.0}, ">= 0")):
        with pytest.raises(InputError, match=fragment):
            predict_args("model", "in.nii.gz", "out.nii.gz", PredictOptions(**options))
    with pytest.raises(InputError, match="No model"):
        predict_args([], "in.nii.gz", "out.nii.gz")
    with pytest.raises(InputError, match="No input"):
        predict_args("model", [], "out.nii.gz")


def test_train_args_parse_with_the_cli_parser(tmp_path):
    config = TrainingConfig(
        spatial_dims=2, epochs=3, time_budget_minutes=1.5, init_from="base", freeze_encoder=True, device="cpu",
        patch_size=(16, 32), steps_per_epoch=4, compile=True, fold=None,
    )  # fmt: skip
    args = train_args(tmp_path / "data", tmp_path / "run", config, overwrite=True)
    parsed = _parse(args)
    assert (parsed.command, parsed.data, parsed.output) == ("train", str(tmp_path / "data"), str(tmp_path / "run"))
    assert (parsed.dims, parsed.epochs, parsed.time_budget, parsed.init_from) == (2, 3, 1.5, "base")
    assert parsed.freeze_encoder and parsed.overwrite and not parsed.resume and parsed.device == "cpu"
    assert parsed.patch_size == (16, 32) and parsed.steps_per_epoch == 4 and parsed.compile and parsed.fold == "all"
    assert parsed.network is None and parsed.progress == "json"
    assert build_config(parsed) == config  # the CLI rebuilds exactly the config the task was given
    resumed = _parse(train_args("data", "run", resume=True))
    assert resumed.resume and resumed.epochs is None and resumed.device is None


def test_train_args_carry_fields_without_an_option_as_json():
    config = TrainingConfig(network={"name": "unet", "features": [4, 8, 16]}, weight_decay=0.5, batch_size=1)
    parsed = _parse(train_args("data", "run", config))
    assert parsed.batch_size == 1 and json.loads(parsed.config_json) == {
        "network": {"name": "unet", "features": [4, 8, 16]},
        "weight_decay": 0.5,
    }
    assert build_config(parsed) == config


def test_train_args_refuse_bad_options():
    bad = [
        (lambda: TrainingConfig(spatial_dims=4), "spatial_dims"),
        (lambda: TrainingConfig(epochs=0), "epochs"),
        (lambda: TrainingConfig(time_budget_minutes=-2), "time_budget_minutes"),
        (lambda: TrainingConfig(device="tpu"), "device must be one of"),
        (lambda: train_args("data", "run", TrainingConfig(freeze_encoder=True)), "init_from"),
        (lambda: train_args("data", "run", overwrite=True, resume=True), "not both"),
    ]
    for make, fragment in bad:
        with pytest.raises(InputError, match=fragment):
            make()


def _executable(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("")
    return path


@pytest.mark.parametrize(
    ("running", "launcher"),
    [
        ("Slicer-5.8/bin/SlicerApp-real", "Slicer-5.8/bin/" + PYTHON_SLICER),  # Linux/Windows application
        ("Slicer-5.8/bin/python-real", "Slicer-5.8/bin/" + PYTHON_SLICER),  # the bare interpreter
        ("Slicer-5.8/Slicer", "Slicer-5.8/bin/" + PYTHON_SLICER),  # the top-level launcher
        ("Slicer.app/Contents/MacOS/Slicer", "Slicer.app/Contents/bin/" + PYTHON_SLICER),  # macOS
    ],
)
def test_python_executable_finds_pythonslicer_inside_slicer(tmp_path, monkeypatch, running, launcher):
    monkeypatch.setattr(sys, "executable", str(_executable(tmp_path / running)))
    expected = _executable(tmp_path / launcher)
    assert python_executable() == str(expected)


def test_python_executable_outside_slicer(tmp_path, monkeypatch):
    assert python_executable() == sys.executable
    python = _executable(tmp_path / "venv" / "bin" / "python3")
    monkeypatch.setattr(sys, "executable", str(python))
    elsewhere = _executable(tmp_path / "other" / PYTHON_SLICER)
    elsewhere.chmod(0o755)
    monkeypatch.setenv("PATH", str(elsewhere.parent))
    assert python_executable() == str(python)  # a plain Python never switches to a PythonSlicer on PATH
    app = _executable(tmp_path / "Slicer-5.8" / "bin" / "SlicerApp-real")
    monkeypatch.setattr(sys, "executable", str(app))
    assert python_executable() == str(elsewhere)  # ... but the Slicer application without one beside it does
