"""PredictOptions: validation, output names, and the command line it writes, reads and declares."""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from MedSegCNNLib.cli.main import build_parser
from MedSegCNNLib.errors import InputError
from MedSegCNNLib.inference.options import PredictOptions

ROOT = Path(__file__).resolve().parents[2]
CHANGED = PredictOptions(
    device="cpu", precision="bf16", tta=True, probabilities=True, uncertainty=True, overlay=True,
    keep_largest=True, min_size_mm3=12.5, fill_holes=True, output_format=".seg.nrrd",
)  # fmt: skip


def _predict_parser() -> argparse.ArgumentParser:
    commands = next(action for action in build_parser()._actions if isinstance(action, argparse._SubParsersAction))
    return commands.choices["predict"]


def _parse(options: PredictOptions) -> argparse.Namespace:
    return build_parser().parse_args(["predict", "--model", "m", "--input", "i.nii.gz", "--output", "o.nii.gz",
                                      *options.to_argv()])  # fmt: skip


@pytest.mark.parametrize("options", [PredictOptions(), CHANGED, PredictOptions(min_size_mm3=3, uncertainty=True)])
def test_options_survive_the_command_line(options):
    assert PredictOptions.from_args(_parse(options)) == options


def test_only_changed_options_are_written():
    assert PredictOptions().to_argv() == []
    assert PredictOptions(device="cuda", min_size_mm3=2).to_argv() == ["--device", "cuda", "--min-size", "2.0"]


def test_the_predict_parser_declares_each_field_once_with_its_default():
    actions = {action.dest: action for action in _predict_parser()._actions}
    for option in dataclasses.fields(PredictOptions):
        action = actions[option.metadata["flag"].lstrip("-").replace("-", "_")]
        assert action.option_strings == [option.metadata["flag"]]
        assert action.default == option.default
        assert action.choices == option.metadata["choices"] or isinstance(option.default, bool)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"device": "gpu"}, "Unknown device 'gpu'"),
        ({"device": "cuda:1"}, "Unknown device"),
        ({"precision": "int4"}, "Unknown precision"),
        ({"backend": "onnx"}, "Unknown backend"),
        ({"backend": "torch", "precision": "int8"}, "int8 runs on the OpenVINO backend"),
        ({"cache_dir": 3}, "cache_dir must be a folder name"),
        ({"tta": "yes"}, "tta must be True or False"),
        ({"min_size_mm3": -1.0}, ">= 0"),
        ({"min_size_mm3": float("nan")}, ">= 0"),
        ({"min_size_mm3": True}, ">= 0"),
        ({"output_format": ".gif"}, "Unknown output format"),
        ({"output_format": ".jpg"}, "JPEG is lossy"),
    ],
)
def test_bad_options_are_refused(values, message):
    with pytest.raises(InputError, match=message):
        PredictOptions(**values)


def test_output_names():
    assert PredictOptions().output_paths(Path("out/case.seg.nrrd")) == {"labels": Path("out/case.seg.nrrd")}
    assert CHANGED.output_paths(Path("out/case.seg.nrrd")) == {
        "labels": Path("out/case.seg.nrrd"),
        "probabilities": Path("out/case_probabilities.nii.gz"),
        "uncertainty": Path("out/case_uncertainty.nii.gz"),
        "overlay": Path("out/case_overlay.png"),
    }
    only = PredictOptions(uncertainty=True).output_paths(Path("a.b.nii.gz"))
    assert list(only.values()) == [Path("a.b.nii.gz"), Path("a.b_uncertainty.nii.gz")]


def test_label_maps_in_a_folder_take_the_input_format_of_pictures():
    auto = PredictOptions()
    assert auto.label_extension(Path("in/a.nii.gz")) == ".nii.gz"
    assert auto.label_extension(Path("in/a.PNG")) == ".png"
    assert auto.label_extension(Path("in/a.tiff")) == ".tiff"
    assert auto.label_extension(Path("in/a.jpg")) == ".png"  # JPEG is lossy
    assert auto.label_extension(Path("in/a.tif"), stack=True) == ".nii.gz"  # a 3D stack of pages
    assert PredictOptions(output_format=".seg.nrrd").label_extension(Path("in/a.png")) == ".seg.nrrd"


def test_postprocessing_follows_the_options():
    assert not PredictOptions().postprocessing.active
    config = CHANGED.postprocessing
    assert (config.keep_largest, config.min_size_mm3, config.fill_holes) == (True, 12.5, True)


def test_reading_the_options_does_not_import_torch():
    code = (
        "import sys; from MedSegCNNLib.inference.options import PredictOptions; "
        "from MedSegCNNLib.jobs.commands import predict_args; predict_args('m', 'i', 'o', PredictOptions()); "
        "print('torch' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
